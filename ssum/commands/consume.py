"""`ssum consume`: save the daemon's converted tiles, errors and scan mosaics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.tools.consume import SOCKET_KINDS, consume
from ssum.arguments import add_curve_arguments, add_socket_arguments, curve_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_arguments(parser, "tcp://127.0.0.1:5556", SOCKET_KINDS, bind=False,
                         what="the daemon's output")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--scans", type=int, default=1, help="exit after N scan-ends (default 1)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="give up after S seconds without any message (default 60; exit code 1)",
    )
    parser.add_argument(
        "--mosaic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stitch mosaic.ome.tif at scan-end (default on)",
    )
    parser.add_argument(
        "--refine", action="store_true", help="refine stage positions by image registration"
    )
    add_curve_arguments(parser)


def run(args: argparse.Namespace) -> int:
    result = consume(
        args.endpoint,
        args.out,
        socket=args.socket,
        bind=args.bind,
        scans=args.scans,
        timeout_s=args.timeout,
        mosaic=args.mosaic,
        refine=args.refine,
        curve=curve_from_args(args),
    )
    for summary in result.summaries.values():
        latency = summary["latency_ms"]["capture_to_receive"] or {}
        print(
            f"{summary['scan_id']}: {summary['tiles']} tiles, {summary['errors']} errors, "
            f"{summary['defects']} defects, "
            f"{'complete' if summary['complete'] else 'INCOMPLETE'}, capture->receive p50 "
            f"{latency.get('p50', float('nan')):.1f} ms p99 {latency.get('p99', float('nan')):.1f} ms"
            f" -> {args.out / summary['scan_id']}"
        )
    if result.timed_out:
        print(
            f"ssum consume: timed out: nothing received for {args.timeout:g} s "
            f"({len(result.completed)} of {args.scans} scan(s) complete)",
            file=sys.stderr,
        )
        return 1
    return 0
