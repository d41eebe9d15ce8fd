"""`make bench`: the bare backend's tiles/s against the daemon's end-to-end tiles/s, in one run.

Three measurements on the same simulated camera tiles and the same engine (bundle, backend,
threads, tiler) as the daemon builds from its config:
  backend  only `backend.infer` over the tiles' patches, batched across tiles: once at each
           batch of SWEEP (what the batch costs), and in the paired rounds at the daemon's batch
           (the ceiling);
  daemon   a real daemon process: tiles PUSHed to its PULL socket as fast as it takes them,
           results SUBscribed from its PUB socket; tiles/s from first send to last result.
           Backend and daemon alternate in --rounds paired rounds (the daemon idle while the
           backend runs), each ratio taken within its round, the median reported; and, with
           one patch per call, against the daemon's own inference in that stream (its tiles'
           inference calls summed: its one inference thread busy all the time), the ceiling
           in the daemon's own process and session;
  latency  one tile at a time through the daemon, as at the rig's rate (each tile sent once the
           previous result is in): per tile, the round trip at the client split into the
           daemon's stages (its `latency_ms` header) and the wire; the latency the daemon adds is
           the round trip less the tile's compute (preprocess + infer + blend + trust), p50 and p99;
           beside it the part inside the daemon (its receive -> publish stamps less compute).
Writes bench/results/daemon_<device>.json with the machine described.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.inference.bundle import default_bundle_path, load_bundle
from edge.inference.converter import Converter
from edge.protocol import Kind, decode_message, encode_tile, topic
from edge.serve.config_file import build_config, load_config, to_toml
from edge.serve.loader import load_converter
from edge.tools.supervise import NotifyListener, free_port, start_daemon, stop_daemon


def relative(path: Path) -> str:
    """A path as the results record it: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def machine() -> dict[str, Any]:
    import onnxruntime

    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}


def make_tiles(n: int, size: int, seed: int) -> list[np.ndarray]:
    """Simulated SSUM camera tiles (16-bit), as the rig sends them."""
    from trainer.sim.pairs import make_pair

    return [np.round(make_pair(seed + i, size=size)[0] * 65535).astype(np.uint16) for i in range(n)]


def tile_header(scan_id: str, seq: int, size: int) -> dict[str, Any]:
    return {"scan_id": scan_id, "seq": seq, "row": 0, "col": seq, "x_nm": seq * size * 10.0,
            "y_nm": 0.0, "pixel_size_nm": 10.0, "t_capture": time.time()}


def write_config(path: Path, bundle: Path, ports: dict[str, int], threads: int, max_batch: int,
                 window: str, trust: str) -> Path:
    """The daemon's edge.toml: PULL in (lossless, back-pressured), PUB out; `[trust] mode`."""
    config = build_config({
        "input": {"socket": "pull", "endpoint": f"tcp://127.0.0.1:{ports['input']}", "mode": "bind"},
        "output": {"socket": "pub", "endpoint": f"tcp://127.0.0.1:{ports['output']}"},
        "model": {"bundle": str(bundle), "threads": threads}, "tiling": {"window": window},
        "batching": {"max_batch": max_batch}, "queues": {"overload": "block"},
        "trust": {"mode": trust}, "metrics": {"port": ports["metrics"]}, "log": {"level": "WARNING"}}, "bench")
    path.write_text(to_toml(config))
    return path


SWEEP = (1, 2, 4, 8)


def bench_backend(engine: Converter, tiles: list[np.ndarray], batch: int) -> dict[str, float]:
    """Inference alone over every tile's patches in calls of `batch`, batched across tiles like
    the daemon, after a warm-up call of that batch."""
    patches = np.concatenate([engine.tiler.split(engine.prepare(t))[0] for t in tiles])
    engine.backend.infer(patches[:batch])
    start = time.perf_counter()
    for i in range(0, len(patches), batch):
        engine.backend.infer(patches[i : i + batch])
    elapsed = time.perf_counter() - start
    return {"batch": batch, "tiles_per_s": len(tiles) / elapsed,
            "patches_per_tile": len(patches) / len(tiles), "seconds": elapsed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def batch_sweep(engine: Converter, tiles: list[np.ndarray]) -> list[dict[str, float]]:
    """The backend alone at each batch of SWEEP, smallest first (the peak RSS only grows, so
    each row's growth over the previous is what its batch costs)."""
    return [bench_backend(engine, tiles, batch) for batch in SWEEP]


def convert_in_process(engine: Converter, tile: np.ndarray, max_batch: int) -> float:
    """Seconds to convert one tile in process: preprocess, split, infer, merge."""
    start = time.perf_counter()
    patches, plan = engine.tiler.split(engine.prepare(tile))
    outputs = [engine.backend.infer(patches[i : i + max_batch])
               for i in range(0, len(patches), max_batch)]
    engine.tiler.merge(np.concatenate(outputs), plan)
    return time.perf_counter() - start


class DaemonClient:
    """PUSH tiles into the daemon, SUBscribe to its results."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.connect(f"tcp://127.0.0.1:{ports['input']}")
        self.sub = self.context.socket(zmq.SUB)
        for kind in (Kind.SEM, Kind.ERROR):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic(kind).encode())
        self.sub.connect(f"tcp://127.0.0.1:{ports['output']}")

    def receive(self, timeout_s: float = 120.0) -> Any:
        if not self.sub.poll(int(timeout_s * 1000)):
            raise RuntimeError(f"no result from the daemon within {timeout_s:.0f} s")
        message = decode_message(self.sub.recv_multipart())
        if message.kind != Kind.SEM:
            raise RuntimeError(f"the daemon answered with {message.kind}: {message.header}")
        return message

    def round_trip(self, scan_id: str, seq: int, tile: np.ndarray) -> dict[str, float]:
        """One tile's round trip (ms) and the daemon's stage times for it (ms)."""
        start = time.perf_counter()
        self.push.send_multipart(encode_tile(tile_header(scan_id, seq, tile.shape[1]), tile))
        message = self.receive()
        return {"round_trip": 1000 * (time.perf_counter() - start),
                **message.header["latency_ms"]}

    def stream(self, scan_id: str, tiles: list[np.ndarray]) -> tuple[float, list[dict[str, float]]]:
        """Seconds from the first tile sent to the last result received, and each result's
        stage times (ms)."""
        received: list[float] = []
        stages: list[dict[str, float]] = []
        errors: list[Exception] = []

        def collect() -> None:
            try:
                for _ in tiles:
                    stages.append(self.receive().header["latency_ms"])
                received.append(time.perf_counter())
            except (RuntimeError, zmq.ZMQError) as exc:
                errors.append(exc)

        collector = threading.Thread(target=collect)
        collector.start()
        start = time.perf_counter()
        for seq, tile in enumerate(tiles):
            self.push.send_multipart(encode_tile(tile_header(scan_id, seq, tile.shape[1]), tile))
        collector.join()
        if errors:
            raise RuntimeError(f"streaming failed: {errors[0]}")
        return received[0] - start, stages

    def close(self) -> None:
        self.context.destroy(linger=0)


def bench_daemon(config: Path, ports: dict[str, int], tiles: list[np.ndarray],
                 latency_tiles: int, engine: Converter, rounds: int) -> dict[str, Any]:
    """One daemon process: the latency pass, then `rounds` paired rounds of the backend alone
    (in this process, the daemon idle) and the daemon streaming the same tiles. The machine's
    speed drifts by tens of per cent over minutes; paired rounds put each ratio on one speed."""
    with tempfile.TemporaryDirectory(prefix="ssum-bench-") as tmp:
        notify = NotifyListener(Path(tmp))
        daemon = start_daemon(config, notify, Path(tmp) / "daemon.log")
        client = DaemonClient(ports)
        try:
            time.sleep(0.5)  # the subscription reaches the daemon's PUB socket
            client.round_trip("bench-warmup", 0, tiles[0])
            round_trips = [client.round_trip("bench-latency", i, tiles[i % len(tiles)])
                           for i in range(latency_tiles)]
            paired = []
            for r in range(rounds):
                backend = bench_backend(engine, tiles, engine.max_batch)
                elapsed, stages = client.stream(f"bench-stream-{r}", tiles)
                infer_s = sum(t["infer"] for t in stages) / 1000
                paired.append({"backend_tiles_per_s": backend["tiles_per_s"],
                               "daemon_tiles_per_s": len(tiles) / elapsed,
                               "daemon_infer_tiles_per_s": len(tiles) / infer_s})
        except RuntimeError as exc:
            log = (Path(tmp) / "daemon.log").read_text()[-2000:]
            raise SystemExit(f"bench: {exc}\n--- daemon log ---\n{log}") from None
        finally:
            client.close()
            stop_daemon(daemon)
            notify.close()
    return {"rounds": paired, "round_trips": round_trips}


COMPUTE_STAGES = ("preprocess", "infer", "blend", "trust")


def latency_breakdown(round_trips: list[dict[str, float]]) -> dict[str, Any]:
    """p50/p99 (ms) of each stage, of the wire (round trip less the daemon's total) and of the
    added latency (round trip less compute), over tiles sent one at a time."""
    def percentiles(values: list[float]) -> dict[str, float]:
        return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
                "max": float(np.max(values))}

    columns = {key: [t[key] for t in round_trips] for key in round_trips[0]}
    columns["compute"] = [sum(t[k] for k in COMPUTE_STAGES) for t in round_trips]
    columns["wire"] = [t["round_trip"] - t["total"] for t in round_trips]
    columns["added"] = [t["round_trip"] - c for t, c in zip(round_trips, columns["compute"])]
    columns["in_daemon"] = [t["total"] - c for t, c in zip(round_trips, columns["compute"])]
    return {key: percentiles(values) for key, values in columns.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--tiles", type=int, default=12, help="tiles per throughput pass")
    parser.add_argument("--tile", type=int, default=512, help="tile size in px")
    parser.add_argument("--rounds", type=int, default=3,
                        help="paired rounds of the backend alone and the daemon (default 3)")
    parser.add_argument("--latency-tiles", type=int, default=100,
                        help="tiles sent one at a time for the latency breakdown (default 100)")
    parser.add_argument("--max-batch", type=int, default=0,
                        help="the daemon's [batching] max_batch (default 0, its default: chosen "
                             "for the device)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    parser.add_argument("--window", default="hann")
    parser.add_argument("--trust", choices=("every", "off"), default="every",
                        help="the daemon's [trust] mode (every: its default; off: the same work "
                             "as the backend-alone ceiling)")
    parser.add_argument("--suffix", default="", help="results file: daemon_cpu<SUFFIX>.json")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: bench/results/daemon_cpu<SUFFIX>.json")
    args = parser.parse_args(argv)
    args.out = args.out or REPO / f"bench/results/daemon_cpu{args.suffix}.json"

    bundle = Path(args.bundle or default_bundle_path())
    load_bundle(bundle)
    tiles = make_tiles(args.tiles, args.tile, seed=424242)
    ports = {name: free_port() for name in ("input", "output", "metrics")}
    with tempfile.TemporaryDirectory(prefix="ssum-bench-config-") as tmp:
        config = write_config(Path(tmp) / "edge.toml", bundle, ports, args.threads,
                              args.max_batch, args.window, args.trust)
        engine = load_converter(load_config(config))
        labels, batch = engine.model_info, engine.max_batch
        sweep = batch_sweep(engine, tiles)
        compute_ms = [1000 * convert_in_process(engine, tiles[i % len(tiles)], batch)
                      for i in range(min(args.latency_tiles, 5))]
        try:
            daemon = bench_daemon(config, ports, tiles, args.latency_tiles, engine, args.rounds)
        finally:
            engine.close()
    rounds = daemon["rounds"]
    ratios = [r["daemon_tiles_per_s"] / r["backend_tiles_per_s"] for r in rounds]
    # The daemon's one inference thread can be busy at most all the time: with one tile per
    # call, tiles / (sum of their inference calls) is a ceiling in its own process and session.
    own = [r["daemon_tiles_per_s"] / r["daemon_infer_tiles_per_s"] for r in rounds] \
        if batch == 1 else []
    latency = latency_breakdown(daemon["round_trips"])
    added_ms = latency["added"]
    result = {
        "benchmark": "daemon_vs_backend", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench (python bench/run.py " + " ".join(argv or sys.argv[1:]) + ")",
        "machine": machine(), "model": labels, "bundle": relative(bundle),
        "tile_px": args.tile, "tiles": args.tiles, "max_batch_config": args.max_batch,
        "daemon_batch": batch, "threads": args.threads, "window": args.window,
        "trust_mode": args.trust, "backend_batch_sweep": sweep, "paired_rounds": rounds,
        "backend_tiles_per_s": float(np.median([r["backend_tiles_per_s"] for r in rounds])),
        "patches_per_tile": sweep[0]["patches_per_tile"],
        "daemon_tiles_per_s": float(np.median([r["daemon_tiles_per_s"] for r in rounds])),
        "ratio_daemon_to_backend": float(np.median(ratios)), "ratios_per_round": ratios,
        "ratio_daemon_to_own_inference": float(np.median(own)) if own else None,
        "ratios_to_own_inference_per_round": own,
        "target_ratio": 0.95,
        "in_process_tile_ms_median": float(np.median(compute_ms)),
        "latency_ms": latency, "daemon_added_latency_ms": added_ms, "target_added_p99_ms": 5.0,
        "round_trips_ms": daemon["round_trips"], "in_process_tile_ms": compute_ms,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"backend alone, batch sweep ({result['patches_per_tile']:.0f} patches per {args.tile} px "
          "tile): batch  tiles/s  peak RSS MB")
    for row in sweep:
        print(f"  {row['batch']:>5} {row['tiles_per_s']:8.3f} {row['peak_rss_mb']:8.0f}")
    print(f"paired rounds at the daemon's batch ({batch}): backend alone, then the daemon")
    for r, ratio in zip(rounds, ratios, strict=True):
        print(f"  {r['backend_tiles_per_s']:.3f} -> {r['daemon_tiles_per_s']:.3f} tiles/s "
              f"(ratio {ratio:.3f})")
    print(f"daemon e2e    : {result['daemon_tiles_per_s']:.3f} tiles/s (median ratio "
          f"{result['ratio_daemon_to_backend']:.3f} to the backend in this process)")
    if own:
        print(f"daemon e2e against its own inference (tiles / sum of their inference calls): "
              f"median {result['ratio_daemon_to_own_inference']:.3f} (rounds "
              + ", ".join(f"{x:.3f}" for x in own) + "; target >= 0.95)")
    print(f"latency, {args.latency_tiles} tiles one at a time (ms)   p50      p99")
    for key in ("round_trip", "compute", *COMPUTE_STAGES, "queue", "publish", "wire", "added",
                "in_daemon"):
        print(f"  {key:<12} {latency[key]['p50']:9.2f} {latency[key]['p99']:9.2f}")
    print(f"  in process   {result['in_process_tile_ms_median']:9.2f}  (convert one tile, median)")
    print(f"daemon adds {added_ms['p50']:.1f} ms p50, {added_ms['p99']:.1f} ms p99 over compute "
          "(target p99 <= 5 ms)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
