"""`ssum calibrate`: INT8/FP16 variants of a bundle behind a measured quality gate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from calibration.calibrate import CalibrationSettings, calibrate
from calibration.quantize import METHODS, TARGETS
from edge.inference.bundle import load_bundle
from edge.inference.signing import sign_bundle

DEFAULTS = CalibrationSettings(data=Path())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle to add variants to")
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with osr/ and sem/ images paired by name (user data or ssum synth)")
    parser.add_argument("--precisions", default=",".join(DEFAULTS.precisions),
                        help=f"variants to make (default {','.join(DEFAULTS.precisions)})")
    parser.add_argument("--method", choices=list(METHODS), default=DEFAULTS.method,
                        help=f"INT8 calibration method (default {DEFAULTS.method})")
    parser.add_argument("--target", choices=list(TARGETS), default=DEFAULTS.target,
                        help="INT8 graph layout: cpu (ONNX Runtime integer kernels) or tensorrt")
    parser.add_argument("--threshold-db", type=float, default=DEFAULTS.threshold_db,
                        help="largest PSNR loss to the SEM reference vs FP32 "
                             f"(default {DEFAULTS.threshold_db} dB)")
    parser.add_argument("--calib-patches", type=int, default=DEFAULTS.calib_patches,
                        help=f"calibration patches of the bundle's patch size (default "
                             f"{DEFAULTS.calib_patches}; entropy and percentile hold every "
                             "activation in memory: ~350 MB per 512 px patch)")
    parser.add_argument("--holdout", type=int, default=DEFAULTS.holdout,
                        help=f"pairs held out for the gate (default {DEFAULTS.holdout})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads,
                        help="ONNX Runtime threads (0: all)")
    parser.add_argument("--sign-key", type=Path, default=None,
                        help="sign the updated manifest with this NAME.sign.key_secret (adding "
                             "variants changes the manifest, so an earlier signature is removed)")


def run(args: argparse.Namespace) -> int:
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    settings = CalibrationSettings(
        data=args.data, precisions=precisions, method=args.method, target=args.target,
        threshold_db=args.threshold_db, calib_patches=args.calib_patches, holdout=args.holdout,
        seed=args.seed, threads=args.threads)
    bundle = load_bundle(args.bundle)
    report = calibrate(bundle, settings)
    (bundle.path / "calibration.json").write_text(json.dumps(report, indent=1) + "\n")
    _print(report)
    print(f"wrote {bundle.path / 'calibration.json'}")
    if args.sign_key is not None:
        print(f"signed: {sign_bundle(bundle.path, args.sign_key)}")
    return 0


def _print(report: dict[str, Any]) -> None:
    fp32 = report["fp32"]
    print(f"{'variant':<8} {'PSNR to SEM':>12} {'loss':>8} {'PSNR to FP32':>13}  gate")
    print(f"{'fp32':<8} {fp32['psnr_sem_db']:>9.2f} dB {'':>8} {'':>13}")
    for name, v in report["variants"].items():
        gate = "passed, added to the bundle" if v["passed"] else "FAILED, not added"
        print(f"{name:<8} {v['psnr_sem_db']:>9.2f} dB {v['psnr_loss_db']:>+5.2f} dB "
              f"{v['psnr_fp32_db']:>10.2f} dB  {gate} (threshold {v['threshold_db']} dB)")
        if name == "int8" and v["calibration"]["excluded_convs"]:
            print(f"         kept in float by sensitivity: "
                  f"{', '.join(v['calibration']['excluded_convs'])}")
