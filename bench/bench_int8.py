"""INT8 vs FP32 (and FP16) ONNX Runtime on the CPU: speed and PSNR difference on held-out pairs.

Speed: patches/s at the bundle's patch size, batches of --batch, one warm-up call, --repeats
timed calls, median. Quality: the held-out pairs (default: the simulated test set) converted
through the serving tiler by each variant, mean PSNR to the SEM reference.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from run import machine, relative

from edge.imaging.imageio import list_images, read_image
from edge.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.inference.bundle import default_bundle_path, load_bundle
from edge.inference.converter import Converter, ConverterSettings
from trainer.evaluation.metrics import psnr


def patches_per_s(backend, batch: np.ndarray, repeats: int) -> float:
    backend.infer(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.infer(batch)
        times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times)


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
    kernel = Counter()
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
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
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
    results = {}
    for precision in ("fp32", "int8", "fp16"):
        if not any(m.kind == "onnx" and m.precision == precision for m in bundle.models()):
            print(f"{precision}: not in the bundle (run ssum calibrate)")
            continue
        settings = ConverterSettings(precision=precision, threads=args.threads)
        with Converter.from_bundle(bundle, settings) as converter:
            results[precision] = {
                "patches_per_s": patches_per_s(converter.backend, batch, args.repeats),
                "psnr_sem_db": mean_psnr(converter, pairs)}
        path = bundle.model("onnx", precision).path
        stored = OnnxRuntimeBackend(path, precision, threads=args.threads, rewrite=False)
        results[precision]["as_stored_patches_per_s"] = patches_per_s(stored, batch, args.repeats)
        stored.close()
        results[precision]["op_time_shares"] = op_shares(path, batch[:1], args.threads)
        print(f"{precision}: {results[precision]['patches_per_s']:.2f} patches/s "
              f"({results[precision]['as_stored_patches_per_s']:.2f} without the CPU graph "
              f"rewrite), PSNR to SEM {results[precision]['psnr_sem_db']:.3f} dB")
    if "int8" in results:
        results["int8_vs_fp32"] = {
            "speedup": results["int8"]["patches_per_s"] / results["fp32"]["patches_per_s"],
            "psnr_loss_db": results["fp32"]["psnr_sem_db"] - results["int8"]["psnr_sem_db"],
            "targets": {"speedup": 1.5, "psnr_loss_db": 0.2}}
        r = results["int8_vs_fp32"]
        print(f"INT8 vs FP32: {r['speedup']:.2f}x (target >= 1.5), PSNR loss {r['psnr_loss_db']:+.3f} dB "
              "(target <= 0.2)")
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
