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
