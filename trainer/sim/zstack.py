"""Z-stacks of SSUM planes: the rig steps the focus through the chip's height and records one
frame per plane; between planes the stage drifts a little sideways.

Each plane is the optical model's own rendering (`render_osr_clean`) with its focal plane at the
plane's z: every layer is blurred by the defocus PSF of its distance from that plane, so a layer
is sharp only in the planes near its height. The SEM sees every layer sharp (its depth of field
is microns)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import write_stack, write_tiff16
from trainer.sim.layers import LayerStackParams, generate_multilayer
from trainer.sim.layout import Layout
from trainer.sim.optics import (
    OpticsParams,
    blur,
    capture,
    optical_psf,
    reflectance_map,
    render_osr_clean,
)
from trainer.sim.pairs import FORMAT_VERSION, pair_seed
from trainer.sim.params import SimParams
from trainer.sim.sem import render_sem


@dataclass(frozen=True)
class StackParams:
    planes: int = 7
    z_step_nm: float = 0.0  # 0: the planes span the layout's lowest to highest surface
    drift_nm: float = 10.0  # std of the lateral drift from one plane to the next, per axis

    def __post_init__(self) -> None:
        if self.planes < 1 or self.z_step_nm < 0 or self.drift_nm < 0:
            raise ValueError("need planes >= 1, z_step_nm >= 0 and drift_nm >= 0")


def focus_heights(height_nm: np.ndarray, params: StackParams) -> list[float]:
    """The planes' focal heights (nm), ascending, centred on the layout's height range."""
    lo, hi = float(np.min(height_nm)), float(np.max(height_nm))
    if params.planes == 1:
        return [(lo + hi) / 2.0]
    step = params.z_step_nm or (hi - lo) / (params.planes - 1)
    first = (lo + hi) / 2.0 - step * (params.planes - 1) / 2.0
    return [first + k * step for k in range(params.planes)]


def render_planes(layout: Layout, z_nm: list[float], optics: OpticsParams) -> list[np.ndarray]:
    """The noise-free virtual image of each plane, focused at its z."""
    return [render_osr_clean(layout, dataclasses.replace(optics, focus_z_nm=z)) for z in z_nm]


def render_in_focus(layout: Layout, optics: OpticsParams) -> np.ndarray:
    """The virtual image with every layer in focus: what an ideal fusion of the stack gives."""
    psf = optical_psf(layout.pixel_size_nm, optics)
    return optics.background + optics.contrast * blur(reflectance_map(layout, optics), psf)


def drift_px(rng: np.random.Generator, planes: int, drift_nm: float,
             pixel_size_nm: float) -> np.ndarray:
    """(planes, 2) offsets (dy, dx) in pixels: a random walk from the first plane, at 0."""
    steps = rng.normal(0.0, drift_nm / pixel_size_nm, (planes, 2))
    steps[0] = 0.0
    return np.cumsum(steps, axis=0)


@dataclass(frozen=True)
class StackScene:
    """One scan position of a multilayer chip: the camera's planes (float [0, 1]) at `z_nm`,
    each drifted by `drift_px` (dy, dx) from the first, and the truths in the first plane's
    frame: the SEM image, the all-in-focus virtual OSR image and the surface height (nm)."""

    planes: list[np.ndarray]
    z_nm: list[float]
    drift_px: np.ndarray
    sem: np.ndarray
    osr_in_focus: np.ndarray
    height_nm: np.ndarray


def simulate_stack_scene(rng: np.random.Generator, size: int, params: StackParams,
                         sim: SimParams | None = None, pixel_size_nm: float = 10.0,
                         layers: LayerStackParams | None = None) -> StackScene:
    """A multilayer scene seen as a z-stack through the optical model (with drift and camera
    noise) and by the SEM."""
    sim = sim or SimParams()
    margin = int(np.ceil(5 * params.drift_nm * np.sqrt(params.planes) / pixel_size_nm)) + 4
    layout = generate_multilayer(rng, (size + 2 * margin,) * 2, pixel_size_nm, layers, sim.layout)
    z_nm = focus_heights(layout.height_nm, params)
    drift = drift_px(rng, len(z_nm), params.drift_nm, pixel_size_nm)
    planes = []
    for clean, (dy, dx) in zip(render_planes(layout, z_nm, sim.optics), drift, strict=True):
        centre = (margin + dx + (size - 1) / 2, margin + dy + (size - 1) / 2)
        window = cv2.getRectSubPix(clean.astype(np.float32), (size, size), centre)
        planes.append(np.clip(capture(window, rng, sim.optics), 0, 1).astype(np.float32))
    crop = np.s_[margin:margin + size, margin:margin + size]
    return StackScene(planes, z_nm, drift, render_sem(layout, rng, sim.sem)[crop],
                      np.clip(render_in_focus(layout, sim.optics)[crop], 0, 1),
                      layout.height_nm[crop].astype(np.float32))


def write_stack_pairs(out: Path, n: int, seed: int = 0, size: int = 256,
                      pixel_size_nm: float = 10.0, params: StackParams | None = None,
                      split_planes: bool = False) -> Path:
    """Multilayer training pairs: out/osr/NNNN.tif a z-stack (a multi-page TIFF with its
    heights, fused by the trainer when it loads it) and out/sem/NNNN.tif its SEM image, plus
    out/meta.json. With split_planes every plane is a pair of its own (NNNN_zK.tif, the same
    SEM image): the single-plane control of the same scenes."""
    out, params = Path(out), params or StackParams()
    if n < 1:
        raise UserError(f"--n must be at least 1, not {n}")
    records = []
    for i in range(n):
        rng = np.random.default_rng(pair_seed(seed, i))
        scene = simulate_stack_scene(rng, size, params, pixel_size_nm=pixel_size_nm)
        if split_planes:
            files = [f"{i:04d}_z{k}.tif" for k in range(len(scene.planes))]
            for name, plane in zip(files, scene.planes, strict=True):
                write_tiff16(out / "osr" / name, plane)
                write_tiff16(out / "sem" / name, scene.sem)
        else:
            files = [f"{i:04d}.tif"]
            write_stack(out / "osr" / files[0], scene.planes, scene.z_nm)
            write_tiff16(out / "sem" / files[0], scene.sem)
        records.append({"files": files, "z_nm": scene.z_nm, "drift_px": scene.drift_px.tolist()})
    summary = {"format": "ssum-stack-pairs", "version": FORMAT_VERSION, "n": n, "seed": seed,
               "size": size, "pixel_size_nm": pixel_size_nm, "split_planes": split_planes,
               "stack": dataclasses.asdict(params), "layers": dataclasses.asdict(LayerStackParams()),
               "sem_frame": "the first plane's", "pairs": records}
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(summary, indent=1))
    return out
