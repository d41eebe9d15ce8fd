"""A simulated SSUM scan: a grid of overlapping camera tiles with true and reported stage
positions, plus the ground-truth SEM mosaic, written with edge.tools.scanfile."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from edge.imaging.imageio import to_uint16
from edge.tools.scanfile import write_scan
from trainer.sim.defects import DefectParams, InjectedDefect, inject_defects, moved
from trainer.sim.layout import Layout, generate_layout
from trainer.sim.optics import capture, render_osr_clean
from trainer.sim.pairs import SimParams, field_centre
from trainer.sim.sem import add_sem_noise, render_clean, render_sem

TILE_KINDS = ("osr", "sem")

T0_UNIX_S = 1_750_000_000.0  # fixed start time keeps recordings reproducible
FRAME_INTERVAL_S = 0.5
EXPOSURE_MS = 20.0


def mosaic_shape(rows: int, cols: int, tile: int, overlap: int) -> tuple[int, int]:
    step = tile - overlap
    return (rows - 1) * step + tile, (cols - 1) * step + tile


def cut_window(image: np.ndarray, top_left_yx: tuple[float, float], tile: int) -> np.ndarray:
    """A tile x tile window whose top-left pixel sits at a sub-pixel position (bilinear)."""
    centre = (top_left_yx[1] + (tile - 1) / 2.0, top_left_yx[0] + (tile - 1) / 2.0)
    return cv2.getRectSubPix(image, (tile, tile), centre)


def _with_defects(layout: Layout, seed: int, defects: DefectParams, params: SimParams,
                  region: tuple[int, int, int, int],
                  ) -> tuple[Layout, list[InjectedDefect], np.ndarray]:
    """The chip with defects in `region`, their truth, and the defect-free chip's SEM image."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 15]))
    golden = render_sem(layout, rng, params.sem)
    defective, truth = inject_defects(layout, rng, defects, params.layout, region)
    return defective, truth, golden


def _camera(window: np.ndarray, tiles_of: str, rng: np.random.Generator, params: SimParams,
            centre: tuple[float, float]) -> np.ndarray:
    if tiles_of == "osr":
        return capture(window, rng, params.optics, centre)
    return np.clip(add_sem_noise(window, rng, params.sem), 0, 1)


def simulate_scan(
    out: Path,
    rows: int = 3,
    cols: int = 3,
    tile: int = 512,
    overlap: int = 64,
    seed: int = 0,
    pixel_size_nm: float = 10.0,
    stage_error_nm: float = 20.0,
    defects: DefectParams | None = None,
    tiles_of: str = "osr",
) -> Path:
    """Write a scan directory; the stage reports the nominal grid, the true positions differ by a
    Gaussian error (std `stage_error_nm` per axis), recorded under `simulation.tiles_true`.

    Ground truth mosaics have their pixel (0, 0) at stage position (0, 0). With `defects`, they
    are injected into the chip (truth list under `simulation.defects`, in mosaic pixels and
    stage nm) and the ground truth adds `sem_reference`, the defect-free chip's SEM image with
    noise of its own (a golden reference), and `layout`, its pattern (255 where metal or via:
    a die-to-database reference). `tiles_of` "sem" records SEM tiles instead of the
    SSUM camera's (to test inspection without a model)."""
    if rows < 1 or cols < 1 or not 0 <= overlap < tile:
        raise ValueError("need rows, cols >= 1 and 0 <= overlap < tile")
    if tiles_of not in TILE_KINDS:
        raise ValueError(f"tiles_of must be one of {', '.join(TILE_KINDS)}")
    params = SimParams()
    layout_rng, sem_rng, stage_rng, camera_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    height, width = mosaic_shape(rows, cols, tile, overlap)
    margin = math.ceil(5 * stage_error_nm / pixel_size_nm) + 4
    layout = generate_layout(layout_rng, (height + 2 * margin, width + 2 * margin), pixel_size_nm, params.layout)
    truth: list[InjectedDefect] = []
    extra_truth: dict[str, np.ndarray] = {}
    if defects is not None:
        inner = np.s_[margin:margin + height, margin:margin + width]
        extra_truth["layout"] = layout.top_mask()[inner].astype(np.uint8) * 255
        layout, truth, golden = _with_defects(layout, seed, defects, params,
                                              (margin, margin, margin + width, margin + height))
        extra_truth["sem_reference"] = golden[inner]
    sem = render_sem(layout, sem_rng, params.sem)
    clean = render_osr_clean(layout, params.optics)
    source = clean if tiles_of == "osr" else render_clean(layout, params.sem)
    centre = field_centre(stage_rng, params.misalign.max_field_offset)
    step_nm = (tile - overlap) * pixel_size_nm
    tiles, truth_records = [], []
    for seq, (r, c) in enumerate((r, c) for r in range(rows) for c in range(cols)):
        reported = (c * step_nm, r * step_nm)
        error = stage_rng.normal(0.0, stage_error_nm, 2) if stage_error_nm > 0 else np.zeros(2)
        true_x, true_y = reported[0] + error[0], reported[1] + error[1]
        top_left = (margin + true_y / pixel_size_nm, margin + true_x / pixel_size_nm)
        pixels = _camera(cut_window(source, top_left, tile), tiles_of, camera_rng, params, centre)
        info = {
            "seq": seq, "row": r, "col": c, "x_nm": reported[0], "y_nm": reported[1],
            "t_capture": T0_UNIX_S + seq * FRAME_INTERVAL_S,
            "z_nm": params.optics.focus_z_nm, "exposure_ms": EXPOSURE_MS,
        }
        tiles.append((info, to_uint16(pixels)))
        truth_records.append({"seq": seq, "x_nm_true": float(true_x), "y_nm_true": float(true_y),
                              "error_x_nm": float(true_x - reported[0]), "error_y_nm": float(true_y - reported[1])})
    crop = np.s_[margin : margin + height, margin : margin + width]
    simulation = {
        "seed": seed,
        "stage_error_nm": stage_error_nm,
        "reported_positions": "nominal grid; true = reported + error",
        "field_centre": centre,
        "tiles_true": truth_records,
        "tiles_of": tiles_of,
        "defects": [moved(d, margin, margin).to_dict(pixel_size_nm) for d in truth],
        "params": asdict(params),
    }
    return write_scan(
        out, f"sim-{seed:04d}", pixel_size_nm, tiles,
        ground_truth={"sem_mosaic": sem[crop], "osr_mosaic_clean": np.clip(clean[crop], 0, 1),
                      **extra_truth},
        extra={"rows": rows, "cols": cols, "overlap_px": overlap, "simulation": simulation},
    )
