"""The daemon end to end: real ZeroMQ sockets on 127.0.0.1, in-process daemons and a subprocess.

The model is the tiny bundle (tests/tiny_bundle.py) through the real tiling, backends and
preprocessing; tests that need a controllable engine (slow, two daemons) use the stand-in of
tests/edge_standin.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zmq
from edge_standin import (
    Engine,
    GridTiler,
    InvertBackend,
    standin_engine,
)
from prometheus_client.parser import text_string_to_metric_families

from edge.config import build_config
from edge.daemon import Daemon
from edge.protocol import decode_message, encode_scan_end, encode_tile, to_wire_dtype

pytestmark = pytest.mark.timeout(180)
TESTS = Path(__file__).resolve().parent
TILE = 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def scrape(port: int) -> dict[str, float]:
    """Counter totals (summed over labels) and the raw text of the metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {"_text": text}  # type: ignore[dict-item]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def wait_idle(port: int, received: int, timeout_s: float = 60) -> dict[str, float]:
    """Counters once every received message is accounted for."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = scrape(port)
        done = sum(m.get(f"ssum_edge_tiles_{k}_total", 0) for k in
                   ("converted", "rejected", "dropped"))
        if m.get("ssum_edge_tiles_received_total") == received and done == received:
            return m
        if time.monotonic() > deadline:
            pytest.fail(f"daemon not idle: {m}")
        time.sleep(0.05)


def header(scan_id: str, seq: int) -> dict:
    return {"scan_id": scan_id, "seq": seq, "row": seq // 4, "col": seq % 4,
            "x_nm": 1000.0 * (seq % 4), "y_nm": 1000.0 * (seq // 4), "pixel_size_nm": 10.0,
            "t_capture": time.time()}


def raw_tiles(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (TILE, TILE)).astype(np.uint8) for _ in range(n)]


def config_for(inp: dict, out: dict, bundle: Path | None = None, **sections: dict):
    data = {"input": inp, "output": out, "metrics": {"port": 0},
            "model": {"bundle": str(bundle) if bundle else "", "threads": 1}, **sections}
    return build_config(data, "test")


class Collector:
    """A consumer thread: SUB (connect) or PULL (bind) on the daemon's output."""

    def __init__(self, ctx: zmq.Context, address: str, kind: int) -> None:
        self.socket = ctx.socket(kind)
        if kind == zmq.SUB:
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
            self.socket.connect(address)
        else:
            self.socket.bind(address)
        self.messages: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.socket.poll(50):
                self.messages.append(decode_message(self.socket.recv_multipart()))
        self.socket.close(linger=0)

    def wait_for(self, predicate, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.messages):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out; got {[(m.kind, m.header.get('seq')) for m in self.messages]}")
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def kinds(self, kind: str) -> list:
        return [m for m in self.messages if m.kind == kind]


@pytest.fixture()
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture()
def model(tmp_path):
    """(bundle path or None, engine factory, offline conversion of a raw tile to float)."""
    from tiny_bundle import make_tiny_bundle

    from edge.daemon import build_engine
    from edge.tiling import convert_image

    bundle = make_tiny_bundle(tmp_path / "bundle", seed=0, with_torch_export=False)
    config = config_for({"socket": "pull"}, {}, bundle)
    engine, _ = build_engine(config)

    def offline(raw: np.ndarray) -> np.ndarray:
        return convert_image(engine.prepare(raw), engine.backend, engine.tiler, 8)

    return bundle, None, offline


def start(config, model) -> Daemon:
    bundle, factory, _ = model
    daemon = Daemon(config, engine=None if bundle else factory())
    daemon.start()
    return daemon


def assert_matches_offline(message, raw, offline) -> None:
    expected = to_wire_dtype(offline(raw).astype(np.float32), raw.dtype.name).astype(int)
    assert message.image.shape == raw.shape and message.image.dtype == raw.dtype
    # one step of the wire dtype: float rounding may differ between batch compositions
    assert np.abs(message.image.astype(int) - expected).max() <= 1


def test_a_replayed_scan_comes_back_converted_complete_and_in_order(tmp_path, ctx, model):
    from edge.rig import replay_scan
    from edge.scanfile import read_scan
    from trainer.sim.scan import simulate_scan

    scan = simulate_scan(tmp_path / "scan", rows=2, cols=3, tile=TILE, overlap=16, seed=0)
    recording = read_scan(scan)
    rig, out = endpoint(), endpoint()
    daemon = start(config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out},
                              model[0], batching={"max_batch": 4}), model)
    consumer = Collector(ctx, out, zmq.SUB)
    try:
        time.sleep(0.5)  # the consumer's subscription reaches the daemon's PUB
        replay_scan(scan, rig, socket="push", bind=False, timeout_s=30, context=ctx)
        consumer.wait_for(lambda ms: any(m.kind == "scan-end" for m in ms))
        sem = consumer.kinds("sem")
        assert [m.header["seq"] for m in sem] == [t.seq for t in recording.tiles]
        for message, tile in zip(sem, recording.tiles, strict=True):
            assert_matches_offline(message, recording.load_tile(tile), model[2])
        end = consumer.messages[-1]
        assert end.kind == "scan-end" and end.header["n_tiles"] == len(recording.tiles)
        assert end.header["converted"] == len(recording.tiles)
        metrics = wait_idle(daemon.metrics_port, len(recording.tiles))
        assert metrics["ssum_edge_tiles_converted_total"] == len(recording.tiles)
        assert metrics["ssum_edge_scans_completed_total"] == 1
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], capture_output=True,
                                   input=metrics["_text"].encode(), timeout=30, check=False)
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        consumer.close()
        daemon.stop()


def test_malformed_messages_get_errors_while_good_tiles_flow(ctx, model):
    rig, out = endpoint(), endpoint()
    daemon = start(config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out},
                              model[0], limits={"max_width": 256}), model)
    consumer = Collector(ctx, out, zmq.SUB)
    push = ctx.socket(zmq.PUSH)
    push.connect(rig)
    raws = raw_tiles(3)
    good = [encode_tile(header("s", i), raw) for i, raw in enumerate(raws)]
    short = list(good[0])
    short[2] = short[2][:-2]
    wide = encode_tile(header("s", 9), np.zeros((4, 300), np.uint8))
    nan = encode_tile(header("s", 8), np.full((4, 4), np.nan, np.float32))
    bad = {
        "bad_frames": [b"tile/s"],
        "bad_topic": [b"nonsense", good[0][1], good[0][2]],
        "bad_json": [b"tile/s", b"{", b""],
        "missing_field": [b"tile/s", b'{"v": 1, "scan_id": "s"}', b""],
        "bad_field": encode_tile({**header("s", 0), "seq": -1}, raws[0]),
        "unsupported_version": encode_tile({**header("s", 0), "v": 7}, raws[0]),
        "unknown_dtype": [b"tile/s", good[0][1].replace(b'"uint8"', b'"int64"'), good[0][2]],
        "byte_count": short,
        "non_finite": nan,
        "oversize": wide,
    }
    try:
        time.sleep(0.5)
        push.send_multipart(good[0])
        for frames in bad.values():
            push.send_multipart(frames)
        push.send_multipart(good[1])
        push.send_multipart(good[2])
        consumer.wait_for(lambda ms: len(ms) == 3 + len(bad))
        assert [m.header["error"] for m in consumer.kinds("error")] == list(bad)
        sem = consumer.kinds("sem")
        assert [m.header["seq"] for m in sem] == [0, 1, 2]
        for message, raw in zip(sem, raws, strict=True):
            assert_matches_offline(message, raw, model[2])
        metrics = wait_idle(daemon.metrics_port, 3 + len(bad))
        assert metrics["ssum_edge_tiles_rejected_total"] == len(bad)
        assert metrics["ssum_edge_tiles_converted_total"] == 3
    finally:
        push.close(linger=0)
        consumer.close()
        daemon.stop()


def test_sequence_gaps_are_counted_on_sub_input(ctx, model):
    from edge.rig import wait_for_subscribers

    rig, out = endpoint(), endpoint()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.bind(rig)
    daemon = start(config_for({"socket": "sub", "endpoint": rig}, {"endpoint": out},
                              model[0]), model)
    consumer = Collector(ctx, out, zmq.SUB)
    try:
        wait_for_subscribers(pub, b"tile/g", 1, 30)
        time.sleep(0.5)
        seqs = [0, 1, 4, 5, 9]  # missing: 2, 3, 6, 7, 8
        for seq, raw in zip(seqs, raw_tiles(len(seqs)), strict=True):
            pub.send_multipart(encode_tile(header("g", seq), raw))
        pub.send_multipart(encode_scan_end("g", {"n_tiles": 10}))
        consumer.wait_for(lambda ms: any(m.kind == "scan-end" for m in ms))
        end = consumer.messages[-1]
        assert (end.header["gaps"], end.header["converted"]) == (5, 5)
        assert [m.header["seq"] for m in consumer.kinds("sem")] == seqs
        assert wait_idle(daemon.metrics_port, 5)["ssum_edge_sequence_gaps_total"] == 5
    finally:
        pub.close(linger=0)
        consumer.close()
        daemon.stop()


def test_two_daemons_pull_from_one_push_and_every_tile_arrives_once(ctx):
    rig, out = endpoint(), endpoint()
    push = ctx.socket(zmq.PUSH)
    push.bind(rig)
    consumer = Collector(ctx, out, zmq.PULL)
    config = config_for({"socket": "pull", "endpoint": rig, "mode": "connect"},
                        {"socket": "push", "endpoint": out, "mode": "connect"})
    daemons = [Daemon(config, engine=standin_engine()) for _ in range(2)]
    for daemon in daemons:
        daemon.start()
    try:
        time.sleep(0.5)  # both PULL peers connected: PUSH round-robins between them
        n = 24
        for seq, raw in enumerate(raw_tiles(n)):
            push.send_multipart(encode_tile(header("two", seq), raw))
        consumer.wait_for(lambda ms: len(ms) >= n)
        time.sleep(0.3)
        seqs = sorted(m.header["seq"] for m in consumer.kinds("sem"))
        assert seqs == list(range(n)) and len(consumer.messages) == n
        shares = [wait_idle(d.metrics_port, d.metrics.counter_value("tiles_received"))
                  ["ssum_edge_tiles_converted_total"] for d in daemons]
        assert sum(shares) == n and min(shares) > 0
    finally:
        push.close(linger=0)
        consumer.close()
        for daemon in daemons:
            daemon.stop()


def test_drop_oldest_under_overload_on_sub_counts_drops(ctx):
    from edge.rig import wait_for_subscribers

    rig, out = endpoint(), endpoint()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.bind(rig)
    slow = Engine(InvertBackend(delay_s=0.05), GridTiler(TILE), standin_engine().prepare, "slow")
    config = config_for({"socket": "sub", "endpoint": rig}, {"endpoint": out},
                        queues={"capacity": 2}, batching={"max_batch": 1})
    assert config.overload_policy == "drop-oldest"
    daemon = Daemon(config, engine=slow)
    daemon.start()
    try:
        wait_for_subscribers(pub, b"tile/d", 1, 30)
        n = 40
        for seq, raw in enumerate(raw_tiles(n)):
            pub.send_multipart(encode_tile(header("d", seq), raw))
        metrics = wait_idle(daemon.metrics_port, n)
        dropped = metrics["ssum_edge_tiles_dropped_total"]
        assert dropped > 0
        assert metrics["ssum_edge_tiles_converted_total"] + dropped == n
        assert f'ssum_edge_tiles_dropped_total{{reason="queue_full"}} {dropped}' in \
            metrics["_text"]
    finally:
        pub.close(linger=0)
        daemon.stop()


def test_sigterm_mid_stream_loses_nothing_in_flight(tmp_path, ctx, model):
    """A daemon subprocess (`ssum edge run`) PULLs a stream; SIGTERM; all it received comes out."""
    rig, out = endpoint(), endpoint()
    bundle = model[0]
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[input]\nsocket = "pull"\nendpoint = "{rig}"\n'
        f'[output]\nsocket = "push"\nendpoint = "{out}"\nmode = "connect"\n'
        f'[model]\nbundle = "{bundle or ""}"\nthreads = 1\n'
        '[metrics]\nport = 0\n[batching]\nmax_batch = 4\n'
    )
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    command = [sys.executable, "-m", "edge.cli"] if bundle else \
        [sys.executable, str(TESTS / "edge_standin.py")]
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), PYTHONUNBUFFERED="1",
               STANDIN_DELAY_S="0.01")  # the stand-in is slower than the stream: queues fill
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([*command, "edge", "run", "--config", str(config)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    consumer = Collector(ctx, out, zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    push.sndtimeo = 200
    push.connect(rig)
    stop_sending = threading.Event()
    try:
        assert b"READY=1" in notify.recv(4096).split(b"\n")
        def send_stream() -> None:  # a steady stream, until the daemon stops taking tiles
            for seq, raw in enumerate(raw_tiles(200)):
                try:
                    push.send_multipart(encode_tile(header("t", seq), raw))
                except zmq.Again:
                    return
                if stop_sending.wait(0.01):
                    return

        sender = threading.Thread(target=send_stream, daemon=True)
        sender.start()
        consumer.wait_for(lambda ms: len(ms) >= 10, 60)
        proc.send_signal(signal.SIGTERM)  # mid-stream: tiles are queued in every stage
        assert proc.wait(timeout=60) == 0
        text = log_path.read_text()
        match = re.search(r"stopped: received (\d+), converted (\d+), rejected (\d+), "
                          r"dropped (\d+)", text)
        assert match, text
        received, converted, rejected, dropped = map(int, match.groups())
        assert received >= 10 and converted == received and rejected == dropped == 0
        in_flight = int(re.search(r"draining (\d+) item", text).group(1))
        assert in_flight > 0 or bundle is not None, text
        consumer.wait_for(lambda ms: len(ms) >= received, 30)
        time.sleep(0.2)
        assert [m.header["seq"] for m in consumer.messages] == list(range(received))
        messages = []
        notify.settimeout(1)
        while True:
            try:
                messages.append(notify.recv(4096))
            except TimeoutError:
                break
        assert any(b"STOPPING=1" in m for m in messages)
    finally:
        stop_sending.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        push.close(linger=0)
        consumer.close()


def test_mosaic_is_written_at_scan_end(tmp_path, ctx, monkeypatch):
    import importlib.util
    import types

    written: list = []
    if importlib.util.find_spec("edge.mosaic") is None:  # stand-in until edge/mosaic.py exists
        fake = types.ModuleType("edge.mosaic")

        class MosaicBuilder:
            def __init__(self, pixel_size_nm, refine=False):
                self.tiles = []

            def add(self, image, x_nm, y_nm):
                self.tiles.append((x_nm, y_nm, image.shape))

            def render(self):
                return np.zeros((8, 8), np.float32) + len(self.tiles)

        def write_ome_tiff(path, image, pixel_size_nm, metadata=None):
            written.append((path, float(image.max()), pixel_size_nm, metadata))
            Path(path).write_bytes(b"stand-in")

        fake.MosaicBuilder, fake.write_ome_tiff = MosaicBuilder, write_ome_tiff
        monkeypatch.setitem(sys.modules, "edge.mosaic", fake)
    rig, out = endpoint(), endpoint()
    config = config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out},
                        mosaic={"enabled": True, "directory": str(tmp_path / "mosaics")})
    daemon = Daemon(config, engine=standin_engine())
    daemon.start()
    consumer = Collector(ctx, out, zmq.SUB)
    push = ctx.socket(zmq.PUSH)
    push.connect(rig)
    try:
        time.sleep(0.5)
        for seq, raw in enumerate(raw_tiles(4)):
            push.send_multipart(encode_tile(header("m", seq), raw))
        push.send_multipart(encode_scan_end("m", {"n_tiles": 4}))
        consumer.wait_for(lambda ms: any(m.kind == "scan-end" for m in ms))
        path = tmp_path / "mosaics" / "m.ome.tif"
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.is_file()
        if written:
            assert written[0][1:3] == (4.0, 10.0)
            assert written[0][3]["converted"] == 4
    finally:
        push.close(linger=0)
        consumer.close()
        daemon.stop()


def test_an_endpoint_in_use_is_a_one_line_error_and_leaves_nothing_running():
    from edge.errors import UserError

    rig, out = endpoint(), endpoint()
    config = config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out})
    first = Daemon(config, engine=standin_engine())
    first.start()
    try:
        second = Daemon(config_for({"socket": "pull", "endpoint": rig}, {"endpoint": endpoint()}),
                        engine=standin_engine())
        with pytest.raises(UserError, match="cannot bind"):
            second.start()
        assert second.wait(5)  # stopped itself
    finally:
        first.stop()
