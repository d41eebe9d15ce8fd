"""Registered-by-hand OSR/SEM training pairs: same layout, SEM and SSUM renderings, plus the
misregistration that manual alignment leaves between them."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import list_images, read_image, write_tiff16
from edge.imaging.resample import rescale_to_pixel_size
from trainer.sim.domain import FIXED_DOMAINS, DomainRanges, contrast_table, domain_params
from trainer.sim.layout import generate_layout
from trainer.sim.optics import OpticsParams, capture, degrade_sem_to_osr, render_osr_clean
from trainer.sim.params import MisalignParams, SimParams, apply_overrides
from trainer.sim.sem import render_sem

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
MARGIN_PX = 16
# a pair's seed spawns independent streams, in this order: layout, SEM noise, misregistration,
# camera noise, and the randomized domain's draw
N_STREAMS = 5


def _motion(rng: np.random.Generator, params: MisalignParams) -> tuple[float, float, float, float]:
    """(dx, dy, rotation_deg, scale): a random shift, rotation and scale about the image
    centre, drawn from the misregistration's ranges."""
    dx, dy = rng.uniform(-params.max_shift_px, params.max_shift_px, 2)
    angle = rng.uniform(-params.max_rotation_deg, params.max_rotation_deg)
    scale = 1.0 + rng.uniform(-params.max_scale, params.max_scale)
    return float(dx), float(dy), float(angle), float(scale)


def misregistration_record(size: int, dx: float, dy: float, angle: float, scale: float) -> dict[str, Any]:
    """The motion as recorded: `matrix` maps SEM pixel coordinates (x, y) to where that point
    appears in the OSR image."""
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


def native_grid(size: int, pixel_size_nm: float, native_pixel_nm: float | None) -> tuple[int, float]:
    """(side in native pixels, native pixel size): the native pixel is adjusted so that the
    native frame resamples to exactly `size` output pixels."""
    if native_pixel_nm is None:
        return size, pixel_size_nm
    if native_pixel_nm <= 0:
        raise UserError(f"native pixel size must be positive, not {native_pixel_nm}")
    side = max(1, round(size * pixel_size_nm / native_pixel_nm))
    return side, size * pixel_size_nm / side


def pair_streams(seed: int) -> list[np.random.Generator]:
    """The pair's independent random streams (see N_STREAMS)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(N_STREAMS)]


def make_pair(
    seed: int, size: int = 512, pixel_size_nm: float = 10.0, misalign: bool = True,
    params: SimParams | None = None, **overrides: Any
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One (osr, sem, meta): float32 [0, 1], same shape; `meta` records every parameter.

    `params` (default: the narrow domain's) with `overrides` applied by field name. With a
    native pixel size (params.sampling), the pair is rendered at it and both images are
    resampled to `pixel_size_nm`; the misregistration is in output pixels."""
    params = apply_overrides(params or SimParams(), overrides)
    layout_rng, sem_rng, align_rng, camera_rng, _ = pair_streams(seed)
    side, native_nm = native_grid(size, pixel_size_nm, params.sampling.native_pixel_nm)
    full = side + 2 * MARGIN_PX
    layout = generate_layout(layout_rng, (full, full), native_nm, params.layout)
    sem = render_sem(layout, sem_rng, params.sem)
    clean = render_osr_clean(layout, params.optics)
    dx, dy, angle, scale = _motion(align_rng, params.misalign)
    centre = field_centre(align_rng, params.misalign.max_field_offset)
    if not misalign:
        dx, dy, angle, scale = 0.0, 0.0, 0.0, 1.0
    to_native = pixel_size_nm / native_nm
    warp = misregistration_record(full, dx * to_native, dy * to_native, angle, scale)
    clean = _warp(clean, np.array(warp["matrix"]))
    crop = np.s_[MARGIN_PX : MARGIN_PX + side, MARGIN_PX : MARGIN_PX + side]
    osr, sem = capture(clean[crop], camera_rng, params.optics, centre), np.ascontiguousarray(sem[crop])
    if side != size or native_nm != pixel_size_nm:
        osr, sem = (np.clip(rescale_to_pixel_size(img, native_nm, pixel_size_nm), 0.0, 1.0)
                    for img in (osr, sem))
    meta = {
        "seed": seed,
        "size": size,
        "pixel_size_nm": pixel_size_nm,
        "native_pixel_nm": native_nm,
        "misaligned": misalign,
        # the same motion expressed in the cropped output frame
        "misregistration": misregistration_record(size, dx, dy, angle, scale),
        "field_centre": centre,
        "effective_na": params.optics.effective_na,
        "fwhm_nm": params.optics.fwhm_nm,
        "contrast_table": contrast_table(params.optics, params.sem),
        "params": asdict(params),
    }
    return osr, sem, meta


def pair_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_pairs(
    out: Path, n: int, seed: int = 0, size: int = 512, pixel_size_nm: float = 10.0,
    misalign: bool = True, domain: str = "narrow"
) -> Path:
    """Write out/osr/NNNN.tif, out/sem/NNNN.tif (16-bit) and out/meta.json; returns out.

    domains "narrow" (the default parameters) and "holdout": every pair with the same parameters
    (recorded once, as `params`); "randomized": each pair draws its own (trainer/sim/domain.py),
    recorded with the pair."""
    out = Path(out)
    if n < 1:
        raise UserError(f"--n must be at least 1, not {n}")
    pairs = []
    for i in range(n):
        pseed = pair_seed(seed, i)
        params = domain_params(domain, pair_streams(pseed)[-1])
        osr, sem, meta = make_pair(pseed, size, pixel_size_nm, misalign, params)
        name = f"{i:04d}.tif"
        write_tiff16(out / "osr" / name, osr)
        write_tiff16(out / "sem" / name, sem)
        record = {"file": name, **meta}
        if domain in FIXED_DOMAINS:
            shared = record.pop("params")  # the same for every pair: recorded once
        pairs.append(record)
        log.debug("pair %s written", name)
    summary = {
        "format": "ssum-pairs",
        "version": FORMAT_VERSION,
        "n": n,
        "seed": seed,
        "size": size,
        "pixel_size_nm": pixel_size_nm,
        "misalign": misalign,
        "domain": domain,
        "misregistration_convention": "matrix maps SEM pixel (x, y) to its position in the OSR image",
        **({"params": shared} if domain in FIXED_DOMAINS else {"ranges": asdict(DomainRanges())}),
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
