"""Overlapped patches with seam blending: convert an image of any size with a fixed-size network.

Geometry along each axis (the same for rows and columns):
- the image is reflect-padded by `overlap` px on each side (more at the far end to round the
  length up to `multiple` and to at least one core);
- each patch is `patch_size` px: a *core` of C = patch_size - 2 x overlap px plus `overlap` px of
  context on each side. With overlap >= the network's receptive margin and fixed normalisation
  statistics, a patch's output over its core equals whole-image inference there;
- cores start at multiples of `multiple` (so the network's stride grid stays aligned) and
  neighbouring cores overlap by `blend` px, where the window blends them.

Merging takes each patch's core only, weighted by the window, with weights normalised to sum to
one at every pixel. Every weight lies on pixels that are exact, so with the conditions above every
window gives the whole-image result; the windows differ for models that are not exact (seams).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.errors import UserError

WINDOWS = ("hann", "gaussian", "linear", "constant", "crop")


class TilerLike(Protocol):
    """What converting needs of a tiler: patches and a plan, and the plan to merge them back."""

    def split(self, image: np.ndarray) -> tuple[np.ndarray, Any]: ...
    def merge(self, outputs: np.ndarray, plan: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class AxisPlan:
    """Core starts along one axis (image coordinates) and each core's normalised 1-D weights."""

    starts: tuple[int, ...]
    weights: tuple[np.ndarray, ...]
    extended: int  # image length rounded up (covered by cores)
    pad_before: int
    pad_after: int


@dataclass(frozen=True)
class TilePlan:
    """How an image was split; `merge` needs it to put the patches back."""

    shape: tuple[int, int]
    rows: AxisPlan
    cols: AxisPlan
    core: int
    overlap: int

    @property
    def n_patches(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)


def _ramp_window(core: int, blend: int, kind: str, sigma: float) -> np.ndarray:
    t = np.arange(core, dtype=np.float64) + 0.5
    if kind == "constant" or blend == 0 and kind != "gaussian":
        return np.ones(core)
    if kind == "gaussian":
        return np.exp(-((t - core / 2) ** 2) / (2 * sigma**2))
    edge = np.minimum(t, core - t) / blend  # 0 at the core's edges, 1 at `blend` px inside
    ramp = np.clip(edge, 0.0, 1.0)
    return ramp if kind == "linear" else np.sin(ramp * np.pi / 2) ** 2


class Tiler:
    """Split images into overlapping patches and merge the converted patches back.

    patch_size: network input size (px, multiple of `multiple`); overlap: context per side
    (rounded up to `multiple`); window: hann | gaussian | linear | constant | crop; blend: width
    of the overlap between neighbouring cores (default: a quarter of the core, 0 for crop)."""

    def __init__(self, patch_size: int, overlap: int, multiple: int = 4, window: str = "hann",
                 blend: int | None = None) -> None:
        if window not in WINDOWS:
            raise UserError(f"unknown window {window!r} (choose from {', '.join(WINDOWS)})")
        if multiple < 1 or patch_size < 1 or overlap < 0:
            raise UserError("patch size and multiple must be positive and overlap not negative")
        if patch_size % multiple:
            raise UserError(f"patch size {patch_size} is not a multiple of {multiple}")
        overlap = -(-overlap // multiple) * multiple
        core = patch_size - 2 * overlap
        if core < multiple:
            raise UserError(f"patch size {patch_size} leaves no core after {overlap} px of "
                            "context on each side; use a larger patch or a smaller overlap")
        if blend is None:
            blend = 0 if window == "crop" else (core // 4) // multiple * multiple
        if blend < 0 or blend % multiple or blend >= core:
            raise UserError(f"blend {blend} must be a multiple of {multiple} below the core ({core})")
        self.patch_size, self.overlap, self.multiple = patch_size, overlap, multiple
        self.window, self.core, self.blend = window, core, blend
        self._base = _ramp_window(core, blend, window, sigma=0.125 * patch_size)
        self._plans: dict[tuple[int, int], TilePlan] = {}

    # -- geometry ---------------------------------------------------------------------------
    def _axis(self, length: int) -> AxisPlan:
        m, core, step = self.multiple, self.core, self.core - self.blend
        extended = max(core, -(-length // m) * m)
        last = extended - core
        starts = sorted(set(range(0, last, step)) | {last})
        total = np.zeros(extended)
        raw = []
        for i, s in enumerate(starts):
            w = self._base.copy() if self.window != "crop" else self._crop_weights(starts, i)
            raw.append(w)
            total[s : s + core] += w
        weights = tuple((w / total[s : s + core]).astype(np.float32) for s, w in zip(starts, raw))
        return AxisPlan(tuple(starts), weights, extended, self.overlap,
                        self.overlap + extended - length)

    def _crop_weights(self, starts: list[int], i: int) -> np.ndarray:
        """1 where this core is the one whose centre is nearest (midpoints between neighbours)."""
        core, s = self.core, starts[i]
        lo = 0 if i == 0 else (starts[i - 1] + core + s) // 2 - s
        hi = core if i == len(starts) - 1 else (s + core + starts[i + 1]) // 2 - s
        w = np.zeros(core)
        w[lo:hi] = 1.0
        return w

    def plan(self, shape: tuple[int, int]) -> TilePlan:
        shape = (int(shape[0]), int(shape[1]))
        if shape not in self._plans:
            if len(self._plans) > 32:
                self._plans.clear()
            self._plans[shape] = TilePlan(shape, self._axis(shape[0]), self._axis(shape[1]),
                                          self.core, self.overlap)
        return self._plans[shape]

    # -- split and merge ----------------------------------------------------------------------
    def split(self, image: np.ndarray) -> tuple[np.ndarray, TilePlan]:
        """Patches float32 [N, 1, P, P] (row-major over the grid) and the plan to merge them."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or min(image.shape) < 1:
            raise ValueError(f"expected a 2-D image, got shape {image.shape}")
        plan = self.plan(image.shape)
        padded = _pad(image, plan)
        p = self.patch_size
        patches = np.empty((plan.n_patches, 1, p, p), dtype=np.float32)
        k = 0
        for y in plan.rows.starts:
            for x in plan.cols.starts:
                patches[k, 0] = padded[y : y + p, x : x + p]
                k += 1
        return patches, plan

    def merge(self, outputs: np.ndarray, plan: TilePlan) -> np.ndarray:
        """The converted image (H, W) float32 from the patches' outputs, in split's order."""
        outputs = np.asarray(outputs, dtype=np.float32)
        if outputs.ndim == 4:
            outputs = outputs[:, 0]
        p, o, c = self.patch_size, plan.overlap, plan.core
        if outputs.shape != (plan.n_patches, p, p):
            raise ValueError(f"expected {plan.n_patches} outputs of {p}x{p}, got {outputs.shape}")
        out = np.zeros((plan.rows.extended, plan.cols.extended), dtype=np.float32)
        k = 0
        for y, wy in zip(plan.rows.starts, plan.rows.weights):
            for x, wx in zip(plan.cols.starts, plan.cols.weights):
                out[y : y + c, x : x + c] += outputs[k, o : o + c, o : o + c] * wy[:, None] * wx
                k += 1
        return out[: plan.shape[0], : plan.shape[1]]


def _pad(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    widths = ((plan.rows.pad_before, plan.rows.pad_after), (plan.cols.pad_before, plan.cols.pad_after))
    if min(image.shape) < 2:
        return np.pad(image, widths, mode="edge")
    return np.pad(image, widths, mode="reflect")


def convert_image(image: np.ndarray, backend: Any, tiler: TilerLike,
                  batch_size: int = 8) -> np.ndarray:
    """Convert one image of any size: split, infer in batches, merge."""
    if batch_size < 1:
        raise UserError("batch size must be at least 1")
    patches, plan = tiler.split(image)
    outputs = [np.asarray(backend.infer(patches[i : i + batch_size]), dtype=np.float32)
               for i in range(0, len(patches), batch_size)]
    return tiler.merge(np.concatenate(outputs), plan)
