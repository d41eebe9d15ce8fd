"""`ssum calibrate`: INT8/FP16 variants of a bundle behind a measured quality gate."""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import UserError

log = logging.getLogger(__name__)
MAX_ROUNDS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle to add variants to")
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with osr/ and sem/ images paired by name (user data or ssum synth)")
    parser.add_argument("--precisions", default="int8,fp16", help="variants to make (default int8,fp16)")
    parser.add_argument("--method", choices=("entropy", "percentile", "max"), default="entropy",
                        help="INT8 calibration method (default entropy)")
    parser.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu",
                        help="INT8 graph layout: cpu (ONNX Runtime integer kernels) or tensorrt")
    parser.add_argument("--threshold-db", type=float, default=0.2,
                        help="largest PSNR loss to the SEM reference vs FP32 (default 0.2 dB)")
    parser.add_argument("--calib-patches", type=int, default=16,
                        help="calibration patches of the bundle's patch size (default 16; entropy and "
                             "percentile hold every activation in memory: ~350 MB per 512 px patch)")
    parser.add_argument("--holdout", type=int, default=8, help="pairs held out for the gate (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")


def _precisions(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in chosen if p not in ("int8", "fp16")]
    if bad or not chosen:
        raise UserError(f"--precisions takes int8 and/or fp16, got {text!r}")
    return chosen


def run(args: argparse.Namespace) -> int:
    from edge.bundle import load_bundle

    if args.calib_patches < 1 or args.holdout < 1 or args.threshold_db < 0:
        raise UserError("--calib-patches and --holdout must be positive, --threshold-db not negative")
    precisions = _precisions(args.precisions)
    bundle = load_bundle(args.bundle)
    report = calibrate(bundle, args, precisions)
    (bundle.path / "calibration.json").write_text(json.dumps(report, indent=1) + "\n")
    _print(report)
    print(f"wrote {bundle.path / 'calibration.json'}")
    return 0


def calibrate(bundle: Any, args: argparse.Namespace, precisions: list[str]) -> dict[str, Any]:
    from calibration.calibset import load_calibration_data, serving_tiler
    from calibration.gate import convert_holdout, score

    start = time.monotonic()
    data = load_calibration_data(bundle, args.data, args.calib_patches, args.holdout, args.seed)
    tiler = serving_tiler(bundle)
    pixel_nm = float(bundle.manifest.get("pixel_size_nm", 10.0))
    fp32_path = bundle.model("onnx", "fp32").path
    threads = args.threads or None
    fp32_outputs = convert_holdout(fp32_path, data.holdout, tiler, threads)
    fp32 = score(fp32_outputs, data.holdout, pixel_nm)
    settings = {"method": args.method, "target": args.target, "patches": len(data.patches),
                "patch_size": tiler.patch_size, "holdout": [name for name, _, _ in data.holdout],
                "seed": args.seed, "data": str(args.data), "threshold_db": args.threshold_db}
    report: dict[str, Any] = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
                              "bundle": bundle.name, "settings": settings, "fp32": fp32,
                              "variants": {}}
    context = (data, tiler, pixel_nm, fp32_path, fp32, fp32_outputs, threads, args)
    for precision in precisions:
        variant = _int8(bundle, context) if precision == "int8" else _fp16(bundle, context)
        report["variants"][precision] = variant
    report["duration_s"] = round(time.monotonic() - start, 1)
    return report


def _evaluate(path: Path, context: tuple) -> dict[str, Any]:
    from calibration.gate import convert_holdout, score, verdict

    data, tiler, pixel_nm, _, fp32, fp32_outputs, threads, args = context
    outputs = convert_holdout(path, data.holdout, tiler, threads)
    return verdict(fp32, score(outputs, data.holdout, pixel_nm, fp32_outputs), args.threshold_db)


def _fp16(bundle: Any, context: tuple) -> dict[str, Any]:
    from calibration.quantize import convert_fp16

    path = convert_fp16(context[3], bundle.path / "generator.fp16.onnx")
    result = _evaluate(path, context)
    return _record(bundle, path, "fp16", result, {"method": "float16 cast, float32 I/O"})


def _int8(bundle: Any, context: tuple) -> dict[str, Any]:
    """Quantize; while the gate fails, keep the most sensitive Convs in float (2, 4, 8, ...)."""
    from calibration.gate import layer_sensitivity
    from calibration.quantize import quantize_int8

    data, _, _, fp32_path, _, _, _, args = context
    path = bundle.path / "generator.int8.onnx"
    exclude: list[str] = []
    rounds: list[dict[str, Any]] = []
    ranking: list[str] = []
    for attempt in range(MAX_ROUNDS + 1):
        quantize_int8(fp32_path, path, data.patches, args.method, exclude, args.target)
        result = _evaluate(path, context)
        rounds.append({"excluded": list(exclude), "psnr_loss_db": result["psnr_loss_db"],
                       "passed": result["passed"]})
        log.info("INT8 round %d: %d convs excluded, loss %.3f dB", attempt, len(exclude),
                 result["psnr_loss_db"])
        if result["passed"]:
            break
        if not ranking:
            sensitivity = layer_sensitivity(fp32_path, path, data.patches[:4])
            ranking = sorted(sensitivity, key=lambda k: -sensitivity[k])
        exclude = ranking[: 2 ** (attempt + 1)]
        if attempt == MAX_ROUNDS or len(exclude) >= len(ranking):
            break
    settings = {"method": args.method, "target": args.target, "patches": len(data.patches),
                "excluded_convs": rounds[-1]["excluded"], "rounds": rounds}
    return _record(bundle, path, "int8", result, settings)


def _record(bundle: Any, path: Path, precision: str, result: dict[str, Any],
            settings: dict[str, Any]) -> dict[str, Any]:
    from edge.bundle import add_model, model_entry

    quality = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    if result["passed"]:
        add_model(bundle.path, model_entry(path, precision, "onnx", quality=quality,
                                           calibration=settings))
    else:
        path.unlink(missing_ok=True)
        _drop_entry(bundle.path, precision)
    return {"file": path.name if result["passed"] else None, **quality, "calibration": settings}


def _drop_entry(bundle_dir: Path, precision: str) -> None:
    """A failed variant must not linger from an earlier run."""
    from edge.bundle import load_bundle, write_manifest

    manifest = dict(load_bundle(bundle_dir, verify=False).manifest)
    manifest["models"] = [m for m in manifest["models"]
                          if (m["kind"], m["precision"]) != ("onnx", precision)]
    write_manifest(bundle_dir, manifest)


def _print(report: dict[str, Any]) -> None:
    fp32 = report["fp32"]
    print(f"{'variant':<8} {'PSNR to SEM':>12} {'loss':>8} {'PSNR to FP32':>13}  gate")
    print(f"{'fp32':<8} {fp32['psnr_sem_db']:>9.2f} dB {'':>8} {'':>13}")
    for name, v in report["variants"].items():
        gate = "passed, added to the bundle" if v["passed"] else "FAILED, not added"
        print(f"{name:<8} {v['psnr_sem_db']:>9.2f} dB {v['psnr_loss_db']:>+5.2f} dB "
              f"{v['psnr_fp32_db']:>10.2f} dB  {gate} (threshold {v['threshold_db']} dB)")
        if name == "int8" and v["calibration"]["excluded_convs"]:
            print(f"         kept in float by sensitivity: {', '.join(v['calibration']['excluded_convs'])}")
