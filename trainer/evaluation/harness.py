"""Evaluate converted images against SEM references: per image, per method, and means.

Key names (stable, documented in docs/evaluation.md): a metric without suffix compares the
method's output with the reference; the same name with `_input` compares the OSR input with it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import list_images, read_image
from edge.imaging.registration import MIN_REGISTERED_SHARE, register, valid_rectangle
from trainer.evaluation import metrics
from trainer.evaluation.baselines import BASELINES, matched_psf
from trainer.evaluation.frc import frc_resolution

log = logging.getLogger(__name__)

METRICS_VERSION = 1
MODEL_METHOD = "model"


def _image_metrics(img: np.ndarray, ref: np.ndarray, pixel_size_nm: float) -> dict[str, float]:
    return {
        "psnr": metrics.psnr(img, ref),
        "ssim": metrics.ssim(img, ref),
        "epi": metrics.epi(img, ref),
        "frc_1_7_nm": frc_resolution(img, ref, pixel_size_nm, "1/7"),
        "frc_halfbit_nm": frc_resolution(img, ref, pixel_size_nm, "half-bit"),
        "histogram_distance": metrics.histogram_distance(img, ref),
    }


def evaluate_arrays(pred: np.ndarray, inp: np.ndarray, ref: np.ndarray,
                    pixel_size_nm: float) -> dict[str, float]:
    """All metrics of `pred` vs `ref` and of `inp` vs `ref` (keys `<metric>` and
    `<metric>_input`), plus `psnr_gain` = psnr - psnr_input (dB). Values may be inf/NaN
    (identical images, FRC without a crossing)."""
    if not (pred.shape == inp.shape == ref.shape):
        raise ValueError(f"shapes differ: pred {pred.shape}, input {inp.shape}, ref {ref.shape}")
    out = _image_metrics(pred, ref, pixel_size_nm)
    out.update({f"{k}_input": v for k, v in _image_metrics(inp, ref, pixel_size_nm).items()})
    out["psnr_gain"] = out["psnr"] - out["psnr_input"]
    return out


def finite_mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the rows where the value is finite (NaN when none is)."""
    keys = rows[0].keys() if rows else []
    means = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        means[k] = float(vals.mean()) if vals.size else float("nan")
    return means


def not_finite_counts(rows: Sequence[dict[str, float]]) -> dict[str, int]:
    """Per key, how many rows hold inf or NaN (left out of the means); only keys with some."""
    counts = {k: sum(not np.isfinite(r[k]) for r in rows) for k in (rows[0] if rows else {})}
    return {k: int(n) for k, n in counts.items() if n}


def pair_files(input_dir: Path, ref_dir: Path, pred_dir: Path | None = None) -> list[dict[str, Path]]:
    """Files matched by stem across the folders (stems in all of them), sorted by name."""
    folders = {"input": Path(input_dir), "ref": Path(ref_dir)}
    if pred_dir is not None:
        folders["pred"] = Path(pred_dir)
    by_stem = {role: {p.stem: p for p in list_images(f)} for role, f in folders.items()}
    for role, found in by_stem.items():
        if not found:
            raise UserError(f"{folders[role]}: no images (.tif/.tiff/.png) found")
    common = sorted(set.intersection(*(set(d) for d in by_stem.values())))
    if not common:
        names = ", ".join(f"{folders[r]} ({min(d)}...)" for r, d in by_stem.items())
        raise UserError(f"no image names in common between {names}")
    unmatched = sum(len(d) for d in by_stem.values()) - len(common) * len(by_stem)
    if unmatched:
        log.warning("%d image(s) without a counterpart in the other folder(s) are skipped", unmatched)
    return [{role: d[stem] for role, d in by_stem.items()} for stem in common]


def _read_checked(files: dict[str, Path]) -> dict[str, np.ndarray]:
    images = {role: read_image(path) for role, path in files.items()}
    shapes = {role: img.shape for role, img in images.items()}
    if len(set(shapes.values())) != 1:
        detail = ", ".join(f"{files[r]} {s[1]}x{s[0]}" for r, s in shapes.items())
        raise UserError(f"image sizes differ: {detail}")
    return images


@dataclass
class Sample:
    """One image's input, reference and method outputs, kept for the report."""

    name: str
    inp: np.ndarray
    ref: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def _method_info(methods: Sequence[str], pixel_size_nm: float, pred_dir: Path | None) -> dict:
    info: dict[str, dict[str, Any]] = {}
    if pred_dir is not None:
        info[MODEL_METHOD] = {"kind": "predictions", "dir": str(pred_dir)}
    for name in methods:
        info[name] = {"kind": "baseline"}
        if name == "rl":
            info[name]["psf"] = matched_psf(pixel_size_nm)[1]
    return info


def _check_baselines(baselines: Sequence[str]) -> None:
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise UserError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")


def evaluate_sets(pred_dir: str | Path | None, input_dir: str | Path, ref_dir: str | Path,
                  pixel_size_nm: float, baselines: Sequence[str] = ("identity", "affine", "rl"),
                  out_dir: str | Path | None = None, max_images: int | None = None,
                  report_images: int = 3, register: bool = False) -> dict[str, Any]:
    """Evaluate the predictions in `pred_dir` (method "model") and each baseline on the
    input/reference pairs; writes out_dir/metrics.json and out_dir/report/ when out_dir is given.
    With register, each pair is first brought into the reference's frame (see `align_to_reference`).
    Returns the metrics.json content (non-finite values as float inf/NaN)."""
    _check_baselines(baselines)
    if pixel_size_nm <= 0:
        raise UserError(f"pixel size must be positive, not {pixel_size_nm}")
    pairs = pair_files(Path(input_dir), Path(ref_dir), None if pred_dir is None else Path(pred_dir))
    pairs = pairs[:max_images] if max_images else pairs
    methods = ([MODEL_METHOD] if pred_dir is not None else []) + list(baselines)
    if not methods:
        raise UserError("nothing to evaluate: give predictions (--pred) or at least one baseline")
    rows: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    samples: list[Sample] = []
    registrations: dict[str, dict[str, Any]] = {}
    evaluated: list[str] = []
    for files in pairs:
        images, stem = _read_checked(files), files["ref"].stem
        if register:
            images, registrations[stem] = align_to_reference(images)
            if "skipped" in registrations[stem]:
                log.warning("%s: %s", stem, registrations[stem]["skipped"])
                continue
        sample = Sample(stem, images["input"], images["ref"])
        for method in methods:
            out = images["pred"] if method == MODEL_METHOD else BASELINES[method](
                images["input"], images["ref"], pixel_size_nm=pixel_size_nm)
            rows[method][stem] = evaluate_arrays(out, images["input"], images["ref"], pixel_size_nm)
            sample.outputs[method] = out
        if len(samples) < report_images:
            samples.append(sample)
        evaluated.append(stem)
        log.info("evaluated %s", stem)
    if not evaluated:
        raise UserError(f"no pair could be registered ({len(registrations)} tried): every "
                        "registration locked wrongly; evaluate without --register")
    info = _method_info(baselines, pixel_size_nm, None if pred_dir is None else Path(pred_dir))
    result = {
        "version": METRICS_VERSION,
        "pixel_size_nm": float(pixel_size_nm),
        "input_dir": str(input_dir), "ref_dir": str(ref_dir),
        "pred_dir": None if pred_dir is None else str(pred_dir),
        "images": evaluated,
        "registered": register, "registration": registrations,
        "methods": {m: {"info": info[m], "mean": finite_mean(list(rows[m].values())),
                        "not_finite": not_finite_counts(list(rows[m].values())),
                        "images": rows[m]} for m in methods},
    }
    if out_dir is not None:
        write_metrics_json(result, Path(out_dir) / "metrics.json")
        from trainer.evaluation.report import write_report

        write_report(result, samples, Path(out_dir) / "report")
    return result


def align_to_reference(images: dict[str, np.ndarray],
                       border_px: int = 4) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Bring input and prediction into the reference's frame with ONE transform per pair,
    estimated from the input (method-independent: every method is warped alike), and crop all
    images to the rectangle where the warped input has real pixels, less `border_px`. A
    rectangle under MIN_REGISTERED_SHARE of the reference is a wrong lock: the record then says
    "skipped" and the images are returned as they were."""
    reg = register(images["input"], images["ref"])
    top, bottom, left, right = valid_rectangle(reg.valid_mask(images["input"].shape, images["ref"].shape))
    top, left, bottom, right = top + border_px, left + border_px, bottom - border_px, right - border_px
    record: dict[str, Any] = {
        "matrix": reg.matrix.tolist(), "shift_px": list(reg.shift), "correlation": reg.correlation,
        "residual": reg.residual, "converged": reg.converged}
    share = max(0, bottom - top) * max(0, right - left) / images["ref"].size
    if share < MIN_REGISTERED_SHARE:
        record["skipped"] = (f"registration kept {100 * share:.0f} % of the reference (a wrong "
                             "lock onto another period or onto nothing): left out")
        return images, record
    aligned = {role: (img if role == "ref" else reg.warp(img, img.shape))[top:bottom, left:right]
               for role, img in images.items()}
    return aligned, record


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_metrics_json(result: dict[str, Any], path: Path) -> Path:
    """metrics.json with non-finite numbers written as null (strict JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(result), indent=1, allow_nan=False) + "\n")
    return path


def write_report_files(report: dict[str, Any], out_dir: Path, stem: str, text: str,
                       draw: Callable[[dict[str, Any], Path], Path] | None) -> dict[str, Path]:
    """OUT/<stem>.json (strict JSON), OUT/<stem>.md (`text`) and, when `draw` is given, the
    plot it draws to OUT/<stem>.png; the three paths."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / f"{stem}.json", "table": out_dir / f"{stem}.md",
             "plot": out_dir / f"{stem}.png"}
    write_metrics_json(report, paths["json"])
    paths["table"].write_text(text)
    if draw is not None:
        draw(report, paths["plot"])
    return paths
