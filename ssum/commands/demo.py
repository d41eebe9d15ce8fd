"""`ssum demo`: the whole product on one machine (see ssum/demo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import UserError
from edge.inference.bundle import default_bundle_path
from ssum.demo import print_report, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default demo-out)")
    parser.add_argument("--bundle", type=Path, default=None, help="model bundle (default: the shipped one)")
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--cols", type=int, default=3)
    parser.add_argument("--tile", type=int, default=512, help="camera tile size in px")
    parser.add_argument("--seed", type=int, default=7, help="simulated chip (not a training seed)")
    parser.add_argument("--rate", type=float, default=0.4,
                        help="replay rate in tiles/s (default 0.4, below a 2-core CPU's throughput, so "
                             "latency is conversion time, not queueing; 0: as fast as possible)")


def run(args: argparse.Namespace) -> int:
    if args.rows < 1 or args.cols < 1 or args.tile < 128:
        raise UserError("--rows and --cols must be >= 1 and --tile >= 128")
    bundle = args.bundle or default_bundle_path()
    if args.rate < 0:
        raise UserError("--rate must not be negative")
    print_report(run_demo(args.out, bundle, args.rows, args.cols, args.tile, args.seed, args.rate or None))
    return 0
