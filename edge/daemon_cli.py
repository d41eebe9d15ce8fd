"""`ssum edge run | check-config | build-engine`: the conversion daemon's command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import UserError

if TYPE_CHECKING:
    from edge.config import EdgeConfig

log = logging.getLogger(__name__)

OVERRIDE_FLAGS = {
    "input_endpoint": "input.endpoint",
    "output_endpoint": "output.endpoint",
    "metrics_port": "metrics.port",
    "bundle": "model.bundle",
    "backend": "model.backend",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run_parser = actions.add_parser(
        "run", help="run the conversion daemon",
        description="Receive OSR tiles over ZeroMQ, convert them, publish SEM-like tiles. "
        "SIGTERM/SIGINT drain what is in flight and exit 0.",
    )
    _config_argument(run_parser)
    run_parser.add_argument("--input-endpoint", help="override [input] endpoint")
    run_parser.add_argument("--output-endpoint", help="override [output] endpoint")
    run_parser.add_argument("--metrics-port", type=int, help="override [metrics] port (0 = any)")
    run_parser.add_argument("--bundle", help="override [model] bundle")
    run_parser.add_argument("--backend", help="override [model] backend")
    check = actions.add_parser(
        "check-config", help="validate a configuration and print the effective one",
    )
    _config_argument(check)
    engine = actions.add_parser(
        "build-engine", help="build the TensorRT engine for a bundle (calibration package)",
    )
    engine.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the engine build")


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None,
        help="daemon TOML file (default: built-in defaults; see docs/configuration.md)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {key: getattr(args, flag, None) for flag, key in OVERRIDE_FLAGS.items()}


def run(args: argparse.Namespace) -> int:
    from edge.config import load_config, to_toml

    if args.action == "build-engine":
        return _build_engine(args.rest)
    config = load_config(args.config, _overrides(args))
    if args.action == "check-config":
        print(f"# {config.source}: valid; effective configuration:")
        print(to_toml(config), end="")
        return 0
    return _run_daemon(config)


def _run_daemon(config: EdgeConfig) -> int:
    from edge.daemon import Daemon

    root = logging.getLogger()
    if root.level != logging.DEBUG:
        root.setLevel(config.log.level)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    daemon = Daemon(config)
    daemon.start()
    if daemon.metrics_port is not None:
        log.info("metrics endpoint: http://%s:%d/metrics",
                 config.metrics.host, daemon.metrics_port)
    return daemon.serve_forever(stop)


def _build_engine(rest: list[str]) -> int:
    """Delegate to calibration.engine, which builds and caches TensorRT engines."""
    try:
        engine = importlib.import_module("calibration.engine")
    except ImportError as exc:
        raise UserError(
            "TensorRT engine build is provided by the calibration package "
            f"(calibration.engine), which is not available here: {exc}"
        ) from exc
    main = getattr(engine, "main", None)
    if main is None:
        raise UserError("calibration.engine has no main(); run `ssum calibrate --help` instead")
    return int(main(rest) or 0)
