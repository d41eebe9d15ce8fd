"""Large-FOV conversion side by side, in one run, with the same model on the same machine:

  project (fit)    `Converter.convert` with the serving defaults: the planner's fewest, largest
                   patches (ONNX Runtime FP32, the bundle's generator.onnx)
  project (fixed)  the same with the bundle's fixed patch size (what TensorRT runs)
  MONAI            `monai.inferers.sliding_window_inference`, gaussian, roi 256, overlap 0.25,
                   on PyTorch running the bundle's torch.export program (generator.pt2)
  whole image      one ONNX Runtime call on the whole image (the reference)

For each: s per megapixel, executed / image pixels, agreement (PSNR dB) with the whole-image
output over the whole image and over the interior (the receptive margin in from the border),
the peak RSS of the process that ran it (each method runs in a child of its own), and GFLOP/s
against the CPU's FP32 peak. Then each backend (ONNX Runtime, PyTorch eager) alone, batch 1,
on 256 and 512 px patches. FLOP are counted from the ONNX graph's Conv nodes.
MONAI is optional (`pip install -e '.[bench]'`); without it its row is skipped.
Writes bench/results/tiling_cpu.json with the machine described.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_int8 import interleaved_seconds
from report import write_report
from roofline import conv_flop_per_pixel, cpu_peak
from run import relative

from edge.inference.backends import load_backend
from edge.inference.bundle import Bundle, default_bundle_path, load_bundle
from edge.inference.converter import Converter, ConverterSettings
from edge.inference.tiling import convert_image
from trainer.evaluation.metrics import psnr

METHODS = ("project-fit", "project-fixed", "monai", "whole")
LABELS = {"project-fit": "project (fit)", "project-fixed": "project (fixed patch)",
          "monai": "MONAI gaussian 256/0.25", "whole": "whole image"}
MONAI_ROI, MONAI_OVERLAP = 256, 0.25


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: getrusage would also count the parent before exec)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return float("nan")
    return int(status.read_text().split("VmHWM:")[1].split()[0]) / 1024


def run_project(bundle: Bundle, image: np.ndarray, threads: int, batch: int, patching: str,
                max_pixels: int) -> tuple[np.ndarray, dict[str, Any]]:
    settings = ConverterSettings(threads=threads, max_batch=batch, patching=patching,
                                 max_pixels=max_pixels)
    with Converter.from_bundle(bundle, settings) as converter:
        converter.backend.infer(np.zeros((1, 1, 256, 256), np.float32))  # session start-up
        plan = converter.tiler.plan(image.shape)
        start = time.perf_counter()
        out = convert_image(image, converter.backend, converter.tiler, batch)
        seconds = time.perf_counter() - start
    return out, {"seconds": seconds, "executed_ratio": plan.executed_ratio,
                 "patches": plan.n_patches, "patch_shape": list(plan.patch_shape),
                 "max_pixels": settings.max_pixels, "batch": batch}


def run_whole(bundle: Bundle, image: np.ndarray, threads: int) -> tuple[np.ndarray, dict[str, Any]]:
    backend = load_backend(bundle, threads=threads)
    backend.infer(np.zeros((1, 1, 256, 256), np.float32))
    h, w = image.shape
    padded = np.pad(image, ((0, -h % 4), (0, -w % 4)), mode="reflect")  # the stride multiple
    start = time.perf_counter()
    out = backend.infer(padded[None, None])[0, 0, :h, :w]
    seconds = time.perf_counter() - start
    return out, {"seconds": seconds, "executed_ratio": padded.size / image.size, "patches": 1,
                 "patch_shape": list(padded.shape)}


def run_monai(bundle: Bundle, image: np.ndarray, threads: int,
              batch: int) -> tuple[np.ndarray, dict[str, Any]]:
    import monai
    import torch
    from monai.inferers import sliding_window_inference

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    module = torch.export.load(str(bundle.model("torch_export", "fp32").path)).module()
    patches = []

    def predictor(x: torch.Tensor) -> torch.Tensor:
        patches.append(len(x))
        return module(x)

    with torch.inference_mode():
        module(torch.zeros(1, 1, MONAI_ROI, MONAI_ROI))
        start = time.perf_counter()
        out = sliding_window_inference(torch.from_numpy(image)[None, None], MONAI_ROI, batch,
                                       predictor, overlap=MONAI_OVERLAP, mode="gaussian")
        seconds = time.perf_counter() - start
    return np.asarray(out)[0, 0], {
        "seconds": seconds, "executed_ratio": sum(patches) * MONAI_ROI**2 / image.size,
        "patches": sum(patches), "patch_shape": [MONAI_ROI, MONAI_ROI], "batch": batch,
        "backend": "torch eager (generator.pt2)", "monai": monai.__version__}


def child(args: argparse.Namespace) -> int:
    """One method on the image in args.input; its output to args.output, figures to stdout."""
    bundle = load_bundle(args.bundle or default_bundle_path())
    image = np.load(args.input)
    if args.child == "whole":
        out, figures = run_whole(bundle, image, args.threads)
    elif args.child == "monai":
        out, figures = run_monai(bundle, image, args.threads, args.batch)
    else:
        patching = args.child.removeprefix("project-")
        out, figures = run_project(bundle, image, args.threads, args.batch, patching,
                                   args.max_pixels)
    np.save(args.output, np.asarray(out, dtype=np.float32))
    print(json.dumps({**figures, "peak_rss_mb": peak_rss_mb()}))
    return 0


def run_child(method: str, args: argparse.Namespace, image: Path, out: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--input",
               str(image), "--output", str(out), "--threads", str(args.threads),
               "--batch", str(args.batch), "--max-pixels", str(args.max_pixels)]
    command += ["--bundle", str(args.bundle)] if args.bundle else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"bench: {method} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def backend_speed(bundle: Bundle, name: str, size: int, threads: int, repeats: int) -> float:
    """Median seconds of one batch-1 patch of size x size px."""
    backend = load_backend(bundle, name, threads=threads or None)
    if backend.name != name:
        raise RuntimeError(f"{name} did not load")
    batch = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    seconds = statistics.median(interleaved_seconds({name: backend}, batch, repeats)[name])
    backend.close()
    return seconds


def backends_table(bundle: Bundle, flop_px: float, peak: float, args: argparse.Namespace) -> list:
    rows = []
    names = ["onnxruntime"] + (["torch"] if importlib.util.find_spec("torch") else [])
    for name in names:
        for size in (256, 512):
            seconds = backend_speed(bundle, name, size, args.threads, args.repeats)
            gflops = flop_px * size**2 / seconds / 1e9
            rows.append({"backend": name, "precision": "fp32", "patch": size, "batch": 1,
                         "seconds": seconds, "gflops": gflops, "fraction_of_peak": gflops / peak})
    return rows


def compare(method: dict[str, Any], out: np.ndarray, whole: np.ndarray, margin: int,
            pixels: int, flop_px: float, peak: float) -> dict[str, Any]:
    inner = (slice(margin, -margin), slice(margin, -margin))
    gflops = flop_px * method["executed_ratio"] * pixels / method["seconds"] / 1e9
    return {**method, "s_per_mpix": method["seconds"] / (pixels / 1e6),
            "psnr_whole_db": psnr(out, whole), "psnr_interior_db": psnr(out[inner], whole[inner]),
            "gflops": gflops, "fraction_of_peak": gflops / peak}


def print_table(results: dict[str, dict[str, Any]], backends: list, peak: dict[str, Any]) -> None:
    print(f"{'method':26} {'s/MPix':>7} {'executed':>9} {'PSNR all':>9} {'interior':>9} "
          f"{'peak RSS':>9} {'GFLOP/s':>8}")
    for name, r in results.items():
        print(f"{LABELS[name]:26} {r['s_per_mpix']:7.2f} {r['executed_ratio']:8.2f}x "
              f"{r['psnr_whole_db']:8.1f}  {r['psnr_interior_db']:8.1f}  "
              f"{r['peak_rss_mb'] / 1024:7.2f} GB {r['gflops']:7.1f}")
    print(f"CPU FP32 peak (estimate): {peak['gflops']:.0f} GFLOP/s ({peak['formula']})")
    for b in backends:
        print(f"  {b['backend']:12} batch 1, {b['patch']} px: {b['seconds']:.3f} s, "
              f"{b['gflops']:.1f} GFLOP/s, {100 * b['fraction_of_peak']:.0f} % of peak")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from trainer.sim.pairs import make_pair

    bundle = load_bundle(args.bundle or default_bundle_path())
    image = make_pair(args.seed, size=args.size)[0].astype(np.float32)
    methods = [m for m in METHODS if m != "monai" or importlib.util.find_spec("monai")]
    if "monai" not in methods:
        print("MONAI is not installed (pip install -e '.[bench]'): its row is skipped")
    with tempfile.TemporaryDirectory(prefix="ssum-bench-tiling-") as tmp:
        np.save(Path(tmp) / "image.npy", image)
        figures, outputs = {}, {}
        for method in methods:
            print(f"running {LABELS[method]} ...", flush=True)
            figures[method] = run_child(method, args, Path(tmp) / "image.npy",
                                        Path(tmp) / f"{method}.npy")
            outputs[method] = np.load(Path(tmp) / f"{method}.npy")
    flop_px = conv_flop_per_pixel(bundle.model("onnx", "fp32").path)
    peak = cpu_peak()
    margin = int(bundle.io["receptive_margin"])
    results = {m: compare(figures[m], outputs[m], outputs["whole"], margin, image.size, flop_px,
                          peak["gflops"]) for m in methods}
    return {"bundle": bundle, "results": results, "flop_per_pixel": flop_px, "peak": peak,
            "backends": backends_table(bundle, flop_px, peak["gflops"], args), "margin": margin}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--size", type=int, default=3072, help="image side in px (square)")
    parser.add_argument("--seed", type=int, default=31, help="simulated chip (make_pair seed)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    parser.add_argument("--batch", type=int, default=8,
                        help="patches per call, project and MONAI alike (default 8, as the "
                             "recorded results; the project's fit patches rarely fill one)")
    parser.add_argument("--max-pixels", type=int, default=ConverterSettings().max_pixels,
                        help="the project's most pixels per patch and call (a sweep: run again)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per backend patch")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/tiling_cpu.json")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    m = measure(args)
    results = m["results"]
    print_table(results, m["backends"], m["peak"])
    fields = {"bundle": relative(m["bundle"].path),
              "image": {"size": [args.size, args.size], "source": "trainer.sim.pairs.make_pair",
                        "seed": args.seed},
              "threads": args.threads, "receptive_margin_px": m["margin"],
              "flop_per_pixel": m["flop_per_pixel"], "cpu_peak": m["peak"], "methods": results,
              "backends": m["backends"]}
    if "monai" in results:
        fields["project_speedup_vs_monai"] = (results["monai"]["s_per_mpix"]
                                              / results["project-fit"]["s_per_mpix"])
        print(f"project (fit) vs MONAI: {fields['project_speedup_vs_monai']:.2f}x faster "
              "(target >= 1.5)")
    write_report(args.out, "tiling_cpu", argv, fields)
    return 0

if __name__ == "__main__":
    sys.exit(main())
