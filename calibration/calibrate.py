"""INT8/FP16 variants of a bundle behind a measured quality gate: the work of `ssum calibrate`.

Each variant converts the held-out pairs through the serving path and is kept (added to the
bundle's manifest) only when its PSNR loss to the SEM against FP32 stays within the threshold.
INT8 that fails is retried with the most sensitive convolutions kept in float (2, 4, 8, ...).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from calibration import gate
from calibration.calibset import CalibrationData, load_calibration_data
from calibration.quantize import METHODS, TARGETS, convert_fp16, quantize_int8
from edge.errors import UserError
from edge.inference.bundle import Bundle, add_model, load_bundle, model_entry, write_manifest
from edge.inference.converter import Converter, ConverterSettings

log = logging.getLogger(__name__)

MAX_ROUNDS = 4
VARIANTS = ("int8", "fp16")


@dataclass(frozen=True)
class CalibrationSettings:
    """data: a folder with osr/ and sem/ images paired by name; threads 0: all cores."""

    data: Path
    precisions: tuple[str, ...] = VARIANTS
    method: str = "entropy"
    target: str = "cpu"
    threshold_db: float = 0.2
    calib_patches: int = 16
    holdout: int = 8
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in VARIANTS]
        if bad or not self.precisions:
            raise UserError(f"precisions must be int8 and/or fp16, got {', '.join(self.precisions)!r}")
        if self.method not in METHODS or self.target not in TARGETS:
            raise UserError(f"method must be one of {', '.join(METHODS)} and target one of "
                            f"{', '.join(TARGETS)}")
        if self.calib_patches < 1 or self.holdout < 1 or self.threshold_db < 0:
            raise UserError("calibration patches and hold-out pairs must be positive, the "
                            "threshold not negative")


@dataclass(frozen=True)
class _Reference:
    """What every variant is scored against: the data and the FP32 model's outputs and score."""

    data: CalibrationData
    fp32_path: Path
    fp32: dict[str, float]
    fp32_outputs: list[np.ndarray]
    pixel_nm: float


def calibrate(bundle: Bundle, settings: CalibrationSettings) -> dict[str, Any]:
    """Make the variants, gate them, update the manifest; returns the report (calibration.json)."""
    start = time.monotonic()
    fp32_path = bundle.model("onnx", "fp32").path
    # calibration patches are the bundle's fixed patches, as TensorRT and the docs have them
    serving = ConverterSettings(threads=settings.threads, model_file=fp32_path, patching="fixed")
    with Converter.from_bundle(bundle, serving) as fp32_converter:
        data = load_calibration_data(fp32_converter, settings.data, settings.calib_patches,
                                     settings.holdout, settings.seed)
        outputs = [fp32_converter.convert(osr) for _, osr, _ in data.holdout]
    pixel_nm = float(bundle.manifest.get("pixel_size_nm", 10.0))
    reference = _Reference(data, fp32_path, gate.score(outputs, data.holdout, pixel_nm), outputs,
                           pixel_nm)
    recorded = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()
                if k in ("method", "target", "seed", "data", "threshold_db")}
    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "bundle": bundle.name,
        "settings": {**recorded, "patches": len(data.patches), "patch_size": data.patch_size,
                     "holdout": [name for name, _, _ in data.holdout]},
        "fp32": reference.fp32, "variants": {},
    }
    for precision in settings.precisions:
        make = _int8 if precision == "int8" else _fp16
        report["variants"][precision] = make(bundle, reference, settings)
    report["duration_s"] = round(time.monotonic() - start, 1)
    return report


def _evaluate(bundle: Bundle, path: Path, ref: _Reference,
              settings: CalibrationSettings) -> dict[str, Any]:
    outputs = gate.convert_holdout(bundle, path, ref.data.holdout, settings.threads)
    variant = gate.score(outputs, ref.data.holdout, ref.pixel_nm, ref.fp32_outputs)
    return gate.verdict(ref.fp32, variant, settings.threshold_db)


def _fp16(bundle: Bundle, ref: _Reference, settings: CalibrationSettings) -> dict[str, Any]:
    path = convert_fp16(ref.fp32_path, bundle.path / "generator.fp16.onnx")
    result = _evaluate(bundle, path, ref, settings)
    return _record(bundle, path, "fp16", result, {"method": "float16 cast, float32 I/O"})


def _int8(bundle: Bundle, ref: _Reference, settings: CalibrationSettings) -> dict[str, Any]:
    """Quantize; while the gate fails, keep the most sensitive Convs in float (2, 4, 8, ...)."""
    path = bundle.path / "generator.int8.onnx"
    patches = ref.data.patches
    exclude: list[str] = []
    rounds: list[dict[str, Any]] = []
    ranking: list[str] = []
    for attempt in range(MAX_ROUNDS + 1):
        quantize_int8(ref.fp32_path, path, patches, settings.method, exclude, settings.target)
        result = _evaluate(bundle, path, ref, settings)
        rounds.append({"excluded": list(exclude), "psnr_loss_db": result["psnr_loss_db"],
                       "passed": result["passed"]})
        log.info("INT8 round %d: %d convs excluded, loss %.3f dB", attempt, len(exclude),
                 result["psnr_loss_db"])
        if result["passed"]:
            break
        if not ranking:
            sensitivity = gate.layer_sensitivity(ref.fp32_path, path, patches[:4])
            ranking = sorted(sensitivity, key=lambda k: -sensitivity[k])
        exclude = ranking[: 2 ** (attempt + 1)]
        if attempt == MAX_ROUNDS or len(exclude) >= len(ranking):
            break
    used = {"method": settings.method, "target": settings.target, "patches": len(patches),
            "excluded_convs": rounds[-1]["excluded"], "rounds": rounds}
    return _record(bundle, path, "int8", result, used)


def _record(bundle: Bundle, path: Path, precision: str, result: dict[str, Any],
            settings: dict[str, Any]) -> dict[str, Any]:
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
    manifest = dict(load_bundle(bundle_dir, verify=False).manifest)
    manifest["models"] = [m for m in manifest["models"]
                          if (m["kind"], m["precision"]) != ("onnx", precision)]
    write_manifest(bundle_dir, manifest)
