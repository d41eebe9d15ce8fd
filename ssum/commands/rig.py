"""`ssum rig replay`: publish a recorded scan over ZeroMQ as the SSUM rig does."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.tools.rig import SOCKET_KINDS, replay_scan
from ssum.arguments import add_curve_arguments, add_socket_arguments, curve_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay",
        help="publish a scan recording as the rig would",
        description="Publish a scan recording (a directory with scan.json) tile by tile, in seq "
        "order, with protocol v1 headers, then a scan-end message.",
    )
    replay.add_argument("scan", type=Path, help="scan directory (or its scan.json)")
    add_socket_arguments(replay, "tcp://127.0.0.1:5555", SOCKET_KINDS, bind=True,
                         what="ZeroMQ endpoint")
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
