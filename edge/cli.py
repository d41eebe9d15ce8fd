"""The `ssum` command: one entry point, subcommands implemented in their own modules.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`, and keeps heavy
imports (torch, onnxruntime) inside `run`. Modules are imported only when their subcommand is
chosen, so `ssum edge ...` never imports the trainer or torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge.errors import UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("trainer.sim.cli", "simulate chip layouts, SEM and SSUM images (pairs, scans)"),
    "eval": ("trainer.evaluation.cli", "evaluate predicted images against references"),
    "train": ("trainer.train_cli", "train the CycleGAN (or pix2pix) generator"),
    "export": ("trainer.export", "export a trained generator as a model bundle"),
    "calibrate": ("calibration.cli", "quantize a bundle to INT8/FP16 behind a quality gate"),
    "edge": ("edge.daemon_cli", "the conversion daemon (run, build-engine, check-config)"),
    "rig": ("edge.rig", "rig tools: replay a recorded scan as the SSUM rig publishes it"),
    "convert": ("edge.convert", "convert image files offline with a model bundle"),
    "consume": ("edge.consume", "reference client: save converted tiles and the mosaic"),
    "keys": ("edge.keys", "generate CURVE key pairs for the ZeroMQ sockets"),
    "demo": ("trainer.demo", "end-to-end demo: simulate, serve, replay, consume, compare"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
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
    module_name, help_ = COMMANDS[top_args.command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"ssum {top_args.command}", description=help_)
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
