"""`ssum export`: a trained generator as a model bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.inference.signing import sign_bundle
from trainer.export import export_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="RUN/checkpoints/best.pt (or last.pt)")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--name", help="bundle name (default: the run folder's name)")
    parser.add_argument("--patch-size", type=int, default=256,
                        help="recommended tile size for inference (multiple of 4)")
    parser.add_argument("--data", type=Path, default=None,
                        help="the training pairs folder whose trust statistics are recorded "
                             "(default: the one the run was trained on)")
    parser.add_argument("--sign-key", type=Path, default=None,
                        help="sign the manifest with this NAME.sign.key_secret")


def run(args: argparse.Namespace) -> int:
    bundle = export_checkpoint(args.checkpoint, args.out, args.name, args.patch_size, args.data)
    print(f"wrote bundle {bundle}")
    if args.sign_key is not None:
        print(f"signed: {sign_bundle(bundle, args.sign_key)}")
    return 0
