"""Z-stacks in the daemon's pipeline: planes grouped per position, fused, converted once; the
height map follows its tile; incomplete stacks counted by reason; every plane accounted for."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile
from helpers import ListSink, assert_accounted, fake_converter, wait_for

from edge.protocol import decode_message, decode_tile, encode_scan_end, encode_tile
from edge.serve.metrics import EdgeMetrics
from edge.serve.pipeline import Pipeline, PipelineSettings
from edge.serve.stacks import StackBook, StackSettings
from edge.tools.consume import Consumer

pytestmark = pytest.mark.timeout(60)
SHAPE = (48, 64)


def plane(scan_id: str, seq: int, row: int, col: int, z_nm: float | None, size: int | None = 3,
          seed: int = 0) -> list[bytes]:
    header = {"scan_id": scan_id, "seq": seq, "row": row, "col": col, "x_nm": 500.0 * col,
              "y_nm": 500.0 * row, "pixel_size_nm": 10.0, "t_capture": 1.0, "extra": seq}
    if z_nm is not None:
        header["z_nm"] = z_nm
    if size is not None:
        header["stack_size"] = size
    rng = np.random.default_rng([seed, seq])
    return encode_tile(header, rng.integers(0, 65536, SHAPE).astype(np.uint16))


def stacked_scan(scan_id: str, positions: int, planes: int) -> list[list[bytes]]:
    return [plane(scan_id, p * planes + k, 0, p, 200.0 * k, planes)
            for p in range(positions) for k in range(planes)]


class FramesSink(ListSink):
    """Keeps the raw frames too."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> None:
        self.frames.append(list(frames))
        super().send(frames)


def start(**settings) -> tuple[Pipeline, FramesSink, EdgeMetrics]:
    sink, metrics = FramesSink(), EdgeMetrics()
    pipeline = Pipeline(fake_converter(32), lambda: sink, metrics, PipelineSettings(**settings))
    pipeline.start()
    return pipeline, sink, metrics


def finish(pipeline: Pipeline, metrics: EdgeMetrics) -> None:
    assert pipeline.close(drain=True, timeout_s=30)
    assert_accounted(metrics)


def test_the_book_closes_a_stack_when_its_planes_are_in_or_it_waited_too_long():
    book = StackBook(StackSettings(timeout_s=5.0))
    tiles = [decode_tile(frames) for frames in stacked_scan("s", 2, 3)]
    assert [book.size_of(t) for t in tiles[:2]] == [3, 3]
    assert book.add(tiles[0], 0.0) == [] and book.add(tiles[3], 1.0) == []
    assert book.add(tiles[1], 2.0) == [] and book.held == 3 and len(book) == 2
    (complete,) = book.add(tiles[2], 3.0)
    assert complete.incomplete == "" and [p.seq for p in complete.planes] == [0, 1, 2]
    assert book.expire(5.9) == []
    (late,) = book.expire(6.0)
    assert late.incomplete == "timeout" and late.key == ("s", 0, 1) and book.held == 0


def test_the_stack_size_comes_from_the_header_or_the_configuration():
    lone = decode_tile(plane("s", 0, 0, 0, 10.0, size=None))
    flat = decode_tile(plane("s", 0, 0, 0, None, size=None))
    assert StackBook(StackSettings()).size_of(lone) == 0
    assert StackBook(StackSettings(size=4)).size_of(lone) == 4
    assert StackBook(StackSettings(size=4)).size_of(flat) == 0  # no z_nm: not a plane


def test_too_many_held_planes_evict_the_oldest_stack():
    book = StackBook(StackSettings(max_planes=4))
    tiles = [decode_tile(frames) for frames in stacked_scan("s", 3, 3)]
    closed = [s for t in (tiles[0], tiles[1], tiles[3], tiles[4], tiles[6]) for s in book.add(t, 0.0)]
    assert [(s.key, s.incomplete, len(s.planes)) for s in closed] == [(("s", 0, 0), "evicted", 2)]


def test_each_stack_is_fused_converted_once_and_followed_by_its_height_map():
    pipeline, sink, metrics = start()
    for frames in stacked_scan("s", 2, 3) + [encode_scan_end("s", {"n_tiles": 6})]:
        pipeline.submit(frames)
    finish(pipeline, metrics)
    assert [m.kind for m in sink.messages] == ["sem", "height", "sem", "height", "scan-end"]
    sem, height = sink.messages[0], sink.messages[1]
    assert sem.header["seq"] == 0 and "z_nm" not in sem.header and sem.header["extra"] == 0
    assert sem.header["stack"] | {"collect_ms": 0} == {
        "planes": 3, "size": 3, "complete": True, "z_nm": [0.0, 200.0, 400.0], "seq": [0, 1, 2],
        "collect_ms": 0}
    assert sem.image.shape == SHAPE and sem.image.dtype == np.uint16
    assert height.image.dtype == np.float32 and height.image.shape == SHAPE
    assert height.header["unit"] == "nm" and height.header["seq"] == 0
    assert set(np.unique(height.image)) <= {0.0, 200.0, 400.0}
    end = sink.messages[-1].header
    assert (end["converted"], end["stacks"], end["stacks_incomplete"]) == (6, 2, 0)
    value = metrics.counter_value
    assert value("tiles_received") == value("tiles_published") == value("tiles_converted") == 6
    assert value("stacks_fused") == 2 and value("stacks_incomplete") == 0


def test_a_stack_left_open_by_its_scan_end_is_fused_incomplete_before_it():
    pipeline, sink, metrics = start(stacks=StackSettings(height_map=False))
    for frames in stacked_scan("s", 2, 3)[:5] + [encode_scan_end("s", {"n_tiles": 6})]:
        pipeline.submit(frames)
    finish(pipeline, metrics)
    assert [m.kind for m in sink.messages] == ["sem", "sem", "scan-end"]
    assert sink.messages[1].header["stack"]["incomplete"] == "scan_end"
    assert sink.messages[1].header["stack"]["planes"] == 2
    assert sink.messages[-1].header["stacks_incomplete"] == 1
    assert metrics.counter_value("stacks_incomplete", reason="scan_end") == 1
    assert metrics.counter_value("tiles_published") == 5


def test_a_stack_whose_planes_stop_coming_times_out():
    pipeline, sink, metrics = start(stacks=StackSettings(timeout_s=0.2))
    for frames in stacked_scan("s", 1, 3)[:2]:
        pipeline.submit(frames)
    assert pipeline.in_flight == 2 and not sink.messages
    time.sleep(0.25)
    pipeline.tick()
    wait_for(lambda: sink.kinds("sem"), 10, "the timed-out stack")
    assert metrics.counter_value("stacks_incomplete", reason="timeout") == 1
    finish(pipeline, metrics)


def test_tiles_without_stack_fields_are_converted_one_by_one_beside_stacks():
    pipeline, sink, metrics = start()
    pipeline.submit(plane("s", 0, 0, 0, 120.0, size=None))  # z_nm alone: a single frame
    pipeline.submit(plane("s", 1, 0, 1, 120.0, size=1))
    for frames in stacked_scan("t", 1, 2):
        pipeline.submit(frames)
    finish(pipeline, metrics)
    assert [(m.kind, m.scan_id) for m in sink.messages] == [
        ("sem", "s"), ("sem", "s"), ("sem", "t"), ("height", "t")]
    assert "stack" not in sink.messages[0].header and sink.messages[0].header["z_nm"] == 120.0


def test_planes_held_at_an_aborted_stop_are_shutdown_drops():
    pipeline, _, metrics = start()
    for frames in stacked_scan("s", 1, 3)[:2]:
        pipeline.submit(frames)
    pipeline.close(drain=False, timeout_s=10)
    assert metrics.counter_value("tiles_dropped", reason="shutdown") == 2
    assert metrics.counter_value("stacks_incomplete", reason="shutdown") == 1
    assert_accounted(metrics)


def test_bad_stack_fields_are_rejected_as_bad_fields():
    pipeline, sink, metrics = start()
    pipeline.submit(plane("s", 0, 0, 0, 10.0, size=0))
    pipeline.submit(plane("s", 1, 0, 0, "high", size=3))  # type: ignore[arg-type]
    pipeline.submit(plane("s", 2, 0, 0, None, size=3))  # no z_nm: a tile of its own
    finish(pipeline, metrics)
    assert metrics.counter_value("tiles_rejected", reason="bad_field") == 2
    assert [m.kind for m in sink.messages] == ["error", "error", "sem"]


def test_a_height_message_decodes_and_the_reference_client_saves_it(tmp_path):
    pipeline, sink, metrics = start()
    for message in stacked_scan("s", 1, 3) + [encode_scan_end("s", {"n_tiles": 3})]:
        pipeline.submit(message)
    finish(pipeline, metrics)
    frames = sink.frames
    assert [f[0] for f in frames] == [b"sem/s", b"height/s", b"scan-end/s"]
    assert all(len(f) == 3 for f in frames)  # v1 framing: old clients read every message
    height = decode_message(frames[1])
    assert height.kind == "height" and height.image is not None
    consumer = Consumer(tmp_path, mosaic=False, refine=False)
    for f in frames:
        consumer.handle(f)
    summary = consumer.result.summaries["s"]
    assert summary["tiles"] == 1 and summary["missing_tiles"] == 0 and summary["height_maps"] == 1
    saved = tifffile.imread(tmp_path / "s" / "heights" / "r000_c000.tif")
    np.testing.assert_array_equal(saved, height.image)
