"""How a converter holds up away from its training microscope (`ssum eval --robustness`).

Freshly simulated pairs (the given seeds, the same at every level) are scored over a grid of
conditions: one factor at a time is moved through its levels while every other parameter stays
at the grid centre, the narrow domain (`SimParams()`, the shipped model's training data). Each
pair is scored as `ssum eval` scores it, unregistered and registered (one transform per pair,
estimated from the input, applied to every image): PSNR gain over the input and over the oracle
affine remap, SSIM, and the FRC agreement ratio (the model's FRC resolution against the SEM
divided by the input's; below 1 the model agrees with the SEM at finer detail)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from trainer.evaluation import metrics
from trainer.evaluation.baselines import oracle_affine
from trainer.evaluation.harness import (
    align_to_reference,
    evaluate_arrays,
    finite_mean,
    not_finite_counts,
    write_report_files,
)
from trainer.sim.domain import resolution_for_fwhm, reversed_table
from trainer.sim.optics import OpticsParams
from trainer.sim.pairs import make_pair
from trainer.sim.params import MisalignParams

log = logging.getLogger(__name__)

ROBUSTNESS_VERSION = 1
FRAMES = ("unregistered", "registered")
SUMMARY_KEYS = ("psnr_gain", "psnr_gain_over_affine", "ssim", "ssim_input", "frc_1_7_nm",
                "frc_1_7_nm_input")
MIN_REGISTERED_PX = 32  # a registered overlap smaller than this is not scored
MIN_SIZE_PX = 128
Convert = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Level:
    """One setting of a factor: simulation parameters by field name (make_pair's overrides);
    none for the grid centre."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def is_centre(self) -> bool:
        return not self.overrides


@dataclass(frozen=True)
class Factor:
    name: str
    description: str
    levels: tuple[Level, ...]


def _fwhm(nm: float) -> Level:
    return Level(f"{nm:g} nm", {"resolution_nm": resolution_for_fwhm(nm)})


def _photons(electrons: float) -> Level:
    return Level(f"{electrons:g} e", {"full_well_e": electrons})


def _falloff_label(falloff: float, offset: float) -> str:
    return f"radial {falloff:g}, off-centre {offset:g}"


def _pixel(nm: float) -> Level:
    return Level(f"{nm:g} nm", {"native_pixel_nm": nm})


def _misregistration_label(shift_px: float, rotation_deg: float, scale: float) -> str:
    return f"{shift_px:g} px, {rotation_deg:g} deg, {100 * scale:g} %"


def _misregistration(shift_px: float, rotation_deg: float, scale: float) -> Level:
    return Level(_misregistration_label(shift_px, rotation_deg, scale),
                 {"max_shift_px": shift_px, "max_rotation_deg": rotation_deg, "max_scale": scale})


# the grid centre's levels are labelled with the narrow domain's own values
_NARROW, _ALIGN = OpticsParams(), MisalignParams()
FACTORS: tuple[Factor, ...] = (
    Factor("fwhm", "PSF FWHM", (_fwhm(60.0), Level(f"{_NARROW.fwhm_nm:.1f} nm"), _fwhm(90.0),
                                _fwhm(120.0), _fwhm(150.0))),
    Factor("photons", "photo-electrons at full scale (camera noise)", (
        _photons(100.0), _photons(300.0), Level(f"{_NARROW.full_well_e:g} e"), _photons(3000.0))),
    Factor("falloff", "illumination fall-off", (
        Level("none", {"falloff": 0.0, "max_field_offset": 0.0}),
        Level(_falloff_label(_NARROW.falloff, _ALIGN.max_field_offset)),
        Level(_falloff_label(0.6, 0.5), {"falloff": 0.6, "max_field_offset": 0.5}),
        Level("+ tilt 0.3, vignetting 0.4", {"tilt": 0.3, "vignetting": 0.4}))),
    Factor("contrast", "material contrast table", (
        Level("normal"), Level("reversed", {"reflectance": reversed_table(_NARROW.reflectance)}))),
    Factor("pixel_size", "microscope pixel size (resampled to the model's)", (
        _pixel(7.0), Level("the model's"), _pixel(12.5), _pixel(15.0))),
    Factor("misregistration", "misregistration (largest shift, rotation, scale)", (
        _misregistration(0.0, 0.0, 0.0),
        Level(_misregistration_label(_ALIGN.max_shift_px, _ALIGN.max_rotation_deg, _ALIGN.max_scale)),
        _misregistration(4.0, 1.0, 0.02), _misregistration(8.0, 2.0, 0.04))),
    Factor("aberration", "pupil aberrations", (
        Level("none"), Level("spherical 0.3 waves", {"spherical_waves": 0.3}),
        Level("astigmatism 0.25 waves", {"astigmatism_waves": 0.25}))),
    Factor("defocus", "focal plane from the metal top", (
        Level("-300 nm", {"focus_z_nm": _NARROW.focus_z_nm - 300.0}), Level("0 nm"),
        Level("+300 nm", {"focus_z_nm": _NARROW.focus_z_nm + 300.0}))),
    Factor("sem", "SEM reference", (
        Level("narrow"),
        Level("bright rims, charging, line noise",
              {"edge_gain": 1.2, "charging_gain": 0.2, "line_offset_std": 0.03,
               "line_gain_std": 0.03}),
        Level("low dose (200 e)", {"electrons_per_pixel": 200.0}))),
)
FACTOR_NAMES = tuple(f.name for f in FACTORS)


@dataclass(frozen=True)
class RobustnessSettings:
    seeds: tuple[int, ...] = (300, 301, 302, 303)  # pair seeds, the same at every level
    size: int = 256  # image side, output pixels
    pixel_size_nm: float = 10.0  # the model's pixel size
    factors: tuple[str, ...] = FACTOR_NAMES

    def validated(self) -> RobustnessSettings:
        if not self.seeds:
            raise UserError("robustness needs at least one seed")
        if self.size < MIN_SIZE_PX:
            raise UserError(f"--size must be at least {MIN_SIZE_PX} px, not {self.size}")
        if self.pixel_size_nm <= 0:
            raise UserError(f"pixel size must be positive, not {self.pixel_size_nm}")
        unknown = [f for f in self.factors if f not in FACTOR_NAMES]
        if unknown or not self.factors:
            raise UserError(f"unknown factor(s) {', '.join(unknown) or '(none given)'}; "
                            f"choose from {', '.join(FACTOR_NAMES)}")
        return self


def score_images(images: dict[str, np.ndarray], pixel_size_nm: float) -> dict[str, float]:
    """evaluate_arrays's metrics of the prediction and the input, plus the PSNR gain over the
    oracle affine remap of the input."""
    row = evaluate_arrays(images["pred"], images["input"], images["ref"], pixel_size_nm)
    affine = oracle_affine(images["input"], images["ref"])
    row["psnr_gain_over_affine"] = row["psnr"] - metrics.psnr(affine, images["ref"])
    return row


def score_pair(convert: Convert, osr: np.ndarray, sem: np.ndarray,
               pixel_size_nm: float) -> dict[str, dict[str, float]]:
    """One pair's scores in both frames: as rendered, and registered to the SEM."""
    images = {"input": osr, "ref": sem,
              "pred": np.clip(convert(osr), 0.0, 1.0).astype(np.float32)}
    rows = {"unregistered": score_images(images, pixel_size_nm)}
    registered, _ = align_to_reference(images)
    if min(registered["ref"].shape) < MIN_REGISTERED_PX:
        log.warning("registration left %s px of a pair: its registered scores are left out",
                    "x".join(map(str, registered["ref"].shape)))
        rows["registered"] = {k: float("nan") for k in rows["unregistered"]}
    else:
        rows["registered"] = score_images(registered, pixel_size_nm)
    return rows


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Means of SUMMARY_KEYS over finite values and the FRC agreement ratio: the mean model FRC
    over the mean input FRC, both over the images where both are finite (NaN when none is)."""
    picked = [{k: r[k] for k in SUMMARY_KEYS} for r in rows]
    out: dict[str, Any] = finite_mean(picked)
    both = [r for r in picked if np.isfinite(r["frc_1_7_nm"]) and np.isfinite(r["frc_1_7_nm_input"])]
    nan = float("nan")
    model_nm = float(np.mean([r["frc_1_7_nm"] for r in both])) if both else nan
    input_nm = float(np.mean([r["frc_1_7_nm_input"] for r in both])) if both else nan
    out["frc_ratio"] = model_nm / input_nm if both else nan
    out["frc_paired_nm"] = {"model": model_nm, "input": input_nm, "images": len(both)}
    out["n"], out["not_finite"] = len(rows), not_finite_counts(picked)
    return out


def summarize_frames(rows: Sequence[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """summarize() of each frame of score_pair's rows."""
    return {frame: summarize([row[frame] for row in rows]) for frame in FRAMES}


def evaluate_condition(convert: Convert, level: Level,
                       settings: RobustnessSettings) -> dict[str, Any]:
    """Every seed's pair at this level, scored; per-frame summaries and per-image rows."""
    images: dict[str, dict[str, dict[str, float]]] = {}
    for seed in settings.seeds:
        osr, sem, _ = make_pair(seed, settings.size, settings.pixel_size_nm, **level.overrides)
        images[str(seed)] = score_pair(convert, osr, sem, settings.pixel_size_nm)
    return summarize_frames(list(images.values())) | \
        {"images": images}


def grid_pairs(settings: RobustnessSettings) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every distinct level's pairs (the grid centre once): (factor=level/seed, OSR, SEM)."""
    s = settings.validated()
    seen: set[str] = set()
    out = []
    for factor in (f for f in FACTORS if f.name in s.factors):
        for level in factor.levels:
            key = json.dumps(level.overrides, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            for seed in s.seeds:
                osr, sem, _ = make_pair(seed, s.size, s.pixel_size_nm, **level.overrides)
                out.append((f"{factor.name}={level.label}/{seed}", osr, sem))
    return out


def evaluate_robustness(convert: Convert, settings: RobustnessSettings | None = None) -> dict[str, Any]:
    """Score `convert` over every chosen factor's levels (the grid centre is simulated once)."""
    s = (settings or RobustnessSettings()).validated()
    cache: dict[str, dict[str, Any]] = {}
    factors = []
    for factor in (f for f in FACTORS if f.name in s.factors):
        levels = []
        for level in factor.levels:
            key = json.dumps(level.overrides, sort_keys=True)
            if key not in cache:
                cache[key] = evaluate_condition(convert, level, s)
                log.info("%s = %s: gain %.2f dB", factor.name, level.label,
                         cache[key]["unregistered"]["psnr_gain"])
            levels.append({"label": level.label, "centre": level.is_centre,
                           "overrides": level.overrides, **cache[key]})
        factors.append({"name": factor.name, "description": factor.description, "levels": levels})
    return {"version": ROBUSTNESS_VERSION, "size": s.size, "pixel_size_nm": s.pixel_size_nm,
            "seeds": list(s.seeds), "centre": "narrow domain (SimParams())", "factors": factors}


def _number(value: float, digits: int = 2, signed: bool = False) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


TABLE_HEADER = ("| factor | level | gain dB | gain dB, reg. | vs affine dB | vs affine dB, reg. "
                "| SSIM (input) | SSIM reg. (input) | FRC ratio (nm / nm) "
                "| FRC ratio, reg. (nm / nm) |")


def _frc_cell(summary: dict[str, Any]) -> str:
    paired = summary["frc_paired_nm"]
    if not np.isfinite(summary["frc_ratio"]):
        return "n/a"
    return f"{summary['frc_ratio']:.2f} ({paired['model']:.0f} / {paired['input']:.0f})"


def format_table(report: dict[str, Any]) -> str:
    """The markdown table: one row per factor level, the grid centre marked with *."""
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    for factor in report["factors"]:
        for level in factor["levels"]:
            u, r = level["unregistered"], level["registered"]
            label = level["label"] + (" *" if level["centre"] else "")
            lines.append(
                f"| {factor['name']} | {label} | {_number(u['psnr_gain'], signed=True)} "
                f"| {_number(r['psnr_gain'], signed=True)} "
                f"| {_number(u['psnr_gain_over_affine'], signed=True)} "
                f"| {_number(r['psnr_gain_over_affine'], signed=True)} "
                f"| {_number(u['ssim'], 3)} ({_number(u['ssim_input'], 3)}) "
                f"| {_number(r['ssim'], 3)} ({_number(r['ssim_input'], 3)}) "
                f"| {_frc_cell(u)} | {_frc_cell(r)} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path:
    """One panel per factor: PSNR gain over the input and over the oracle affine remap against
    the levels, unregistered and registered; the grid centre's level on a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = report["factors"]
    cols = min(3, len(factors))
    rows = -(-len(factors) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, factor in zip(axes.flat, factors, strict=False):
        x = np.arange(len(factor["levels"]))
        for frame, colour in (("unregistered", "tab:blue"), ("registered", "tab:orange")):
            for key, style, what in (("psnr_gain", "-o", "over input"),
                                     ("psnr_gain_over_affine", "--s", "over affine")):
                ax.plot(x, [lv[frame][key] for lv in factor["levels"]], style, color=colour,
                        label=f"{what}, {frame}", markersize=4)
        for i, level in enumerate(factor["levels"]):
            if level["centre"]:
                ax.axvline(i, color="grey", linestyle=":")
        ax.axhline(0.0, color="black", linewidth=0.7)
        ax.set_xticks(x, [lv["label"] for lv in factor["levels"]], rotation=20, fontsize=7,
                      ha="right")
        ax.set_title(factor["description"], fontsize=9)
        ax.set_ylabel("PSNR gain, dB", fontsize=8)
    for ax in list(axes.flat)[len(factors):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_robustness(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """OUT/robustness.json (strict JSON), OUT/robustness.md (the table) and OUT/robustness.png."""
    seeds = report["seeds"]
    text = (f"{len(seeds)} pairs per level (seeds {', '.join(map(str, seeds))}), {report['size']} "
            f"px at {report['pixel_size_nm']:g} nm; * the grid centre ({report['centre']}); gains "
            "are the model's PSNR over the input's and over the oracle affine remap's; FRC ratio = "
            "model FRC / input FRC (1/7 threshold, agreement with the SEM; mean nm of each in "
            "brackets, over the pairs where both are finite).\n\n" + format_table(report) + "\n")
    return write_report_files(report, out_dir, "robustness", text, plot)
