"""Argument groups shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.errors import UserError
from edge.transport import CurveOptions


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


def add_socket_arguments(parser: argparse.ArgumentParser, endpoint: str, kinds: tuple[str, ...],
                         bind: bool, what: str) -> None:
    """--endpoint, --socket (the first kind by default) and --bind/--connect."""
    parser.add_argument("--endpoint", default=endpoint, help=f"{what} (default {endpoint})")
    parser.add_argument("--socket", choices=kinds, default=kinds[0], help=f"default: {kinds[0]}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--bind", dest="bind", action="store_true", default=bind,
                      help="(default)" if bind else None)
    mode.add_argument("--connect", dest="bind", action="store_false",
                      help=None if bind else "(default)")


def add_inputs_and_out(parser: argparse.ArgumentParser, inputs: str, out: str) -> None:
    """IMAGE... (files or folders of them) and --out DIR."""
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help=inputs)
    parser.add_argument("--out", type=Path, required=True, help=out)
