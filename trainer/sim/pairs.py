"""Registered-by-hand OSR/SEM training pairs: same layout, SEM and SSUM renderings, plus the
misregistration that manual alignment leaves between them."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import list_images, read_image, write_tiff16
from edge.imaging.resample import rescale_to_pixel_size
from trainer.sim.layout import LayoutParams, generate_layout
from trainer.sim.optics import OpticsParams, capture, degrade_sem_to_osr, render_osr_clean
from trainer.sim.sem import SemParams, render_sem

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
MARGIN_PX = 16


@dataclass(frozen=True)
class MisalignParams:
    max_shift_px: float = 2.0  # uniform in [-max, max] per axis
    max_rotation_deg: float = 0.5
    max_scale: float = 0.01  # scale drawn uniformly in [1 - max, 1 + max]
    max_field_offset: float = 0.2  # microsphere field centre offset, fraction of the half frame


@dataclass(frozen=True)
class SimParams:
    layout: LayoutParams = field(default_factory=LayoutParams)
    sem: SemParams = field(default_factory=SemParams)
    optics: OpticsParams = field(default_factory=OpticsParams)
    misalign: MisalignParams = field(default_factory=MisalignParams)


def apply_overrides(params: SimParams, overrides: dict[str, Any]) -> SimParams:
    """Replace fields by name (e.g. resolution_nm=100, tone="lines") in whichever group has them."""
    groups = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    for key, value in overrides.items():
        owner = [g for g, obj in groups.items() if key in {f.name for f in dataclasses.fields(obj)}]
        if not owner:
            raise UserError(f"unknown simulation parameter {key!r}")
        groups[owner[0]] = dataclasses.replace(groups[owner[0]], **{key: value})
    return SimParams(**groups)


def misregistration(rng: np.random.Generator, size: int, params: MisalignParams) -> dict[str, Any]:
    """Random shift, rotation and scale about the image centre; `matrix` maps SEM pixel
    coordinates (x, y) to where that point appears in the OSR image."""
    dx, dy = rng.uniform(-params.max_shift_px, params.max_shift_px, 2)
    angle = rng.uniform(-params.max_rotation_deg, params.max_rotation_deg)
    scale = 1.0 + rng.uniform(-params.max_scale, params.max_scale)
    return misregistration_record(size, float(dx), float(dy), float(angle), float(scale))


def misregistration_record(size: int, dx: float, dy: float, angle: float, scale: float) -> dict[str, Any]:
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += np.array([dx, dy])
    return {"dx_px": dx, "dy_px": dy, "rotation_deg": angle, "scale": scale, "matrix": matrix.tolist()}


def field_centre(rng: np.random.Generator, max_offset: float) -> tuple[float, float]:
    """Where the microsphere's field centre falls on the camera frame (fractions of half size)."""
    cy, cx = rng.uniform(-max_offset, max_offset, 2)
    return float(cy), float(cx)


def _warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(image, matrix, image.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def make_pair(
    seed: int, size: int = 512, pixel_size_nm: float = 10.0, misalign: bool = True, **overrides: Any
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One (osr, sem, meta): float32 [0, 1], same shape; `meta` records every parameter."""
    params = apply_overrides(SimParams(), overrides)
    layout_rng, sem_rng, align_rng, camera_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    full = size + 2 * MARGIN_PX
    layout = generate_layout(layout_rng, (full, full), pixel_size_nm, params.layout)
    sem = render_sem(layout, sem_rng, params.sem)
    clean = render_osr_clean(layout, params.optics)
    record = misregistration(align_rng, full, params.misalign)
    centre = field_centre(align_rng, params.misalign.max_field_offset)
    if not misalign:
        record = misregistration_record(full, 0.0, 0.0, 0.0, 1.0)
    clean = _warp(clean, np.array(record["matrix"]))
    crop = np.s_[MARGIN_PX : MARGIN_PX + size, MARGIN_PX : MARGIN_PX + size]
    osr = capture(clean[crop], camera_rng, params.optics, centre)
    # the same motion expressed in the cropped frame (same centre, so only the offset changes)
    record = misregistration_record(size, record["dx_px"], record["dy_px"], record["rotation_deg"], record["scale"])
    meta = {
        "seed": seed,
        "size": size,
        "pixel_size_nm": pixel_size_nm,
        "misaligned": misalign,
        "misregistration": record,
        "field_centre": centre,
        "effective_na": params.optics.effective_na,
        "params": asdict(params),
    }
    return osr, np.ascontiguousarray(sem[crop]), meta


def pair_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_pairs(
    out: Path, n: int, seed: int = 0, size: int = 512, pixel_size_nm: float = 10.0, misalign: bool = True
) -> Path:
    """Write out/osr/NNNN.tif, out/sem/NNNN.tif (16-bit) and out/meta.json; returns out."""
    out = Path(out)
    if n < 1:
        raise UserError(f"--n must be at least 1, not {n}")
    pairs = []
    for i in range(n):
        osr, sem, meta = make_pair(pair_seed(seed, i), size, pixel_size_nm, misalign)
        name = f"{i:04d}.tif"
        write_tiff16(out / "osr" / name, osr)
        write_tiff16(out / "sem" / name, sem)
        params = meta.pop("params")
        pairs.append({"file": name, **meta})
        log.debug("pair %s written", name)
    summary = {
        "format": "ssum-pairs",
        "version": FORMAT_VERSION,
        "n": n,
        "seed": seed,
        "size": size,
        "pixel_size_nm": pixel_size_nm,
        "misalign": misalign,
        "misregistration_convention": "matrix maps SEM pixel (x, y) to its position in the OSR image",
        "params": params,
        "pairs": pairs,
    }
    (out / "meta.json").write_text(json.dumps(summary, indent=1))
    return out


def write_degraded_pairs(
    sem_dir: Path, out: Path, source_pixel_nm: float, pixel_size_nm: float = 10.0, seed: int = 0
) -> Path:
    """Real SEM images as references, their optical rendering as the OSR input (test data only).

    Each SEM image is resampled from `source_pixel_nm` to `pixel_size_nm` (the model's) and put
    through the simulator's optical forward model (`degrade_sem_to_osr`). Writes the same layout
    as `write_pairs`: out/osr, out/sem (16-bit, same names as the sources) and out/meta.json."""
    out = Path(out)
    sources = list_images(sem_dir)
    if not sources:
        raise UserError(f"{sem_dir}: no images found")
    if source_pixel_nm <= 0 or pixel_size_nm <= 0:
        raise UserError("pixel sizes must be positive")
    pairs = []
    for i, source in enumerate(sources):
        sem = rescale_to_pixel_size(read_image(source), source_pixel_nm, pixel_size_nm)
        osr = degrade_sem_to_osr(sem, pixel_size_nm, np.random.default_rng(pair_seed(seed, i)))
        name = f"{source.stem}.tif"
        write_tiff16(out / "osr" / name, osr)
        write_tiff16(out / "sem" / name, sem)
        pairs.append({"file": name, "source": str(source), "shape": list(sem.shape)})
    summary = {
        "format": "ssum-degraded-real", "version": FORMAT_VERSION, "n": len(pairs), "seed": seed,
        "pixel_size_nm": pixel_size_nm, "source_pixel_nm": source_pixel_nm,
        "misalign": False, "params": asdict(OpticsParams()), "pairs": pairs,
    }
    (out / "meta.json").write_text(json.dumps(summary, indent=1))
    return out
