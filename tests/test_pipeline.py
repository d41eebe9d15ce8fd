"""The pipeline without sockets: a list sink, the fake converter of tests/helpers.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import (
    FAKE_LABEL,
    ListSink,
    assert_accounted,
    fake_converter,
    fake_offline,
    wait_for,
)

from edge.inference.converter import Converter
from edge.protocol import ErrorCode, encode_scan_end, encode_tile
from edge.serve.metrics import EdgeMetrics
from edge.serve.pipeline import Pipeline, PipelineSettings

pytestmark = pytest.mark.timeout(60)


def tile_frames(scan_id: str, seq: int, image: np.ndarray) -> list[bytes]:
    header = {"scan_id": scan_id, "seq": seq, "row": 0, "col": seq, "x_nm": 100.0 * seq,
              "y_nm": 0.0, "pixel_size_nm": 10.0, "t_capture": 1.0, "extra": {"kept": seq}}
    return encode_tile(header, image)


def images(n: int, shape=(40, 72), dtype=np.uint8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    high = 256 if dtype == np.uint8 else 65536
    return [rng.integers(0, high, shape).astype(dtype) for _ in range(n)]


def counter(metrics: EdgeMetrics, name: str, **labels: str) -> float:
    return metrics.counter_value(name, **labels)


def run_pipeline(converter: Converter, messages: list[list[bytes]], max_batch: int | None = None,
                 **settings) -> tuple:
    """Submit every message, drain; max_batch (if given) replaces the converter's."""
    if max_batch is not None:
        converter.max_batch = max_batch
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(converter, lambda: sink, metrics, PipelineSettings(**settings))
    pipeline.start()
    for frames in messages:
        pipeline.submit(frames)
    assert pipeline.close(drain=True, timeout_s=30)
    assert_accounted(metrics)
    return sink, metrics, pipeline


def test_tiles_come_back_converted_in_arrival_order_per_scan():
    raws = images(12)
    # two scans interleaved; each tile is 2x3 patches of 32 px
    messages = [tile_frames("scan-a" if i % 2 == 0 else "scan-b", i // 2, raw)
                for i, raw in enumerate(raws)]
    sink, metrics, _ = run_pipeline(fake_converter(32), messages, max_batch=4)
    sem = sink.kinds("sem")
    assert [(m.scan_id, m.header["seq"]) for m in sem] == \
        [("scan-a" if i % 2 == 0 else "scan-b", i // 2) for i in range(12)]
    for i, message in enumerate(sem):
        expected = np.rint(np.clip(fake_offline(raws[i]), 0, 1) * 255).astype(np.uint8)
        assert message.image.dtype == np.uint8
        np.testing.assert_array_equal(message.image, expected)
        assert message.header["extra"] == {"kept": i // 2}
        assert message.header["status"] == "ok"
        assert message.header["model"] == FAKE_LABEL
        latency = message.header["latency_ms"]
        assert set(latency) == {"preprocess", "queue", "infer", "blend", "trust", "publish",
                                "total"}
        assert latency["total"] == pytest.approx(
            sum(v for k, v in latency.items() if k != "total"), abs=0.01)
    assert counter(metrics, "tiles_received") == 12
    assert counter(metrics, "tiles_converted") == 12
    assert sink.closed


def test_batches_gather_patches_across_tiles():
    converter = fake_converter(32)
    raws = images(6, shape=(32, 32))  # one patch per tile
    messages = [tile_frames("s", i, raw) for i, raw in enumerate(raws)]
    # a long deadline: the batcher waits for patches of later tiles rather than run singles
    sink, _, _ = run_pipeline(converter, messages, max_batch=3, max_delay_ms=2000)
    assert converter.backend.batch_sizes == [3, 3]
    assert len(sink.kinds("sem")) == 6


def test_short_deadline_runs_partial_batches():
    converter = fake_converter(32, max_batch=64)
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(converter, lambda: sink, metrics, PipelineSettings(max_delay_ms=1.0))
    pipeline.start()
    pipeline.submit(tile_frames("s", 0, images(1, shape=(32, 32))[0]))
    deadline = time.monotonic() + 10
    while not sink.kinds("sem") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert converter.backend.batch_sizes == [1]  # did not wait for 64 patches
    pipeline.close()


def test_float32_and_uint16_tiles_keep_their_dtype():
    raw16 = images(1, dtype=np.uint16)[0]
    raw32 = (images(1, seed=1)[0] / 255.0).astype(np.float32)
    sink, _, _ = run_pipeline(fake_converter(32), [tile_frames("s", 0, raw16),
                                                   tile_frames("s", 1, raw32)])
    out16, out32 = (m.image for m in sink.kinds("sem"))
    assert out16.dtype == np.uint16 and out32.dtype == np.float32
    np.testing.assert_array_equal(
        out16, np.rint(fake_offline(raw16) * 65535).astype(np.uint16))
    np.testing.assert_allclose(out32, fake_offline(raw32), atol=1e-6)


def test_malformed_messages_are_answered_and_good_tiles_keep_flowing():
    good = images(3)
    bad_header = tile_frames("s", 1, good[0])
    bad_header[2] = bad_header[2][:-1]  # byte count
    messages = [
        tile_frames("s", 0, good[0]),
        [b"tile/s", b"{}"],  # two frames
        [b"tile/s", b"not json", b""],
        bad_header,
        tile_frames("s", 1, good[1]),
        [b"tile/s", b'{"v": 2, "scan_id": "s"}', b""],
        tile_frames("s", 2, good[2]),
    ]
    sink, metrics, _ = run_pipeline(fake_converter(32), messages)
    errors = [m.header["error"] for m in sink.kinds("error")]
    assert errors == ["bad_frames", "bad_json", "byte_count", "unsupported_version"]
    assert [m.header["seq"] for m in sink.kinds("sem")] == [0, 1, 2]
    for code in errors:
        assert counter(metrics, "tiles_rejected", reason=code) == 1
    assert counter(metrics, "tiles_received") == 7


def test_conversion_failure_is_an_error_message_and_the_pipeline_continues():
    converter = fake_converter(32, fail_above=0.9)
    dark = np.zeros((32, 32), np.uint8)
    bright = np.full((32, 32), 255, np.uint8)
    messages = [tile_frames("s", i, img) for i, img in enumerate([dark, bright, dark])]
    sink, metrics, _ = run_pipeline(converter, messages, max_batch=1)
    kinds = [(m.kind, m.header["seq"]) for m in sink.messages]
    assert kinds == [("sem", 0), ("error", 1), ("sem", 2)]  # in order of arrival
    assert sink.messages[1].header["error"] == ErrorCode.CONVERSION_FAILED.value
    assert counter(metrics, "tiles_rejected", reason="conversion_failed") == 1


def test_scan_end_follows_the_scans_last_tile_with_counts():
    raws = images(3)
    messages = [tile_frames("s", 0, raws[0]), tile_frames("s", 2, raws[1]),
                [b"tile/s", b"{}", b""], tile_frames("s", 3, raws[2]),
                encode_scan_end("s", {"n_tiles": 5})]
    sink, metrics, _ = run_pipeline(fake_converter(32), messages, detect_gaps=True)
    last = sink.messages[-1]
    assert last.kind == "scan-end"
    assert last.header["n_tiles"] == 5
    assert {k: last.header[k] for k in ("converted", "rejected", "dropped", "gaps")} == \
        {"converted": 3, "rejected": 1, "dropped": 0, "gaps": 1}
    assert counter(metrics, "sequence_gaps") == 1
    assert counter(metrics, "scans_completed") == 1
    # a valid scan-end is not a tile: the invariant holds without it
    assert counter(metrics, "tiles_received") == 4


def test_drop_oldest_counts_drops_and_keeps_the_invariant():
    converter = fake_converter(32, delay_s=0.05)
    raws = images(30, shape=(32, 32))
    sink, metrics, _ = run_pipeline(
        converter, [tile_frames("s", i, r) for i, r in enumerate(raws)],
        capacity=2, max_batch=1, overload="drop-oldest")
    dropped = counter(metrics, "tiles_dropped", reason="queue_full")
    converted = counter(metrics, "tiles_converted")
    assert dropped > 0
    assert converted + dropped == counter(metrics, "tiles_received") == 30
    seqs = [m.header["seq"] for m in sink.kinds("sem")]
    assert seqs == sorted(seqs) and seqs[-1] == 29  # the newest tiles survive


def test_block_policy_loses_nothing():
    converter = fake_converter(32, delay_s=0.01)
    raws = images(20, shape=(32, 32))
    sink, metrics, _ = run_pipeline(
        converter, [tile_frames("s", i, r) for i, r in enumerate(raws)],
        capacity=1, max_batch=1, overload="block")
    assert [m.header["seq"] for m in sink.kinds("sem")] == list(range(20))
    assert counter(metrics, "tiles_dropped") == 0


def test_abort_counts_what_was_in_flight_as_shutdown_drops():
    converter = fake_converter(32, delay_s=0.05, max_batch=1)
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(converter, lambda: sink, metrics, PipelineSettings())
    pipeline.start()
    for i, raw in enumerate(images(10, shape=(32, 32))):
        pipeline.submit(tile_frames("s", i, raw))
    assert pipeline.close(drain=False, timeout_s=10)
    converted = counter(metrics, "tiles_converted")
    shutdown = counter(metrics, "tiles_dropped", reason="shutdown")
    assert shutdown > 0
    assert converted + shutdown == 10 == len(sink.kinds("sem")) + shutdown
    assert pipeline.in_flight == 0


class Tagger:
    """An observer that answers every tile with a message of its own and fails once."""

    def __init__(self) -> None:
        self.calls = 0

    def converted(self, header: dict, image: np.ndarray, raw: np.ndarray) -> list[list[bytes]]:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("an observer bug")
        return [encode_scan_end(header["scan_id"], {"note": f"after {header['seq']}"})]

    def scan_end(self, scan_id: str, summary: dict) -> list[list[bytes]]:
        return [encode_scan_end(scan_id, {"note": f"before the end, {summary['converted']}"})]


def test_observers_publish_after_their_tile_and_before_the_scan_end():
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(fake_converter(32), lambda: sink, metrics, PipelineSettings(),
                        observers=[Tagger()])
    pipeline.start()
    raws = images(3)
    for seq, raw in enumerate(raws):
        pipeline.submit(tile_frames("s", seq, raw))
    pipeline.submit(encode_scan_end("s", {"n_tiles": 3}))
    assert pipeline.close(drain=True, timeout_s=10)
    seen = [(m.kind, m.header.get("seq", m.header.get("note"))) for m in sink.messages]
    assert seen == [("sem", 0), ("scan-end", "after 0"), ("sem", 1), ("sem", 2),
                    ("scan-end", "after 2"), ("scan-end", "before the end, 3"),
                    ("scan-end", None)]
    assert_accounted(metrics)


def test_a_swap_switches_models_between_tiles_and_closes_the_old_one_when_it_is_done():
    old = fake_converter(32, delay_s=0.02, max_batch=4, name="old")
    new = fake_converter(32, max_batch=4, name="new")
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(old, lambda: sink, metrics, PipelineSettings(max_delay_ms=50))
    pipeline.start()
    raws = images(12, shape=(32, 64))  # 2 patches a tile: batches would span tiles
    for seq, raw in enumerate(raws[:6]):
        pipeline.submit(tile_frames("s", seq, raw))
    time.sleep(0.05)
    assert pipeline.swap(new) is old
    for seq, raw in enumerate(raws[6:], start=6):
        pipeline.submit(tile_frames("s", seq, raw))
    assert pipeline.close(drain=True, timeout_s=10)
    models = [m.header["model"].split("@")[0] for m in sink.kinds("sem")]
    assert [m.header["seq"] for m in sink.kinds("sem")] == list(range(12))
    first_new = models.index("new")
    assert models == ["old"] * first_new + ["new"] * (12 - first_new) and 0 < first_new <= 6
    patches_by_old = sum(old.backend.batch_sizes)
    assert patches_by_old == 2 * first_new and sum(new.backend.batch_sizes) == 24 - patches_by_old
    for message, raw in zip(sink.kinds("sem"), raws, strict=True):
        expected = np.rint(np.clip(fake_offline(raw), 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(message.image, expected)
    assert old.backend.closed and not new.backend.closed
    assert_accounted(metrics)


def test_tiles_of_different_sizes_never_share_a_batch():
    class ShapeTiler:
        """One patch per tile, of the tile's own size (as the planner's fit mode)."""

        def split(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
            return image[None, None].astype(np.float32), image.shape

        def merge(self, outputs: np.ndarray, plan: tuple[int, int]) -> np.ndarray:
            return outputs[0, 0]

    converter = fake_converter(max_batch=8)
    converter.tiler = ShapeTiler()
    shapes = [(32, 32), (32, 32), (48, 32), (48, 32), (32, 32)]
    rng = np.random.default_rng(0)
    raws = [rng.integers(0, 256, s).astype(np.uint8) for s in shapes]
    sink, _, _ = run_pipeline(converter, [tile_frames("s", i, r) for i, r in enumerate(raws)],
                              max_delay_ms=500)
    assert [m.image.shape for m in sink.kinds("sem")] == shapes
    assert converter.backend.batch_sizes == [2, 2, 1]


def test_a_tile_that_comes_alone_does_not_wait_for_a_batch_to_fill():
    """At the rig's rate nothing else is on its way: the batcher's deadline would only add
    latency, so a lone tile runs at once however long `max_delay_ms` is."""
    converter = fake_converter(32, max_batch=64)
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(converter, lambda: sink, metrics, PipelineSettings(max_delay_ms=600_000))
    pipeline.start()
    pipeline.submit(tile_frames("s", 0, images(1, shape=(32, 32))[0]))
    wait_for(lambda: sink.kinds("sem"), 30, "the lone tile")
    assert converter.backend.batch_sizes == [1]
    pipeline.close()
