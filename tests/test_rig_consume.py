"""Rig replay and the reference consumer over real ZeroMQ sockets on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zmq
from helpers import endpoint as free_endpoint

from edge.errors import UserError
from edge.protocol import (
    ErrorCode,
    decode_message,
    decode_tile,
    encode_error,
    encode_result,
    encode_scan_end,
)
from edge.tools.consume import consume
from edge.tools.rig import replay_scan
from edge.tools.scanfile import read_scan, write_scan
from ssum.cli import main

ROWS, COLS, TILE_H, TILE_W = 2, 3, 16, 20
STEP_Y, STEP_X, PIXEL_NM = 12, 15, 10.0
TIMEOUT_S = 10.0


@pytest.fixture
def scan_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    tiles = []
    for seq in range(ROWS * COLS):
        row, col = divmod(seq, COLS)
        info = {"seq": seq, "row": row, "col": col, "x_nm": col * STEP_X * PIXEL_NM}
        info |= {"y_nm": row * STEP_Y * PIXEL_NM, "t_capture": 1_750_000_000.0 + seq}
        pixels = rng.integers(0, 65535, (TILE_H, TILE_W), endpoint=True).astype(np.uint16)
        tiles.append((info, pixels))
    return write_scan(tmp_path / "scan", "chip-7", PIXEL_NM, tiles)


class Background:
    """Runs a function in a thread and hands back its result or exception."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def body() -> None:
            try:
                self.result = target()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                self.error = exc

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(TIMEOUT_S + 5)
        assert not self.thread.is_alive(), "background task did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def receive_all(sock: zmq.Socket, stop_kind: str = "scan-end", ends: int = 1) -> list:
    messages, seen = [], 0
    while seen < ends:
        assert sock.poll(int(TIMEOUT_S * 1000)), "nothing received in time"
        message = decode_message(sock.recv_multipart())
        messages.append(message)
        seen += message.kind == stop_kind
    return messages


def assert_whole_scan(messages: list, scan_dir: Path, scan_id: str, started: float) -> None:
    recording = read_scan(scan_dir)
    assert [m.kind for m in messages] == ["tile"] * len(recording.tiles) + ["scan-end"]
    assert [m.header["seq"] for m in messages[:-1]] == list(range(len(recording.tiles)))
    for message, tile in zip(messages, recording.tiles):
        assert message.scan_id == scan_id
        assert message.header["t_capture"] >= started
        np.testing.assert_array_equal(message.image, recording.load_tile(tile))
    assert messages[-1].header == {"v": 1, "scan_id": scan_id, "n_tiles": len(recording.tiles)}


def test_pub_replay_waits_for_a_late_subscriber_and_loses_nothing(scan_dir: Path) -> None:
    endpoint, started = free_endpoint(), time.time()
    replay = Background(lambda: replay_scan(scan_dir, endpoint, timeout_s=TIMEOUT_S))
    time.sleep(0.3)
    with zmq.Context() as ctx, ctx.socket(zmq.SUB) as sub:
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"tile/")
        sub.setsockopt(zmq.SUBSCRIBE, b"scan-end/")
        sub.connect(endpoint)
        messages = receive_all(sub)
    stats = replay.join()
    assert stats.tiles_sent == ROWS * COLS and stats.scan_ends_sent == 1
    assert stats.subscribers == 1 and stats.scan_ids == ["chip-7"]
    assert_whole_scan(messages, scan_dir, "chip-7", started)


def test_push_replay_is_lossless_to_a_pull_receiver(scan_dir: Path) -> None:
    endpoint, started = free_endpoint(), time.time()
    replay = Background(
        lambda: replay_scan(
            scan_dir, endpoint, socket="push", scan_id="pushed", timeout_s=TIMEOUT_S
        )
    )
    time.sleep(0.2)
    with zmq.Context() as ctx, ctx.socket(zmq.PULL) as pull:
        pull.linger = 0
        pull.connect(endpoint)
        messages = receive_all(pull)
    replay.join()
    assert_whole_scan(messages, scan_dir, "pushed", started)


def test_rate_limited_repeats_keep_order_with_distinct_scan_ids(scan_dir: Path) -> None:
    endpoint, rate_hz, repeat = free_endpoint(), 40.0, 2
    with zmq.Context() as ctx, ctx.socket(zmq.PULL) as pull:
        pull.linger = 0
        pull.bind(endpoint)
        replay = Background(
            lambda: replay_scan(
                scan_dir, endpoint, socket="push", bind=False, rate_hz=rate_hz, repeat=repeat
            )
        )
        messages = receive_all(pull, ends=repeat)
    stats = replay.join()
    n = ROWS * COLS
    assert stats.scan_ids == ["chip-7-r1", "chip-7-r2"] and stats.tiles_sent == repeat * n
    for k, scan_id in enumerate(stats.scan_ids):
        part = messages[k * (n + 1) : (k + 1) * (n + 1)]
        assert [m.scan_id for m in part] == [scan_id] * (n + 1)
        assert [m.header.get("seq") for m in part[:-1]] == list(range(n))
    # the schedule only ever waits, so the whole replay cannot be shorter than it
    assert stats.duration_s >= (repeat * n - 1) / rate_hz * 0.99


def test_replay_without_subscribers_fails_clearly(scan_dir: Path) -> None:
    with pytest.raises(UserError, match="0 of 1 subscriber"):
        replay_scan(scan_dir, free_endpoint(), timeout_s=0.3)


def fake_daemon(rig_endpoint: str, out_endpoint: str, ready: threading.Event) -> int:
    """Converts each tile to its negative, reports one conversion failure, forwards scan-end."""
    with zmq.Context() as ctx, ctx.socket(zmq.XPUB) as out, ctx.socket(zmq.SUB) as inp:
        out.linger, inp.linger = 2000, 0
        out.setsockopt(zmq.XPUB_VERBOSE, 1)
        out.bind(out_endpoint)
        ready.set()
        for _ in range(3):  # the consumer's sem/, error/ and scan-end/ subscriptions
            assert out.poll(int(TIMEOUT_S * 1000)), "consumer never subscribed"
            out.recv()
        inp.setsockopt(zmq.SUBSCRIBE, b"")
        inp.connect(rig_endpoint)
        converted = 0
        while True:
            assert inp.poll(int(TIMEOUT_S * 1000)), "rig sent nothing"
            frames = inp.recv_multipart()
            if frames[0].startswith(b"scan-end/"):
                end = decode_message(frames)
                out.send_multipart(encode_error(end.scan_id, ErrorCode.CONVERSION_FAILED, "test"))
                counts = {"converted": converted, "rejected": 0, "dropped": 0, "gaps": 0}
                out.send_multipart(encode_scan_end(end.scan_id, end.header | counts))
                return converted
            tile = decode_tile(frames)
            negative = 1.0 - tile.image.astype(np.float32) / 65535.0
            extra = {"model": "fake", "latency_ms": {"infer": 1.0, "total": 2.0 + tile.seq}}
            out.send_multipart(encode_result(tile.header, negative, extra))
            converted += 1


def test_consume_saves_tiles_logs_summary_and_mosaic(scan_dir: Path, tmp_path: Path) -> None:
    rig_endpoint, daemon_endpoint, out_dir = free_endpoint(), free_endpoint(), tmp_path / "out"
    ready = threading.Event()
    daemon = Background(lambda: fake_daemon(rig_endpoint, daemon_endpoint, ready))
    assert ready.wait(TIMEOUT_S)
    rig = Background(lambda: replay_scan(scan_dir, rig_endpoint, timeout_s=TIMEOUT_S))
    result = consume(daemon_endpoint, out_dir, timeout_s=TIMEOUT_S)
    rig.join()
    assert daemon.join() == ROWS * COLS
    assert result.completed == ["chip-7"] and not result.timed_out

    scan_out, recording = out_dir / "chip-7", read_scan(scan_dir)
    for tile in recording.tiles:
        saved = tifffile.imread(scan_out / "tiles" / f"r{tile.row:03d}_c{tile.col:03d}.tif")
        assert saved.dtype == np.uint16
        np.testing.assert_array_equal(saved, 65535 - recording.load_tile(tile))
    headers = [json.loads(line) for line in (scan_out / "tiles.jsonl").read_text().splitlines()]
    assert [h["seq"] for h in headers] == list(range(ROWS * COLS))
    assert all(h["model"] == "fake" and h["status"] == "ok" for h in headers)
    errors = [json.loads(line) for line in (scan_out / "errors.jsonl").read_text().splitlines()]
    assert [e["error"] for e in errors] == ["conversion_failed"]

    summary = json.loads((scan_out / "summary.json").read_text())
    assert summary == result.summaries["chip-7"]
    assert summary["complete"] and summary["tiles"] == ROWS * COLS and summary["errors"] == 1
    assert summary["missing_tiles"] == 0 and summary["scan_end"]["converted"] == ROWS * COLS
    totals = [2.0 + seq for seq in range(ROWS * COLS)]
    assert summary["latency_ms"]["daemon_total"]["p50"] == pytest.approx(np.median(totals))
    assert summary["latency_ms"]["capture_to_receive"]["n"] == ROWS * COLS

    expected_shape = ((ROWS - 1) * STEP_Y + TILE_H, (COLS - 1) * STEP_X + TILE_W)
    mosaic = np.squeeze(tifffile.imread(scan_out / "mosaic.ome.tif"))
    assert mosaic.shape == expected_shape and summary["mosaic_shape"] == list(expected_shape)
    assert (scan_out / "mosaic.png").is_file()


def test_consume_times_out_with_exit_code_1(tmp_path: Path, capsys) -> None:
    code = main(
        ["consume", "--endpoint", free_endpoint(), "--out", str(tmp_path), "--timeout", "0.2"]
    )
    assert code == 1
    assert "timed out" in capsys.readouterr().err


def test_rig_cli_reports_a_missing_scan_as_one_line(tmp_path: Path, capsys) -> None:
    assert main(["rig", "replay", str(tmp_path / "nope"), "--timeout", "0.2"]) == 2
    assert "scan.json" in capsys.readouterr().err


def test_curve_replay_reaches_an_authorized_subscriber(scan_dir: Path, tmp_path: Path) -> None:
    from edge.security import configure_client, generate_keypair
    from edge.transport import CurveOptions

    rig_public, rig_secret = generate_keypair(tmp_path / "rig", "rig")
    _, client_secret = generate_keypair(tmp_path / "clients", "daemon")
    curve = CurveOptions(rig_secret, authorized_clients=tmp_path / "clients")
    endpoint, started = free_endpoint(), time.time()
    replay = Background(lambda: replay_scan(scan_dir, endpoint, timeout_s=TIMEOUT_S, curve=curve))
    with zmq.Context() as ctx, ctx.socket(zmq.SUB) as sub:
        sub.linger = 0
        configure_client(sub, client_secret, rig_public)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(endpoint)
        messages = receive_all(sub)
    replay.join()
    assert_whole_scan(messages, scan_dir, "chip-7", started)


def test_rig_cli_replays_and_prints_a_summary(scan_dir: Path, capsys) -> None:
    endpoint = free_endpoint()
    with zmq.Context() as ctx, ctx.socket(zmq.PULL) as pull:
        pull.linger = 0
        pull.bind(endpoint)
        args = ["rig", "replay", str(scan_dir), "--endpoint", endpoint, "--socket", "push"]
        assert main([*args, "--connect", "--scan-id", "cli-run", "--timeout", "5"]) == 0
        messages = receive_all(pull)
    assert {m.scan_id for m in messages} == {"cli-run"} and len(messages) == ROWS * COLS + 1
    assert f"replayed {ROWS * COLS} tiles" in capsys.readouterr().out
