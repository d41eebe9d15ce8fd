"""A simulated SSUM scan: a grid of overlapping camera tiles (or z-stacks of them) with true and
reported stage positions, plus the ground-truth SEM mosaic, written with edge.tools.scanfile."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.imaging.imageio import to_uint16
from edge.tools.scanfile import write_scan
from trainer.sim.defects import DefectParams, InjectedDefect, inject_defects, moved
from trainer.sim.layers import generate_multilayer
from trainer.sim.layout import Layout, generate_layout, repeat_pitch_px
from trainer.sim.optics import OpticsParams, capture
from trainer.sim.pairs import SimParams, field_centre
from trainer.sim.sem import add_sem_noise, render_clean, render_sem
from trainer.sim.zstack import StackParams, drift_px, focus_heights, render_in_focus, render_planes

T0_UNIX_S = 1_750_000_000.0  # fixed start time keeps recordings reproducible
FRAME_INTERVAL_S = 0.5
EXPOSURE_MS = 20.0
TILE_KINDS = ("osr", "sem")


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


@dataclass(frozen=True)
class _Frames:
    """What every tile is cut from: one clean virtual image per focal plane."""

    cleans: list[np.ndarray]
    z_nm: list[float]
    stacked: bool
    margin: int
    centre: tuple[float, float]
    tiles_of: str = "osr"


def _layout(rng: np.random.Generator, shape: tuple[int, int], pixel_size_nm: float,
            params: SimParams, multilayer: bool, array_cells: tuple[int, int] | None,
            ) -> Layout:
    if multilayer:
        return generate_multilayer(rng, shape, pixel_size_nm, layout=params.layout)
    return generate_layout(rng, shape, pixel_size_nm, params.layout, array_cells)


def _planes(layout: Layout, planes: int, multilayer: bool, optics: OpticsParams) -> list[float]:
    """The focal heights: the top of the metal for a single plane of the classic layout, else
    planes spanning the layout's heights."""
    if planes == 1 and not multilayer:
        return [optics.focus_z_nm]
    return focus_heights(layout.height_nm, StackParams(planes=planes))


def _position(frames: _Frames, tile: int, top_left: tuple[float, float], drift: np.ndarray,
              rng: np.random.Generator, params: SimParams) -> list[np.ndarray]:
    """The camera frames of one scan position, one per plane, each at its drifted position."""
    shots = []
    for clean, (dy, dx) in zip(frames.cleans, drift, strict=True):
        window = cut_window(clean, (top_left[0] + dy, top_left[1] + dx), tile)
        if frames.tiles_of == "osr":
            shots.append(to_uint16(capture(window, rng, params.optics, frames.centre)))
        else:
            shots.append(to_uint16(np.clip(add_sem_noise(window, rng, params.sem), 0, 1)))
    return shots


def simulate_scan(
    out: Path,
    rows: int = 3,
    cols: int = 3,
    tile: int = 512,
    overlap: int = 64,
    seed: int = 0,
    pixel_size_nm: float = 10.0,
    stage_error_nm: float = 20.0,
    planes: int = 1,
    multilayer: bool = False,
    defects: DefectParams | None = None,
    tiles_of: str = "osr",
    array_cells: tuple[int, int] | None = None,
) -> Path:
    """Write a scan directory; the stage reports the nominal grid, the true positions differ by a
    Gaussian error (std `stage_error_nm` per axis), recorded under `simulation.tiles_true`.

    With `planes` > 1 every position is a z-stack: that many frames focused at heights spanning
    the layout's (`z_nm`, `stack_size` set), drifting sideways between frames (recorded too).
    `multilayer` draws a layout of several layers at their own heights (trainer/sim/layers.py).
    Ground truth mosaics have their pixel (0, 0) at stage position (0, 0). With `defects`, they
    are injected into the chip (truth list under `simulation.defects`, in mosaic pixels and
    stage nm) and the ground truth adds `sem_reference`, the defect-free chip's SEM image with
    noise of its own (a golden reference), and `layout`, its pattern (255 where metal or via:
    a die-to-database reference). `tiles_of` "sem" records SEM tiles instead of the
    SSUM camera's (to test inspection without a model; one plane only). `array_cells` (x, y):
    the chip is an array, one unit of that many design-grid cells repeated (its pitch recorded
    as `simulation.array_pitch_nm`; cell-to-cell inspection)."""
    if rows < 1 or cols < 1 or not 0 <= overlap < tile or planes < 1:
        raise ValueError("need rows, cols, planes >= 1 and 0 <= overlap < tile")
    if tiles_of not in TILE_KINDS:
        raise ValueError(f"tiles_of must be one of {', '.join(TILE_KINDS)}")
    if tiles_of == "sem" and planes > 1:
        raise ValueError("SEM tiles have one plane: the SEM's depth of field needs no z-stack")
    if array_cells is not None and (multilayer or min(array_cells) < 1):
        raise ValueError("an array needs a unit of at least 1 x 1 cells and a single layer")
    params = SimParams()
    stack = StackParams(planes=planes)
    layout_rng, sem_rng, stage_rng, camera_rng, drift_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    height, width = mosaic_shape(rows, cols, tile, overlap)
    drift_nm = 5 * stack.drift_nm * math.sqrt(planes) if planes > 1 else 0.0
    margin = math.ceil((5 * stage_error_nm + drift_nm) / pixel_size_nm) + 4
    layout = _layout(layout_rng, (height + 2 * margin, width + 2 * margin), pixel_size_nm,
                     params, multilayer, array_cells)
    truth: list[InjectedDefect] = []
    extra_truth: dict[str, np.ndarray] = {}
    if defects is not None:
        inner = np.s_[margin:margin + height, margin:margin + width]
        extra_truth["layout"] = layout.top_mask()[inner].astype(np.uint8) * 255
        layout, truth, golden = _with_defects(layout, seed, defects, params,
                                              (margin, margin, margin + width, margin + height))
        extra_truth["sem_reference"] = golden[inner]
    sem = render_sem(layout, sem_rng, params.sem)
    z_nm = _planes(layout, planes, multilayer, params.optics)
    cleans = (render_planes(layout, z_nm, params.optics) if tiles_of == "osr"
              else [render_clean(layout, params.sem)])
    frames = _Frames(cleans, z_nm, planes > 1, margin,
                     field_centre(stage_rng, params.misalign.max_field_offset), tiles_of)
    step_nm = (tile - overlap) * pixel_size_nm
    tiles: list[tuple[dict, np.ndarray]] = []
    truth_records = []
    for r, c in ((r, c) for r in range(rows) for c in range(cols)):
        reported = (c * step_nm, r * step_nm)
        error = stage_rng.normal(0.0, stage_error_nm, 2) if stage_error_nm > 0 else np.zeros(2)
        drift = (drift_px(drift_rng, planes, stack.drift_nm, pixel_size_nm) if frames.stacked
                 else np.zeros((1, 2)))
        top_left = (margin + (reported[1] + error[1]) / pixel_size_nm,
                    margin + (reported[0] + error[0]) / pixel_size_nm)
        shots = _position(frames, tile, top_left, drift, camera_rng, params)
        for k, pixels in enumerate(shots):
            seq = len(tiles)
            info = {
                "seq": seq, "row": r, "col": c, "x_nm": reported[0], "y_nm": reported[1],
                "t_capture": T0_UNIX_S + seq * FRAME_INTERVAL_S,
                "z_nm": z_nm[k], "exposure_ms": EXPOSURE_MS,
            } | ({"stack_size": planes} if frames.stacked else {})
            tiles.append((info, pixels))
            truth_records.append(_true_position(seq, reported, error, drift[k], pixel_size_nm))
    crop = np.s_[margin : margin + height, margin : margin + width]
    simulation = {
        "seed": seed,
        "stage_error_nm": stage_error_nm,
        "reported_positions": "nominal grid; true = reported + error (stage error and drift)",
        "field_centre": frames.centre,
        "tiles_true": truth_records,
        "tiles_of": tiles_of,
        "defects": [moved(d, margin, margin).to_dict(pixel_size_nm) for d in truth],
        "params": asdict(params),
        "multilayer": multilayer,
        "planes": planes,
    } | ({"stack": asdict(stack), "z_nm": z_nm} if frames.stacked else {}) | (
        {"array_pitch_nm": [v * pixel_size_nm for v in
                            repeat_pitch_px(array_cells, pixel_size_nm, params.layout)]}
        if array_cells else {})
    return write_scan(
        out, f"sim-{seed:04d}", pixel_size_nm, tiles,
        ground_truth=_ground_truth(layout, sem, frames, params.optics, crop, multilayer)
        | extra_truth,
        extra={"rows": rows, "cols": cols, "overlap_px": overlap, "simulation": simulation},
    )


def _true_position(seq: int, reported: tuple[float, float], error: np.ndarray, drift: np.ndarray,
                   pixel_size_nm: float) -> dict[str, float]:
    true_x = reported[0] + error[0] + drift[1] * pixel_size_nm
    true_y = reported[1] + error[1] + drift[0] * pixel_size_nm
    return {"seq": seq, "x_nm_true": float(true_x), "y_nm_true": float(true_y),
            "error_x_nm": float(true_x - reported[0]), "error_y_nm": float(true_y - reported[1]),
            "drift_x_nm": float(drift[1] * pixel_size_nm),
            "drift_y_nm": float(drift[0] * pixel_size_nm)}


def _ground_truth(layout: Layout, sem: np.ndarray, frames: _Frames, optics: OpticsParams,
                  crop: Any, multilayer: bool) -> dict[str, np.ndarray]:
    """The SEM mosaic, the noise-free OSR mosaic (every layer in focus for a stack) and, for a
    multilayer layout, the surface height in nm (uint16)."""
    if frames.stacked:
        clean = render_in_focus(layout, optics)
    else:
        clean = frames.cleans[0] if frames.tiles_of == "osr" else render_planes(
            layout, frames.z_nm, optics)[0]
    truth = {"sem_mosaic": sem[crop], "osr_mosaic_clean": np.clip(clean[crop], 0, 1)}
    if multilayer:
        truth["height_nm"] = np.round(layout.height_nm[crop]).astype(np.uint16)
    return truth
