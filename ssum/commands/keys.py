"""`ssum keys`: CURVE key pairs for the sockets, Ed25519 key pairs for signing bundles."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.inference.signing import generate_signing_keypair
from edge.security import generate_keypair, load_public_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate",
        help="write NAME.key (public) and NAME.key_secret (secret, mode 0600)",
        description="Generate a CURVE key pair (--kind curve: NAME.key, NAME.key_secret) or a "
        "bundle signing key pair (--kind signing: NAME.sign.pub, NAME.sign.key_secret). Copy the "
        "public file to the peers that must trust it; the secret one never leaves this machine.",
    )
    generate.add_argument("--kind", choices=("curve", "signing"), default="curve",
                          help="curve (ZeroMQ sockets, default) or signing (model bundles)")
    generate.add_argument("--out", type=Path, required=True, help="directory for the key files")
    generate.add_argument("--name", required=True, help="key name, e.g. edge, rig, consumer-1")
    generate.add_argument("--force", action="store_true", help="replace an existing pair")
    show = actions.add_parser("show", help="print the public key held in a key file")
    show.add_argument("file", type=Path, help="a .key or .key_secret file")


def run(args: argparse.Namespace) -> int:
    if args.action == "generate":
        make = generate_keypair if args.kind == "curve" else generate_signing_keypair
        public, secret = make(args.out, args.name, overwrite=args.force)
        print(f"public key: {public}")
        print(f"secret key: {secret} (mode 0600; keep it on this machine)")
        return 0
    print(load_public_key(args.file).decode())
    return 0
