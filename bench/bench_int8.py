"""INT8 vs FP32 (and FP16) ONNX Runtime on the CPU: speed and PSNR difference on held-out pairs.

Speed: patches/s at the bundle's patch size, batches of --batch, one warm-up call each, then
--repeats rounds of one timed call per variant, interleaved, median (the CPU's speed drifts by
tens of per cent within minutes; in turn, each variant meets the same drift). Quality: the
held-out pairs (default: the simulated test set) converted through the serving tiler by each
variant, mean PSNR to the SEM reference.
Also each variant's speed as stored in the bundle (without the CPU graph rewrite of
edge/inference/onnx_rewrite.py) and the share of kernel time per operator type (one profiled
call). Writes bench/results/int8_cpu.json with the machine described.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from run import machine, relative

from edge.imaging.imageio import list_images, read_image
from edge.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.inference.bundle import default_bundle_path, load_bundle
from edge.inference.converter import CPU_BATCH, Converter, ConverterSettings
from trainer.evaluation.metrics import psnr


def interleaved_seconds(backends: dict[Any, Any], batch: np.ndarray, rounds: int,
                        ) -> dict[Any, list[float]]:
    """Seconds of one call of each backend, in `rounds` rounds of one call each (the order
    rotating): the machine's drift falls on every backend alike, not on whichever ran last."""
    for backend in backends.values():
        backend.infer(batch)
    names = list(backends)
    seconds: dict[Any, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            backends[name].infer(batch)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def op_shares(model_path: Path, batch: np.ndarray, threads: int) -> dict[str, float]:
    """Share of ONNX Runtime's kernel time per operator type over one profiled call (the CPU
    graph as served)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ssum-prof-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        backend = OnnxRuntimeBackend(model_path, threads=threads, options=options)
        backend.infer(batch)
        backend.infer(batch)
        events = json.loads(Path(backend.session.end_profiling()).read_text())
        backend.close()
    kernel: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            kernel[event["args"]["op_name"]] += event["dur"]
    total = sum(kernel.values())
    return {op: round(t / total, 4) for op, t in kernel.most_common()}


def mean_psnr(converter: Converter, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(np.mean([psnr(np.clip(converter.convert(osr), 0, 1), sem) for osr, sem in pairs]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=REPO / "runs/data/test",
                        help="held-out pairs (osr/, sem/); `ssum synth pairs --out runs/data/test --n 32 --seed 900000`")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=CPU_BATCH,
                        help=f"patches per call (default {CPU_BATCH}, the daemon's on a CPU)")
    parser.add_argument("--repeats", type=int, default=9,
                        help="rounds of one timed call per variant, interleaved (default 9)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/int8_cpu.json")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle or default_bundle_path())
    patch_size = int(bundle.io["patch_size"])
    if not (args.data / "osr").is_dir():
        from trainer.sim.pairs import write_pairs

        print(f"{args.data} does not exist: simulating {args.pairs} held-out pairs (seed 900000)")
        write_pairs(args.data, args.pairs, seed=900000, size=512)
    names = [p.name for p in list_images(args.data / "osr")][: args.pairs]
    pairs = [(read_image(args.data / "osr" / n), read_image(args.data / "sem" / n)) for n in names]
    rng = np.random.default_rng(0)
    batch = rng.random((args.batch, 1, patch_size, patch_size), dtype=np.float32)
    precisions = [p for p in ("fp32", "int8", "fp16")
                  if any(m.kind == "onnx" and m.precision == p for m in bundle.models())]
    if "fp32" not in precisions:
        raise SystemExit(f"{bundle.path}: no FP32 ONNX model to compare with")
    results: dict[str, Any] = {}
    for precision in precisions:
        settings = ConverterSettings(precision=precision, threads=args.threads)
        with Converter.from_bundle(bundle, settings) as converter:
            results[precision] = {"psnr_sem_db": mean_psnr(converter, pairs)}
        path = bundle.model("onnx", precision).path
        results[precision]["op_time_shares"] = op_shares(path, batch[:1], args.threads)
    backends = {}
    for precision in precisions:
        path = bundle.model("onnx", precision).path
        for rewrite in (True, False):
            backends[(precision, rewrite)] = OnnxRuntimeBackend(path, precision, threads=args.threads,
                                                                rewrite=rewrite)
    seconds = interleaved_seconds(backends, batch, args.repeats)
    for backend in backends.values():
        backend.close()
    for precision in precisions:
        for rewrite, key in ((True, "patches_per_s"), (False, "as_stored_patches_per_s")):
            results[precision][key] = len(batch) / statistics.median(seconds[(precision, rewrite)])
        print(f"{precision}: {results[precision]['patches_per_s']:.2f} patches/s "
              f"({results[precision]['as_stored_patches_per_s']:.2f} without the CPU graph "
              f"rewrite), PSNR to SEM {results[precision]['psnr_sem_db']:.3f} dB")
    if "int8" in results:
        ratios = [f / i for f, i in zip(seconds[("fp32", True)], seconds[("int8", True)], strict=True)]
        results["int8_vs_fp32"] = {
            "speedup": results["int8"]["patches_per_s"] / results["fp32"]["patches_per_s"],
            "speedup_per_round": ratios, "speedup_median_of_rounds": statistics.median(ratios),
            "psnr_loss_db": results["fp32"]["psnr_sem_db"] - results["int8"]["psnr_sem_db"],
            "targets": {"speedup": 2.0, "psnr_loss_db": 0.2}}
        r = results["int8_vs_fp32"]
        print(f"INT8 vs FP32: {r['speedup']:.2f}x (median of rounds {r['speedup_median_of_rounds']:.2f}x, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}; target >= 2.0), PSNR loss "
              f"{r['psnr_loss_db']:+.3f} dB (target <= 0.2)")
    results["seconds_per_call"] = {f"{p}{'' if w else '_as_stored'}": v
                                   for (p, w), v in seconds.items()}
    report = {"benchmark": "int8_cpu", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": "python bench/bench_int8.py " + " ".join(argv or sys.argv[1:]),
              "machine": machine(), "bundle": relative(bundle.path), "patch_size": patch_size,
              "batch": args.batch, "repeats": args.repeats, "threads": args.threads,
              "pairs": names, "data": relative(args.data), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
