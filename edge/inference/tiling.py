"""Patches in, patches out: split an image as the planner says (edge.inference.planner), merge
the network's outputs back with the planner's weights.

Two modes, one geometry: fit (`fit_pixels` > 0; backends with dynamic shapes) plans for each
image the patch shape that executes the fewest pixels, one patch of the whole image when it
fits; fixed (`fit_pixels` = 0; TensorRT's profile shape) uses `patch_size` patches. At the image
border no padding is added beyond the stride multiple: the network pads there itself, as it does
on the whole image (docs/conversion.md, "The border rule").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.errors import UserError
from edge.inference.planner import WINDOWS, AxisPlan, fit_shape, plan_axis, round_up

__all__ = ["WINDOWS", "TilePlan", "Tiler", "TilerLike", "convert_image", "infer_in_place"]


class TilerLike(Protocol):
    """What converting needs of a tiler: patches and a plan, and the plan to merge them back."""

    def split(self, image: np.ndarray) -> tuple[np.ndarray, Any]: ...
    def merge(self, outputs: np.ndarray, plan: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class TilePlan:
    """How an image is split; `merge` needs it to put the patches back."""

    shape: tuple[int, int]
    rows: AxisPlan
    cols: AxisPlan

    @property
    def n_patches(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    @property
    def patch_shape(self) -> tuple[int, int]:
        return self.rows.patch, self.cols.patch

    @property
    def executed_ratio(self) -> float:
        """Pixels the network computes per pixel of the image."""
        return self.rows.executed * self.cols.executed / (self.shape[0] * self.shape[1])


class Tiler:
    """Split images into patches and merge the converted patches back.

    patch_size: the fixed patches' size (px, a multiple of `multiple`; fixed mode and warm-up);
    overlap: context kept on each side that faces another patch (rounded up to `multiple`; the
    receptive margin makes patches exact); window: how overlapping kept spans blend;
    fit_pixels: > 0 for fit mode, the most pixels of one patch; min_side/max_side: the sides the
    network accepts (the exported programs: 8 to 16384 px; at 1/4 resolution a 3x3 reflect
    padding needs 2 px)."""

    def __init__(self, patch_size: int, overlap: int, multiple: int = 4, window: str = "hann",
                 fit_pixels: int = 0, min_side: int = 8, max_side: int = 16384) -> None:
        if window not in WINDOWS:
            raise UserError(f"unknown window {window!r} (choose from {', '.join(WINDOWS)})")
        if multiple < 1 or patch_size < 1 or overlap < 0 or fit_pixels < 0:
            raise UserError("patch size and multiple must be positive, overlap and pixels per "
                            "patch not negative")
        if patch_size % multiple:
            raise UserError(f"patch size {patch_size} is not a multiple of {multiple}")
        overlap = round_up(overlap, multiple)
        if patch_size - 2 * overlap < multiple:
            raise UserError(f"patch size {patch_size} leaves no core after {overlap} px of "
                            "context on each side; use a larger patch or a smaller overlap")
        self.patch_size, self.overlap, self.multiple = patch_size, overlap, multiple
        self.window, self.fit_pixels = window, fit_pixels
        self.min_side, self.max_side = round_up(min_side, multiple), max_side
        self._plans: dict[tuple[int, int], TilePlan] = {}

    @property
    def mode(self) -> str:
        return "fit" if self.fit_pixels else "fixed"

    def plan(self, shape: tuple[int, int]) -> TilePlan:
        shape = (int(shape[0]), int(shape[1]))
        if min(shape) < 1:
            raise ValueError(f"expected a non-empty image, got shape {shape}")
        if shape not in self._plans:
            if len(self._plans) > 32:
                self._plans.clear()
            self._plans[shape] = self._plan(shape)
        return self._plans[shape]

    def _plan(self, shape: tuple[int, int]) -> TilePlan:
        m, o = self.multiple, self.overlap
        if self.fit_pixels:
            extended = (max(self.min_side, round_up(shape[0], m)),
                        max(self.min_side, round_up(shape[1], m)))
            py, px = fit_shape(extended, o, m, self.fit_pixels, self.max_side)
        else:
            py = px = self.patch_size
        return TilePlan(shape, plan_axis(shape[0], py, o, m, self.window),
                        plan_axis(shape[1], px, o, m, self.window))

    # -- split and merge ----------------------------------------------------------------------
    def split(self, image: np.ndarray) -> tuple[np.ndarray, TilePlan]:
        """Patches float32 [N, 1, Py, Px] (row-major over the grid) and the plan to merge them."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or min(image.shape) < 1:
            raise ValueError(f"expected a 2-D image, got shape {image.shape}")
        plan = self.plan(image.shape)
        padded = pad_to_plan(image, plan, plan.rows.extended - image.shape[0])
        (py, px), n = plan.patch_shape, len(plan.cols.starts)
        patches = np.empty((plan.n_patches, 1, py, px), dtype=np.float32)
        for i, y in enumerate(plan.rows.starts):
            patches[i * n : (i + 1) * n] = self.row_patches(padded[y : y + py], plan)
        return patches, plan

    def row_patches(self, band: np.ndarray, plan: TilePlan) -> np.ndarray:
        """The patches of one row of the grid from its band of the extended image."""
        py, px = plan.patch_shape
        patches = np.empty((len(plan.cols.starts), 1, py, px), dtype=np.float32)
        for k, x in enumerate(plan.cols.starts):
            patches[k, 0] = band[:, x : x + px]
        return patches

    def merge(self, outputs: np.ndarray, plan: TilePlan) -> np.ndarray:
        """The converted image (H, W) float32 from the patches' outputs, in split's order."""
        outputs = np.asarray(outputs, dtype=np.float32)
        if outputs.ndim == 4:
            outputs = outputs[:, 0]
        if outputs.shape != (plan.n_patches, *plan.patch_shape):
            raise ValueError(f"expected {plan.n_patches} outputs of {plan.patch_shape}, "
                             f"got {outputs.shape}")
        out = np.zeros((plan.rows.extended, plan.cols.extended), dtype=np.float32)
        n = len(plan.cols.starts)
        for i, (lo, hi) in enumerate(plan.rows.spans):
            out[lo:hi] += self.merge_row(outputs[i * n : (i + 1) * n], plan, i)
        return out[: plan.shape[0], : plan.shape[1]]

    def merge_row(self, outputs: np.ndarray, plan: TilePlan, i: int) -> np.ndarray:
        """Row i's weighted outputs over the rows it keeps (plan.rows.spans[i]), all columns."""
        outputs = outputs[:, 0] if outputs.ndim == 4 else outputs
        (lo, hi), y, wy = plan.rows.spans[i], plan.rows.starts[i], plan.rows.weights[i]
        out = np.zeros((hi - lo, plan.cols.extended), dtype=np.float32)
        for x, (clo, chi), wx, patch in zip(plan.cols.starts, plan.cols.spans, plan.cols.weights,
                                            outputs):
            out[:, clo:chi] += patch[lo - y : hi - y, clo - x : chi - x] * wy[:, None] * wx
        return out


def pad_to_plan(rows: np.ndarray, plan: TilePlan, below: int) -> np.ndarray:
    """Rows of the image extended as the plan says: `below` rows under them and the columns up
    to the plan's width, reflected (repeated for images of one px)."""
    widths = ((0, below), (0, plan.cols.extended - plan.shape[1]))
    if not below and not widths[1][1]:
        return rows
    if min(plan.shape) < 2:
        return np.pad(rows, widths, mode="edge")
    return np.pad(rows, widths, mode="reflect")


def infer_in_place(backend: Any, patches: np.ndarray, batch_size: int) -> np.ndarray:
    """Replace each patch by the network's output, batch_size patches per call."""
    for i in range(0, len(patches), batch_size):
        patches[i : i + batch_size] = backend.infer(patches[i : i + batch_size])
    return patches


def convert_image(image: np.ndarray, backend: Any, tiler: TilerLike,
                  batch_size: int = 8) -> np.ndarray:
    """Convert one image of any size: split, infer in batches, merge."""
    if batch_size < 1:
        raise UserError("batch size must be at least 1")
    patches, plan = tiler.split(image)
    return tiler.merge(infer_in_place(backend, patches, batch_size), plan)
