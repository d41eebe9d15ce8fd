"""`ssum view`: a web page showing the current scan's mosaic filling in as tiles are converted."""

from __future__ import annotations

import argparse
import threading

from edge.tools.view import ViewServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5556",
                        help="the daemon's PUB output (default tcp://127.0.0.1:5556)")
    parser.add_argument("--rig", default=None,
                        help="the rig's PUB output, to show the input mosaic too")
    parser.add_argument("--host", default="127.0.0.1", help="address of the page (default "
                        "127.0.0.1; the page has no authentication)")
    parser.add_argument("--port", type=int, default=8008, help="port of the page (default 8008)")


def run(args: argparse.Namespace) -> int:
    server = ViewServer(args.endpoint, args.rig, args.host, args.port)
    print(f"live view at {server.url} (Ctrl-C to stop)")
    try:
        threading.Event().wait()
    finally:
        server.close()
    return 0
