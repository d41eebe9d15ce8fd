"""Rig replay: publish a recorded scan over ZeroMQ exactly as the SSUM rig does (protocol v1).

PUB mode uses an XPUB socket and waits for subscriptions that cover the scan's topic before the
first tile, so a daemon that connects late (the slow-joiner problem) loses nothing. PUSH mode
blocks while the receiver is full (lossless). Pacing uses a monotonic schedule, so a slow send
delays one tile, not every later one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from edge.errors import UserError
from edge.protocol import Kind, encode_scan_end, encode_tile, is_valid_scan_id, topic
from edge.tools.scanfile import read_scan
from edge.transport import CurveOptions, SocketOptions, socket_in

log = logging.getLogger(__name__)

SOCKET_KINDS = ("pub", "push")


@dataclass
class ReplayStats:
    scan_ids: list[str]
    tiles_sent: int
    scan_ends_sent: int
    subscribers: int
    duration_s: float

    @property
    def rate_hz(self) -> float:
        return self.tiles_sent / self.duration_s if self.duration_s > 0 else 0.0


def wait_for_subscribers(socket: Any, scan_topic: bytes, count: int, timeout_s: float) -> int:
    """Block until `count` subscriptions covering `scan_topic` reached this XPUB socket."""
    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < count:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not socket.poll(remaining_ms, zmq.POLLIN):
            raise UserError(
                f"only {seen} of {count} subscriber(s) for {scan_topic.decode()!r} after {timeout_s:g} s "
                "(is the daemon running and connected to this endpoint?)"
            )
        event = socket.recv()
        if event[:1] == b"\x01" and scan_topic.startswith(event[1:]):
            seen += 1
            log.info("subscriber %d/%d: prefix %r", seen, count, event[1:].decode(errors="replace"))
    return seen


def pacer(rate_hz: float | None) -> Callable[[int], None]:
    """A function that sleeps until message `i` is due on a drift-free monotonic schedule."""
    if not rate_hz:
        return lambda i: None
    start = time.monotonic()

    def wait(i: int) -> None:
        delay = start + i / rate_hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    return wait


def _send(socket: Any, frames: list[bytes], what: str) -> None:
    try:
        socket.send_multipart(frames, copy=False)
    except zmq.Again as exc:
        raise UserError(f"no receiver took {what} in time (is the daemon up?)") from exc


def publish_tiles(
    socket: Any, recording: Any, scan_id: str, wait: Callable[[int], None], first_index: int = 0
) -> int:
    """Send every tile of `recording` under `scan_id` in seq order, then its scan-end.

    `t_capture` is set at send time. Returns the number of tiles sent.
    """
    for i, tile in enumerate(recording.tiles):
        image = recording.load_tile(tile)
        wait(first_index + i)
        header = recording.header(tile) | {"scan_id": scan_id, "t_capture": time.time()}
        _send(socket, encode_tile(header, image), f"tile seq {tile.seq} of {scan_id}")
    n_tiles = len(recording.tiles)
    _send(socket, encode_scan_end(scan_id, {"n_tiles": n_tiles}), f"the scan-end of {scan_id}")
    return n_tiles


def replay_scan(
    scan_path: str | Path,
    endpoint: str,
    socket: str = "pub",
    bind: bool = True,
    rate_hz: float | None = None,
    scan_id: str | None = None,
    wait_subscribers: int = 1,
    timeout_s: float = 30,
    context: Any = None,
    curve: CurveOptions | None = None,
    repeat: int = 1,
) -> ReplayStats:
    """Replay a scan recording `repeat` times; repeats get scan ids `<id>-r1`, `<id>-r2`, ..."""
    if socket not in SOCKET_KINDS:
        raise UserError(f"socket must be one of {', '.join(SOCKET_KINDS)}, got {socket!r}")
    if rate_hz is not None and rate_hz <= 0:
        raise UserError(f"rate must be > 0 Hz, got {rate_hz}")
    if repeat < 1:
        raise UserError(f"repeat must be >= 1, got {repeat}")
    recording = read_scan(scan_path)
    base_id = scan_id or recording.scan_id
    if not is_valid_scan_id(base_id):
        raise UserError(f"scan id {base_id!r} must be non-empty, without '/' or whitespace")
    scan_ids = [base_id] if repeat == 1 else [f"{base_id}-r{k}" for k in range(1, repeat + 1)]

    timeout_ms = int(timeout_s * 1000)
    options = SocketOptions(curve=curve, linger_ms=timeout_ms, timeout_ms=timeout_ms,
                            xpub_verbose=socket == "pub")
    kind = zmq.XPUB if socket == "pub" else zmq.PUSH
    with socket_in(context, kind, endpoint, bind, options) as sock:
        subscribers = 0
        if socket == "pub" and wait_subscribers > 0:
            first = topic(Kind.TILE, scan_ids[0]).encode()
            subscribers = wait_for_subscribers(sock, first, wait_subscribers, timeout_s)
        started = time.monotonic()
        wait = pacer(rate_hz)
        sent = 0
        for one_id in scan_ids:
            sent += publish_tiles(sock, recording, one_id, wait, first_index=sent)
            log.info("replayed scan %s (%d tiles)", one_id, len(recording.tiles))
        duration = time.monotonic() - started
    return ReplayStats(scan_ids, sent, len(scan_ids), subscribers, duration)
