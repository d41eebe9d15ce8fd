"""Fuzzing the wire protocol and the daemon.

- Property-based (Hypothesis): arbitrary frames, and valid headers with arbitrary JSON values
  in any field, never make a decoder raise anything but ProtocolError, every error has an
  answer that encodes, and the pipeline survives any list of them with exact accounting.
- Seeded: 10,000 mutated messages through a real `ssum edge run` process (tiny bundle, real
  sockets): every message answered or counted, the daemon alive and converting at the end.
"""

from __future__ import annotations

import json
import random
import threading

import numpy as np
import pytest
import zmq
from helpers import ListSink, assert_accounted, daemon_toml, fake_converter, tile_header, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.protocol import (
    ProtocolError,
    decode_message,
    decode_scan_end,
    decode_tile,
    encode_error,
    encode_result,
    encode_tile,
)
from edge.serve.metrics import EdgeMetrics
from edge.serve.pipeline import Pipeline, PipelineSettings
from edge.tools.supervise import NotifyListener, free_port, scrape, start_daemon, stop_daemon

RAW = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
VALID = {"v": 1, **tile_header("fz", 0), "width": 16, "height": 16, "dtype": "uint8"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)


@st.composite
def tile_messages(draw: st.DrawFn) -> list[bytes]:
    """A tile message with some fields replaced by arbitrary JSON, some frames mangled."""
    header = dict(VALID)
    for key in draw(st.lists(st.sampled_from([*VALID, "extra"]), max_size=4)):
        header[key] = draw(json_values)
    if draw(st.booleans()):
        del header[draw(st.sampled_from(sorted(header)))]
    scan = header.get("scan_id")
    topic = f"tile/{scan}" if isinstance(scan, str) and draw(st.booleans()) else draw(st.text())
    pixels = RAW.tobytes() if draw(st.booleans()) else draw(st.binary(max_size=300))
    return [topic.encode("utf-8", "surrogatepass"), json.dumps(header).encode("utf-8",
            "surrogatepass"), pixels]


any_frames = st.lists(st.binary(max_size=40), max_size=5)
messages = st.one_of(tile_messages(), any_frames)


def _answer(exc: ProtocolError) -> None:
    decode_message(encode_error(exc.scan_id, exc.code, exc.message, exc.header))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_decoders_raise_only_protocol_errors_and_every_error_has_an_answer(frames):
    for decode in (decode_tile, decode_scan_end, decode_message):
        try:
            decoded = decode(frames)
        except ProtocolError as exc:
            _answer(exc)
            continue
        if decode is decode_tile:  # an accepted tile's result always encodes
            encode_result(decoded.header, np.zeros(decoded.image.shape, np.float32), {})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=15))
def test_the_pipeline_survives_any_messages_with_exact_accounting(batch):
    sink, metrics = ListSink(), EdgeMetrics()
    pipeline = Pipeline(fake_converter(16), lambda: sink, metrics, PipelineSettings())
    pipeline.start()
    for frames in [*batch, encode_tile(tile_header("fz", 1), RAW)]:
        pipeline.submit(frames)
    assert pipeline.close(drain=True, timeout_s=20)
    assert not pipeline.failed.is_set(), pipeline.failure
    assert_accounted(metrics)
    assert sink.kinds("sem")[-1].header["seq"] == 1


def mutate(rng: random.Random, i: int) -> list[bytes]:
    """One of many ways a rig, a network or an attacker gets a message wrong (2 % are valid)."""
    header = {**VALID, "seq": i}
    kind = rng.randrange(12)
    if kind == 0 and rng.random() < 0.5:
        return encode_tile(header, RAW)
    if kind == 1:
        return [b"scan-end/fz", json.dumps({"v": 1, "scan_id": rng.choice(
            ["fz", "", "a b", "..", "x" * 300]), "n_tiles": rng.choice([1, -1, 1e300])}).encode(),
            b""]
    if kind == 2:
        header[rng.choice(list(VALID))] = rng.choice(
            [None, True, "7", -1, 2**64, 10**400, 1e308, [], {}, "\ud800", "a\x9f", "x" * 5000])
    elif kind == 3:
        del header[rng.choice(list(VALID))]
    elif kind == 4:
        return [b"tile/fz", b"[" * rng.randrange(1, 5000), RAW.tobytes()]
    elif kind == 5:
        return [bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
                for _ in range(rng.randrange(1, 6))]  # ZeroMQ has no 0-frame message
    elif kind == 6:
        header.update(width=rng.choice([0, 16, 99999]), height=rng.choice([16, 10**9]))
    elif kind == 7:
        return [b"tile/fz", json.dumps(header).encode()[: rng.randrange(80)], RAW.tobytes()]
    elif kind == 8:
        header["scan_id"] = rng.choice(["", "a/b", "\u2028", "z" * 257, "ok"])
    elif kind == 9:
        return [b"tile/fz", json.dumps(header).replace("0.0", "1e999").encode(), RAW.tobytes()]
    pixels = RAW.tobytes()[: rng.choice([256, 255, 0, 256])]
    topic = f"tile/{header.get('scan_id', 'fz')}".encode("utf-8", "surrogatepass")
    return [topic, json.dumps(header).encode("utf-8", "surrogatepass"), pixels]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ten_thousand_fuzzed_messages_through_a_real_daemon(tmp_path, tiny_bundle, ctx):
    out_port = free_port()
    config, ports = daemon_toml(
        tmp_path / "edge.toml", tiny_bundle,
        output={"socket": "push", "endpoint": f"tcp://127.0.0.1:{out_port}", "mode": "bind"},
        log={"level": "ERROR"})
    results = ctx.socket(zmq.PULL)
    results.connect(f"tcp://127.0.0.1:{out_port}")
    answers: list[bytes] = []

    def collect() -> None:
        try:
            while results.poll(20000):
                answers.append(bytes(results.recv_multipart()[0]))
        except zmq.ZMQError:  # the context closed the socket at teardown: done
            return

    collector = threading.Thread(target=collect, daemon=True)
    notify = NotifyListener(tmp_path)
    daemon = start_daemon(config, notify, tmp_path / "daemon.log")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{ports['input']}")
    try:
        collector.start()
        rng = random.Random(20261201)
        n = 10_000
        for i in range(n):
            push.send_multipart(mutate(rng, i))
        push.send_multipart(encode_tile(tile_header("fz-last", 0), RAW))
        # results come in arrival order, error answers before anything read after them
        wait_for(lambda: b"sem/fz-last" in answers[-3:], 240, "the last tile converted")
        metrics = scrape(ports["metrics"])
        assert daemon.poll() is None, "the daemon died"
        scan_ends = metrics["ssum_edge_scans_completed_total"] + metrics[
            "ssum_edge_messages_lost_total"]
        assert metrics["ssum_edge_tiles_received_total"] + scan_ends == n + 1
        assert metrics["ssum_edge_tiles_received_total"] == _ended(metrics)
        kinds = [a.split(b"/", 1)[0] for a in answers]
        assert kinds.count(b"sem") == metrics["ssum_edge_tiles_published_total"] > 100
        assert kinds.count(b"error") == metrics["ssum_edge_tiles_rejected_total"] > n / 2
        assert kinds.count(b"scan-end") == metrics["ssum_edge_scans_completed_total"] > 0
    finally:
        code = stop_daemon(daemon) if daemon.poll() is None else daemon.returncode
        notify.close()
        push.close(linger=0)
        results.close(linger=0)
    log = (tmp_path / "daemon.log").read_text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log


def _ended(metrics: dict[str, float]) -> float:
    return sum(metrics.get(f"ssum_edge_tiles_{k}_total", 0)
               for k in ("published", "rejected", "dropped"))
