"""Hostile and broken input: each class of message that once killed a pipeline thread is
answered and counted, and the pipeline goes on converting; intake never waits on an error
answer; every queue and per-scan table stays bounded."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
from helpers import ListSink, assert_accounted, fake_converter, tile_header

from edge.protocol import (
    MAX_HEADER_BYTES,
    ErrorCode,
    ProtocolError,
    decode_message,
    decode_scan_end,
    decode_tile,
    encode_error,
    encode_scan_end,
    encode_tile,
)
from edge.serve.metrics import EdgeMetrics
from edge.serve.pipeline import Pipeline, PipelineSettings, SinkClosed
from edge.serve.ratelog import RateLimitedLog
from edge.serve.scans import ScanBook

pytestmark = pytest.mark.timeout(60)
RAW = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)


def good(seq: int = 0, scan_id: str = "s") -> list[bytes]:
    return encode_tile(tile_header(scan_id, seq), RAW)


def with_header(text: str, topic: bytes = b"tile/s", pixels: bytes = RAW.tobytes()) -> list:
    return [topic, text.encode("utf-8", "surrogatepass"), pixels]


def header_text(**changes: object) -> str:
    header = {"v": 1, **tile_header("s", 0), "width": 32, "height": 32, "dtype": "uint16"}
    body = json.dumps({**header, **{k: v for k, v in changes.items() if k != "_raw"}})
    return body


HOSTILE = {
    "nested JSON": (with_header("[" * 3000 + "]" * 3000), ErrorCode.BAD_JSON),
    "nested in a field": (with_header(header_text()[:-1] + ', "x": ' + "[" * 3000 + "]" * 3000
                                      + "}"), ErrorCode.BAD_JSON),
    "400-digit integer in x_nm": (with_header(header_text().replace('"x_nm": 0.0',
                                                                      '"x_nm": ' + "9" * 400)),
                                  ErrorCode.BAD_FIELD),
    "1e400 in x_nm": (with_header(header_text().replace('"x_nm": 0.0', '"x_nm": 1e400')),
                      ErrorCode.BAD_JSON),
    "1e400 in a passed-through field": (with_header(header_text()[:-1] + ', "z": 1e400}'),
                                        ErrorCode.BAD_JSON),
    "lone surrogate in scan_id": (with_header(header_text(scan_id="a\ud800b")),
                                  ErrorCode.BAD_FIELD),
    "lone surrogate in the topic": ([b"tile/a\xed\xa0\x80", header_text().encode(),
                                     RAW.tobytes()], ErrorCode.BAD_TOPIC),
    "C1 control in scan_id": (with_header(header_text(scan_id="a\x9fb"), b"tile/a\xc2\x9fb"),
                              ErrorCode.BAD_FIELD),
    "seq 10**400": (with_header(header_text().replace('"seq": 0', '"seq": 1' + "0" * 400)),
                    ErrorCode.BAD_FIELD),
    "seq 2**63": (with_header(header_text(seq=2**63)), ErrorCode.BAD_FIELD),
    "header over 1 MiB": (with_header(header_text()[:-1] + ', "pad": "'
                                      + "x" * MAX_HEADER_BYTES + '"}'), ErrorCode.OVERSIZE),
    "topic over the cap": ([b"tile/" + b"x" * 5000, header_text().encode(), RAW.tobytes()],
                           ErrorCode.BAD_TOPIC),
}
BAD_SCAN_ENDS = {
    "empty scan id": ([b"scan-end/", b'{"v": 1, "scan_id": ""}', b""], ErrorCode.BAD_TOPIC),
    "space in scan id": ([b"scan-end/a b", b'{"v": 1, "scan_id": "a b"}', b""],
                         ErrorCode.BAD_TOPIC),
    "dot-dot": ([b"scan-end/..", b'{"v": 1, "scan_id": ".."}', b""], ErrorCode.BAD_TOPIC),
    "300 characters": ([b"scan-end/" + b"a" * 300, json.dumps({"v": 1, "scan_id": "a" * 300})
                        .encode(), b""], ErrorCode.BAD_TOPIC),
    "n_tiles 1e400": ([b"scan-end/s", b'{"v": 1, "scan_id": "s", "n_tiles": 1e400}', b""],
                      ErrorCode.BAD_JSON),
    "n_tiles a string": ([b"scan-end/s", b'{"v": 1, "scan_id": "s", "n_tiles": "9"}', b""],
                         ErrorCode.BAD_FIELD),
    "no version": ([b"scan-end/s", b'{"scan_id": "s"}', b""], ErrorCode.MISSING_FIELD),
    "pixels": ([b"scan-end/s", b'{"v": 1, "scan_id": "s"}', b"xx"], ErrorCode.BYTE_COUNT),
    "deep JSON": ([b"scan-end/s", b"[" * 3000 + b"]" * 3000, b""], ErrorCode.BAD_JSON),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_tiles_raise_only_protocol_errors_whose_answers_encode(case):
    frames, code = HOSTILE[case]
    with pytest.raises(ProtocolError) as info:
        decode_tile(frames)
    assert info.value.code == code
    answer = decode_message(encode_error(info.value.scan_id, info.value.code,
                                         info.value.message, info.value.header))
    assert answer.kind == "error" and answer.header["error"] == code.value
    assert len(answer.header["message"]) <= 1000


@pytest.mark.parametrize("case", BAD_SCAN_ENDS, ids=list(BAD_SCAN_ENDS))
def test_a_scan_end_is_validated_like_a_tile(case):
    frames, code = BAD_SCAN_ENDS[case]
    with pytest.raises(ProtocolError) as info:
        decode_scan_end(frames)
    assert info.value.code == code
    encode_error(info.value.scan_id, info.value.code, info.value.message, info.value.header)


def run_with(messages: list[list], **settings: object) -> tuple[ListSink, EdgeMetrics, Pipeline]:
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(fake_converter(32), lambda: sink, metrics, PipelineSettings(**settings))
    pipeline.start()
    for frames in messages:
        pipeline.submit(frames)
    assert pipeline.alive() and not pipeline.failed.is_set()
    assert pipeline.close(drain=True, timeout_s=30)
    assert not pipeline.failed.is_set(), pipeline.failure
    assert_accounted(metrics)
    return sink, metrics, pipeline


def test_every_hostile_message_is_answered_and_the_pipeline_goes_on_converting():
    hostile = [frames for frames, _ in [*HOSTILE.values(), *BAD_SCAN_ENDS.values()]]
    messages = [good(0), *hostile, good(1), encode_scan_end("s", {"n_tiles": 2})]
    sink, metrics, _ = run_with(messages, detect_gaps=True)
    expected = [code.value for _, code in [*HOSTILE.values(), *BAD_SCAN_ENDS.values()]]
    assert [m.header["error"] for m in sink.kinds("error")] == expected
    assert [m.header["seq"] for m in sink.kinds("sem")] == [0, 1]
    assert sink.messages[-1].kind == "scan-end" and sink.messages[-1].header["converted"] == 2
    assert metrics.counter_value("sequence_gaps") == 0  # the huge seqs were refused, not counted


def test_an_unencodable_pass_through_field_cannot_reach_the_publish_stage():
    """Every number in an accepted header is finite, so the converted tile always encodes."""
    frames = with_header(header_text()[:-1] + ', "extra": {"deep": [1.5, -2, "\\ud800"]}}')
    sink, _, _ = run_with([frames])
    (message,) = sink.kinds("sem")
    assert message.header["extra"]["deep"][:2] == [1.5, -2]


class StuckSink(ListSink):
    """A PUSH output nobody pulls: every send waits until the pipeline gives up."""

    def __init__(self, give_up: threading.Event) -> None:
        super().__init__()
        self.give_up = give_up

    def send(self, frames: list[bytes]) -> None:
        self.give_up.wait()
        raise SinkClosed("shutting down")


def test_error_answers_never_block_intake_under_drop_oldest():
    give_up = threading.Event()
    metrics = EdgeMetrics()
    pipeline = Pipeline(fake_converter(32), lambda: StuckSink(give_up), metrics,
                        PipelineSettings(capacity=4, overload="drop-oldest"))
    pipeline.start()
    messages = [good(i) if i % 10 else [b"tile/s", b"{", b""] for i in range(2000)]
    feeder = threading.Thread(target=lambda: [pipeline.submit(m) for m in messages])
    feeder.start()
    feeder.join(20)
    assert not feeder.is_alive(), "intake waited on a full publish queue"
    assert metrics.counter_value("tiles_received") == 2000
    assert metrics.counter_value("messages_lost", kind="error", reason="queue_full") > 0
    give_up.set()
    pipeline.abort()
    assert pipeline.close(drain=False, timeout_s=10)
    assert_accounted(metrics)


def test_a_flood_of_scan_ends_stays_within_the_queue_under_drop_oldest():
    give_up = threading.Event()
    metrics = EdgeMetrics()
    pipeline = Pipeline(fake_converter(32), lambda: StuckSink(give_up), metrics,
                        PipelineSettings(capacity=4, overload="drop-oldest"))
    pipeline.start()
    depth = []
    for i in range(500):
        pipeline.submit(encode_scan_end(f"s{i}", {"n_tiles": 0}))
        depth.append(pipeline.decode_q.qsize())
    assert max(depth) <= 4
    assert metrics.counter_value("messages_lost", kind="scan-end", reason="queue_full") > 0
    give_up.set()
    pipeline.abort()
    assert pipeline.close(drain=False, timeout_s=10)


class FailingSink(ListSink):
    def send(self, frames: list[bytes]) -> None:
        if frames[0].startswith(b"sem/"):
            raise OSError("the network is down")
        super().send(frames)


def test_a_failed_send_is_converted_but_not_published():
    metrics = EdgeMetrics()
    pipeline = Pipeline(fake_converter(32), FailingSink, metrics, PipelineSettings())
    pipeline.start()
    for seq in range(3):
        pipeline.submit(good(seq))
    pipeline.submit(encode_scan_end("s", {"n_tiles": 3}))
    assert pipeline.close(drain=True, timeout_s=10)
    assert metrics.counter_value("tiles_converted") == 3
    assert metrics.counter_value("tiles_published") == 0
    assert metrics.counter_value("tiles_dropped", reason="send_failed") == 3
    assert_accounted(metrics)


class StageKiller(BaseException):
    """Escapes every `except Exception` of the stages, as a bug in a stage would."""


def test_a_stage_that_dies_marks_the_pipeline_failed():
    converter = fake_converter(32)

    def merge(outputs: np.ndarray, plan: object) -> np.ndarray:
        raise StageKiller("boom")

    converter.tiler.merge = merge  # type: ignore[method-assign]
    pipeline = Pipeline(converter, ListSink, EdgeMetrics(), PipelineSettings())
    pipeline.start()
    pipeline.submit(good(0))
    assert pipeline.failed.wait(10)
    assert "blend" in pipeline.failure and "boom" in pipeline.failure
    pipeline.close(drain=False, timeout_s=5)


def test_per_scan_state_is_forgotten_after_the_idle_time():
    now = [0.0]
    book = ScanBook(idle_s=60.0, clock=lambda: now[0])
    for i in range(100):
        book.count(f"scan-{i}", "converted")
    assert len(book) == 100
    now[0] = 61.0
    book.count("fresh", "converted")
    assert len(book) == 1 and book.expired == 100
    assert book.finish("fresh").converted == 1


def test_open_scans_are_a_gauge():
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(fake_converter(32), lambda: sink, metrics, PipelineSettings())
    pipeline.start()
    for scan in ("a", "b", "c"):
        pipeline.submit(good(0, scan))
    pipeline.submit(encode_scan_end("a", {"n_tiles": 1}))
    assert pipeline.close(drain=True, timeout_s=10)
    assert metrics.registry.get_sample_value("ssum_edge_open_scans") == 2


def test_rejections_are_logged_once_per_code_and_interval(caplog):
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.ratelog"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for _ in range(100):
            limited.warning("bad_json", "rejected: %s", "bad_json")
        limited.warning("oversize", "rejected: %s", "oversize")
        now[0] = 11.0
        limited.warning("bad_json", "rejected: %s", "bad_json")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["rejected: bad_json", "rejected: oversize",
                     "rejected: bad_json (and 99 more of bad_json in the last 11 s)"]


def test_intake_blocked_on_a_full_queue_gives_up_when_aborted():
    give_up = threading.Event()
    metrics = EdgeMetrics()
    pipeline = Pipeline(fake_converter(32), lambda: StuckSink(give_up), metrics,
                        PipelineSettings(capacity=1, overload="block"))
    pipeline.start()
    feeder = threading.Thread(target=lambda: [pipeline.submit(good(i)) for i in range(50)])
    feeder.start()
    time.sleep(0.5)
    assert feeder.is_alive()  # back-pressure: intake waits for room
    give_up.set()
    pipeline.abort()
    feeder.join(10)
    assert not feeder.is_alive()
    assert pipeline.close(drain=False, timeout_s=10)
    assert metrics.counter_value("tiles_dropped", reason="shutdown") > 0
    assert_accounted(metrics)


def test_warm_up_and_inference_calls_stay_within_max_pixels(tiny_bundle_source):
    from edge.inference.converter import Converter, ConverterSettings

    settings = ConverterSettings(max_batch=10**6, patching="fixed", max_pixels=128 * 128 * 4,
                                 threads=1)
    with Converter.from_bundle(tiny_bundle_source, settings) as converter:
        calls: list[int] = []
        inner = converter.backend.inner
        real = inner.infer
        inner.infer = lambda batch: calls.append(len(batch)) or real(batch)
        converter.warm_up()  # a batch of a million 128 px patches would need 64 GB
        converter.backend.infer(np.zeros((10, 1, 128, 128), np.float32))
    assert calls == [4, 4, 4, 2]
