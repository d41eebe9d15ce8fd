"""The daemon end to end: real ZeroMQ sockets on 127.0.0.1, in-process daemons and a subprocess.

The model is the tiny bundle (tests/tiny_bundle.py) through the real tiling, backends and
preprocessing; tests that need a controllable converter (slow, two daemons) use the fake one of
tests/helpers.py.
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
from pathlib import Path

import numpy as np
import pytest
import zmq
from helpers import endpoint, fake_converter, raw_tiles
from helpers import tile_header as header

from edge.imaging.mosaic import read_ome_pixel_size
from edge.inference.converter import Converter, ConverterSettings
from edge.protocol import encode_scan_end, encode_tile, to_wire_dtype
from edge.serve.config_file import build_config
from edge.serve.daemon import Daemon
from edge.tools.supervise import fetch_metrics, scrape

pytestmark = pytest.mark.timeout(180)
TILE = 128


def wait_idle(port: int, received: int, timeout_s: float = 60) -> dict[str, float]:
    """Counters once every received message is accounted for."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = scrape(port)
        done = sum(m.get(f"ssum_edge_tiles_{k}_total", 0) for k in
                   ("published", "rejected", "dropped"))
        if m.get("ssum_edge_tiles_received_total") == received and done == received:
            return m
        if time.monotonic() > deadline:
            pytest.fail(f"daemon not idle: {m}")
        time.sleep(0.05)


def config_for(inp: dict, out: dict, bundle: Path | None = None, **sections: dict):
    data = {"input": inp, "output": out, "metrics": {"port": 0},
            "model": {"bundle": str(bundle) if bundle else "", "threads": 1}, **sections}
    return build_config(data, "test")


@pytest.fixture()
def offline(tiny_bundle_source):
    """Whole-tile conversion by the tiny bundle's converter, outside the daemon."""
    with Converter.from_bundle(tiny_bundle_source, ConverterSettings(threads=1)) as converter:
        yield converter.convert


def start(config) -> Daemon:
    daemon = Daemon(config)
    daemon.start()
    return daemon


def assert_matches_offline(message, raw, offline) -> None:
    expected = to_wire_dtype(offline(raw).astype(np.float32), raw.dtype.name).astype(int)
    assert message.image.shape == raw.shape and message.image.dtype == raw.dtype
    # one step of the wire dtype: float rounding may differ between batch compositions
    assert np.abs(message.image.astype(int) - expected).max() <= 1


def test_a_replayed_scan_comes_back_converted_complete_and_in_order(tmp_path, ctx, collector,
                                                                   tiny_bundle, offline):
    from edge.tools.rig import replay_scan
    from edge.tools.scanfile import read_scan
    from trainer.sim.scan import simulate_scan

    scan = simulate_scan(tmp_path / "scan", rows=2, cols=3, tile=TILE, overlap=16, seed=0)
    recording = read_scan(scan)
    rig, out = endpoint(), endpoint()
    daemon = start(config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out},
                              tiny_bundle, batching={"max_batch": 4}))
    consumer = collector(out)
    try:
        time.sleep(0.5)  # the consumer's subscription reaches the daemon's PUB
        replay_scan(scan, rig, socket="push", bind=False, timeout_s=30, context=ctx)
        consumer.wait_for(lambda ms: any(m.kind == "scan-end" for m in ms))
        sem = consumer.kinds("sem")
        assert [m.header["seq"] for m in sem] == [t.seq for t in recording.tiles]
        for message, tile in zip(sem, recording.tiles, strict=True):
            assert_matches_offline(message, recording.load_tile(tile), offline)
        end = consumer.messages[-1]
        assert end.kind == "scan-end" and end.header["n_tiles"] == len(recording.tiles)
        assert end.header["converted"] == len(recording.tiles)
        metrics = wait_idle(daemon.metrics_port, len(recording.tiles))
        assert metrics["ssum_edge_tiles_converted_total"] == len(recording.tiles)
        assert metrics["ssum_edge_tiles_published_total"] == len(recording.tiles)
        assert metrics["ssum_edge_scans_completed_total"] == 1
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], capture_output=True,
                                   input=fetch_metrics(daemon.metrics_port).encode(), timeout=30,
                                   check=False)
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        daemon.stop()


def test_malformed_messages_get_errors_while_good_tiles_flow(ctx, collector, tiny_bundle,
                                                             offline):
    rig, out = endpoint(), endpoint()
    daemon = start(config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out},
                              tiny_bundle, limits={"max_width": 256}))
    consumer = collector(out)
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
            assert_matches_offline(message, raw, offline)
        metrics = wait_idle(daemon.metrics_port, 3 + len(bad))
        assert metrics["ssum_edge_tiles_rejected_total"] == len(bad)
        assert metrics["ssum_edge_tiles_converted_total"] == 3
        assert metrics["ssum_edge_tiles_published_total"] == 3
    finally:
        push.close(linger=0)
        daemon.stop()


def test_sequence_gaps_are_counted_on_sub_input(ctx, collector, tiny_bundle):
    from edge.tools.rig import wait_for_subscribers

    rig, out = endpoint(), endpoint()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.bind(rig)
    daemon = start(config_for({"socket": "sub", "endpoint": rig}, {"endpoint": out}, tiny_bundle))
    consumer = collector(out)
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
        daemon.stop()


def test_two_daemons_pull_from_one_push_and_every_tile_arrives_once(ctx, collector):
    rig, out = endpoint(), endpoint()
    push = ctx.socket(zmq.PUSH)
    push.bind(rig)
    consumer = collector(out, zmq.PULL)
    config = config_for({"socket": "pull", "endpoint": rig, "mode": "connect"},
                        {"socket": "push", "endpoint": out, "mode": "connect"})
    daemons = [Daemon(config, converter=fake_converter()) for _ in range(2)]
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
                  ["ssum_edge_tiles_published_total"] for d in daemons]
        assert sum(shares) == n and min(shares) > 0
    finally:
        push.close(linger=0)
        for daemon in daemons:
            daemon.stop()


def test_drop_oldest_under_overload_on_sub_counts_drops(ctx):
    from edge.tools.rig import wait_for_subscribers

    rig, out = endpoint(), endpoint()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.bind(rig)
    slow = fake_converter(TILE, delay_s=0.05)
    config = config_for({"socket": "sub", "endpoint": rig}, {"endpoint": out},
                        queues={"capacity": 2}, batching={"max_batch": 1})
    assert config.overload_policy == "drop-oldest"
    daemon = Daemon(config, converter=slow)
    daemon.start()
    try:
        wait_for_subscribers(pub, b"tile/d", 1, 30)
        n = 40
        for seq, raw in enumerate(raw_tiles(n)):
            pub.send_multipart(encode_tile(header("d", seq), raw))
        metrics = wait_idle(daemon.metrics_port, n)
        dropped = metrics["ssum_edge_tiles_dropped_total"]
        assert dropped > 0
        assert metrics["ssum_edge_tiles_published_total"] + dropped == n
        assert f'ssum_edge_tiles_dropped_total{{reason="queue_full"}} {dropped}' in \
            fetch_metrics(daemon.metrics_port)
    finally:
        pub.close(linger=0)
        daemon.stop()


def test_sigterm_mid_stream_loses_nothing_in_flight(tmp_path, ctx, collector, tiny_bundle):
    """A daemon subprocess (`ssum edge run`) PULLs a stream faster than it converts; SIGTERM;
    everything it received comes out, in order."""
    rig, out = endpoint(), endpoint()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[input]\nsocket = "pull"\nendpoint = "{rig}"\n'
        f'[output]\nsocket = "push"\nendpoint = "{out}"\nmode = "connect"\n'
        f'[model]\nbundle = "{tiny_bundle}"\nthreads = 1\n'
        '[metrics]\nport = 0\n[batching]\nmax_batch = 4\n'
    )
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ssum", "edge", "run", "--config",
                                 str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
    consumer = collector(out, zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    push.sndtimeo = 200
    push.connect(rig)
    stop_sending = threading.Event()
    tiles = raw_tiles(200)  # sent as fast as the socket takes them: faster than any machine
    # converts them, so at SIGTERM tiles are queued in every stage
    try:
        assert b"READY=1" in notify.recv(4096).split(b"\n")

        def send_stream() -> None:  # a burst, until the daemon stops taking tiles
            for seq, raw in enumerate(tiles):
                try:
                    push.send_multipart(encode_tile(header("t", seq), raw))
                except zmq.Again:
                    return
                if stop_sending.is_set():
                    return

        sender = threading.Thread(target=send_stream, daemon=True)
        sender.start()
        consumer.wait_for(lambda ms: len(ms) >= 10, 60)
        proc.send_signal(signal.SIGTERM)  # mid-stream: tiles are queued in every stage
        assert proc.wait(timeout=60) == 0
        text = log_path.read_text()
        match = re.search(r"stopped: received (\d+), published (\d+), rejected (\d+), "
                          r"dropped (\d+), in flight 0 \(converted (\d+)\)", text)
        assert match, text
        received, published, rejected, dropped, converted = map(int, match.groups())
        assert received >= 10 and published == converted == received
        assert rejected == dropped == 0
        in_flight = int(re.search(r"draining (\d+) item", text).group(1))
        assert in_flight > 0, text
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


def test_mosaic_is_written_at_scan_end(tmp_path, ctx, collector):
    import tifffile

    rig, out = endpoint(), endpoint()
    config = config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out},
                        mosaic={"enabled": True, "directory": str(tmp_path / "mosaics"),
                                "raw": True})
    daemon = Daemon(config, converter=fake_converter())
    daemon.start()
    consumer = collector(out)
    push = ctx.socket(zmq.PUSH)
    push.connect(rig)
    raws = raw_tiles(4)
    try:
        time.sleep(0.5)
        for seq, raw in enumerate(raws):  # one row, 100 px apart: 28 px overlaps
            push.send_multipart(encode_tile(header("m", seq), raw))
        push.send_multipart(encode_scan_end("m", {"n_tiles": 4}))
        consumer.wait_for(lambda ms: any(m.kind == "scan-end" for m in ms))
        path, raw_path = tmp_path / "mosaics" / "m.ome.tif", tmp_path / "mosaics" / "m.raw.ome.tif"
        deadline = time.monotonic() + 10
        while not raw_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        mosaic = np.squeeze(tifffile.imread(path)).astype(np.float64) / 65535
        assert mosaic.shape == (TILE, 300 + TILE)
        assert read_ome_pixel_size(path) == 10.0
        for seq in (0, 3):  # where one tile alone covers the mosaic it is that tile, converted
            x = 100 * seq + (0 if seq == 0 else 28)
            expected = 1 - raws[seq][:, x - 100 * seq : x - 100 * seq + 72] / 255
            np.testing.assert_allclose(mosaic[:, x : x + 72], expected, atol=1e-4)
        raw_mosaic = np.squeeze(tifffile.imread(raw_path))
        np.testing.assert_allclose(raw_mosaic.astype(np.float64) / 65535, 1 - mosaic, atol=1e-4)
    finally:
        push.close(linger=0)
        daemon.stop()


def test_an_endpoint_in_use_is_a_one_line_error_and_leaves_nothing_running():
    from edge.errors import UserError

    rig, out = endpoint(), endpoint()
    config = config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out})
    first = Daemon(config, converter=fake_converter())
    first.start()
    try:
        second = Daemon(config_for({"socket": "pull", "endpoint": rig}, {"endpoint": endpoint()}),
                        converter=fake_converter())
        with pytest.raises(UserError, match="cannot bind"):
            second.start()
        assert second.wait(5)  # stopped itself
    finally:
        first.stop()


def test_a_frame_beyond_the_limits_is_refused_by_zeromq_before_it_is_read(ctx, collector):
    """[limits] sets the input socket's MAXMSGSIZE: the sender of a larger frame is cut off,
    the frame never reaches memory, other senders go on."""
    rig, out = endpoint(), endpoint()
    config = config_for({"socket": "pull", "endpoint": rig}, {"endpoint": out},
                        limits={"max_bytes": 2 * 2**20})
    daemon = Daemon(config, converter=fake_converter())
    daemon.start()
    consumer = collector(out)
    big, good = ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)
    try:
        big.connect(rig)
        time.sleep(0.3)
        big.send_multipart([b"tile/x", b"{}", b"\0" * (3 * 2**20)])
        time.sleep(0.5)
        good.connect(rig)
        good.send_multipart(encode_tile(header("ok", 0), raw_tiles(1)[0]))
        consumer.wait_for(lambda ms: len(ms) >= 1)
        metrics = wait_idle(daemon.metrics_port, 1)
        assert [m.kind for m in consumer.messages] == ["sem"]
        assert metrics["ssum_edge_tiles_received_total"] == 1
    finally:
        big.close(linger=0)
        good.close(linger=0)
        daemon.stop()
