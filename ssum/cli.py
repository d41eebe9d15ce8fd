"""The `ssum` command: one entry point; each subcommand is a module of ssum.commands.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`. Only the chosen
command's module is imported, so `ssum edge ...` never imports the trainer or torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge.errors import UserError

# command -> one-line help; its module is ssum.commands.<command>
COMMANDS: dict[str, str] = {
    "synth": "simulate chip layouts, SEM and SSUM images (pairs, scans)",
    "eval": "evaluate predicted images against references",
    "train": "train the CycleGAN (or pix2pix) generator",
    "export": "export a trained generator as a model bundle",
    "calibrate": "quantize a bundle to INT8/FP16 behind a quality gate",
    "bundle": "what a model bundle is; sign and verify its manifest",
    "edge": "the conversion daemon (run, build-engine, check-config)",
    "rig": "rig tools: replay a recorded scan as the SSUM rig publishes it",
    "convert": "convert image files offline with a model bundle",
    "consume": "reference client: save converted tiles and the mosaic",
    "view": "live web view of the scan being converted",
    "inspect": "find defects in images by comparison with a reference (offline)",
    "keys": "generate CURVE key pairs for the ZeroMQ sockets",
    "demo": "end-to-end demo: simulate, serve, replay, consume, compare",
}


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<10} {help_}" for name, help_ in COMMANDS.items()]
    parser = argparse.ArgumentParser(
        prog="ssum",
        description="ssum-edge: SSUM optical super-resolution to SEM-like images.",
        epilog="commands:\n" + "\n".join(lines) + "\n\n'ssum COMMAND --help' for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    split = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    top_args = top.parse_args(argv[: split + 1])
    logging.basicConfig(
        level=logging.DEBUG if top_args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(f"ssum.commands.{top_args.command}")
    parser = argparse.ArgumentParser(prog=f"ssum {top_args.command}",
                                     description=COMMANDS[top_args.command])
    module.add_arguments(parser)
    args = parser.parse_args(argv[split + 1 :])
    try:
        return int(module.run(args) or 0)
    except UserError as exc:
        print(f"ssum {top_args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ssum {top_args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
