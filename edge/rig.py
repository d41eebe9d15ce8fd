"""`ssum rig replay`: publish a recorded scan over ZeroMQ exactly as the SSUM rig does (protocol v1).

PUB mode uses an XPUB socket and waits for subscriptions that cover the scan's topic before the
first tile, so a daemon that connects late (the slow-joiner problem) loses nothing. PUSH mode
blocks while the receiver is full (lossless). Pacing uses a monotonic schedule, so a slow send
delays one tile, not every later one.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import UserError

log = logging.getLogger(__name__)

SOCKET_KINDS = ("pub", "push")


@dataclass(frozen=True)
class CurveOptions:
    """CURVE keys for one socket: a bound socket is a server, a connecting one a client."""

    secret_key: Path
    authorized_clients: Path | None = None
    server_key: Path | None = None


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


def secure_socket(context: Any, socket: Any, curve: CurveOptions | None, bind: bool) -> Any:
    """Apply CURVE to `socket` before bind/connect; returns the CurveServer to stop, if any."""
    if curve is None:
        return None
    from edge.security import CurveServer, configure_client

    if bind:
        if curve.authorized_clients is None:
            raise UserError("a bound CURVE socket needs the authorized clients directory")
        server = CurveServer(context, curve.secret_key, curve.authorized_clients)
        server.apply(socket)
        return server
    if curve.server_key is None:
        raise UserError("a connecting CURVE socket needs the server's public key")
    configure_client(socket, curve.secret_key, curve.server_key)
    return None


def attach(socket: Any, endpoint: str, bind: bool) -> None:
    """Bind or connect, turning ZeroMQ's endpoint errors into a one-line UserError."""
    import zmq

    try:
        if bind:
            socket.bind(endpoint)
        else:
            socket.connect(endpoint)
    except zmq.ZMQError as exc:
        verb = "bind" if bind else "connect"
        raise UserError(f"cannot {verb} {endpoint}: {exc}") from exc


def wait_for_subscribers(socket: Any, topic: bytes, count: int, timeout_s: float) -> int:
    """Block until `count` subscriptions matching `topic` reached this XPUB socket."""
    import zmq

    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < count:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not socket.poll(remaining_ms, zmq.POLLIN):
            raise UserError(
                f"only {seen} of {count} subscriber(s) for {topic.decode()!r} after {timeout_s:g} s "
                "(is the daemon running and connected to this endpoint?)"
            )
        event = socket.recv()
        if event[:1] == b"\x01" and topic.startswith(event[1:]):
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
    import zmq

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
    from edge.protocol import encode_scan_end, encode_tile

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
    import zmq

    from edge.protocol import is_valid_scan_id
    from edge.scanfile import read_scan

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

    ctx = context or zmq.Context()
    sock = ctx.socket(zmq.XPUB if socket == "pub" else zmq.PUSH)
    sock.linger = int(timeout_s * 1000)
    sock.sndtimeo = int(timeout_s * 1000)
    if socket == "pub":
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
    server = secure_socket(ctx, sock, curve, bind)
    try:
        attach(sock, endpoint, bind)
        subscribers = 0
        if socket == "pub" and wait_subscribers > 0:
            topic = f"tile/{scan_ids[0]}".encode()
            subscribers = wait_for_subscribers(sock, topic, wait_subscribers, timeout_s)
        started = time.monotonic()
        wait = pacer(rate_hz)
        sent = 0
        for one_id in scan_ids:
            sent += publish_tiles(sock, recording, one_id, wait, first_index=sent)
            log.info("replayed scan %s (%d tiles)", one_id, len(recording.tiles))
        duration = time.monotonic() - started
    finally:
        sock.close()
        if server is not None:
            server.stop()
        if context is None:
            ctx.term()
    return ReplayStats(scan_ids, sent, len(scan_ids), subscribers, duration)


def add_curve_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("CURVE encryption (optional)")
    group.add_argument("--curve-secret-key", type=Path, help="this side's NAME.key_secret file")
    group.add_argument(
        "--curve-authorized-clients",
        type=Path,
        help="when binding: directory of the public *.key files admitted",
    )
    group.add_argument(
        "--curve-server-key", type=Path, help="when connecting: the server's public .key file"
    )


def curve_from_args(args: argparse.Namespace) -> CurveOptions | None:
    if args.curve_secret_key is None:
        if args.curve_authorized_clients or args.curve_server_key:
            raise UserError("CURVE options need --curve-secret-key")
        return None
    return CurveOptions(args.curve_secret_key, args.curve_authorized_clients, args.curve_server_key)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay",
        help="publish a scan recording as the rig would",
        description="Publish a scan recording (a directory with scan.json) tile by tile, in seq "
        "order, with protocol v1 headers, then a scan-end message.",
    )
    replay.add_argument("scan", type=Path, help="scan directory (or its scan.json)")
    replay.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint")
    replay.add_argument("--socket", choices=SOCKET_KINDS, default="pub", help="default: pub")
    mode = replay.add_mutually_exclusive_group()
    mode.add_argument("--bind", dest="bind", action="store_true", default=True, help="(default)")
    mode.add_argument("--connect", dest="bind", action="store_false")
    replay.add_argument("--rate", type=float, default=None, help="tiles per second (default: max)")
    replay.add_argument("--scan-id", default=None, help="override the recording's scan id")
    replay.add_argument("--repeat", type=int, default=1, help="send the scan N times (ids -rK)")
    replay.add_argument(
        "--wait-subscribers",
        type=int,
        default=1,
        help="pub: wait for N subscriptions covering the scan before sending (default 1)",
    )
    replay.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for peers (default 30)"
    )
    add_curve_arguments(replay)


def run(args: argparse.Namespace) -> int:
    stats = replay_scan(
        args.scan,
        args.endpoint,
        socket=args.socket,
        bind=args.bind,
        rate_hz=args.rate,
        scan_id=args.scan_id,
        wait_subscribers=args.wait_subscribers,
        timeout_s=args.timeout,
        curve=curve_from_args(args),
        repeat=args.repeat,
    )
    print(
        f"replayed {stats.tiles_sent} tiles in {stats.scan_ends_sent} scan(s) "
        f"({', '.join(stats.scan_ids)}) to {args.endpoint} in {stats.duration_s:.2f} s "
        f"({stats.rate_hz:.1f} tiles/s, {stats.subscribers} subscriber(s))"
    )
    return 0
