"""`ssum edge run | check-config | build-engine`: the conversion daemon's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.errors import UserError
from edge.inference.backends import tensorrt_build
from edge.inference.bundle import PRECISIONS, default_bundle_path, load_bundle
from edge.inference.converter import GPU_BATCH
from edge.inference.engine_cache import EngineCache
from edge.serve.config_file import load_config, to_toml
from edge.serve.daemon import run_daemon
from edge.tools.supervise import request_reload

# flag -> the configuration key it overrides
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
    reload = actions.add_parser(
        "reload", help="hot-swap the running daemon's model (what systemctl reload runs)",
        description="Asks the daemon on [metrics] host:port (or --url) to load the bundle its "
        "[model] names now beside the serving one, warm it up and swap it in between batches. "
        "Exit code 0 when it serves the new (or the unchanged) model, 1 when the old model "
        "kept serving because the new one failed (the reason is printed).",
    )
    _config_argument(reload)
    reload.add_argument("--url", default=None,
                        help="the daemon's endpoint, e.g. http://127.0.0.1:9108 (default: from "
                             "the configuration)")
    reload.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait (a TensorRT engine build can take minutes)")
    engine = actions.add_parser(
        "build-engine", help="build (or find) the TensorRT engine for a bundle in the engine cache",
        description="The daemon builds a missing engine itself at start-up when its backend is "
        "tensorrt; this does it ahead of time (after installing a bundle, a GPU or TensorRT).",
    )
    engine.add_argument("--bundle", type=Path, default=None,
                        help="model bundle (default: models/default)")
    engine.add_argument("--precision", choices=PRECISIONS, default="fp16")
    engine.add_argument("--max-batch", type=int, default=0,
                        help="largest batch of patches: the daemon's [batching] max_batch "
                             f"(default 0, as the daemon's: {GPU_BATCH} on a GPU)")
    engine.add_argument("--workspace-mb", type=int, default=tensorrt_build.DEFAULT_WORKSPACE >> 20)
    engine.add_argument("--device", type=int, default=0, help="CUDA device index")
    engine.add_argument("--cache", type=Path, default=None,
                        help="engine cache (default: $SSUM_ENGINE_CACHE, else "
                             "$XDG_CACHE_HOME/ssum-edge/engines)")


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None,
        help="daemon TOML file (default: built-in defaults; see docs/configuration.md)",
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "build-engine":
        return _build_engine(args)
    overrides = {key: getattr(args, flag, None) for flag, key in OVERRIDE_FLAGS.items()}
    config = load_config(args.config, overrides)
    if args.action == "reload":
        return _reload(args.url or f"http://{config.metrics.host}:{config.metrics.port}",
                       args.timeout)
    if args.action == "check-config":
        print(f"# {config.source}: valid; effective configuration:")
        print(to_toml(config), end="")
        return 0
    return run_daemon(config)


def _reload(url: str, timeout_s: float) -> int:
    answer = request_reload(url, timeout_s)
    if answer.get("ok"):
        changed = "now serving" if answer.get("changed") else "unchanged, still serving"
        print(f"reloaded: {changed} {answer.get('model')}")
        return 0
    print(f"reload failed, still serving {answer.get('model')}: {answer.get('error')}",
          file=sys.stderr)
    return 1


def _build_engine(args: argparse.Namespace) -> int:
    if args.max_batch < 0 or args.workspace_mb < 1:
        raise UserError("--max-batch must be >= 0 and --workspace-mb positive")
    bundle = load_bundle(args.bundle or default_bundle_path())
    bundle.model("onnx", args.precision)  # a clear error before touching the GPU
    tensorrt_build.require_tensorrt()
    path, key = tensorrt_build.ensure_engine(bundle, args.precision, args.max_batch or GPU_BATCH,
                                             EngineCache(args.cache), args.workspace_mb << 20,
                                             args.device)
    print(f"engine {path}")
    print(f"key {key.digest()}: {key.gpu_name} (sm {key.compute_capability}), TensorRT "
          f"{key.tensorrt_version}, {key.precision}, profile max {key.profile[2]}")
    return 0
