"""Focus-stack fusion: one all-in-focus image and a height map from a z-stack of planes.

A single SSUM frame is sharp over a few hundred nm of height; the rig records planes at several
focus heights and this module combines them (the one implementation: the daemon, `ssum convert`
and the trainer's data preparation call `fuse_stack`):

1. register: every plane is aligned to the middle plane (a translation: the stage drifts
   sideways between planes), through its neighbours (`register_planes`);
2. focus measure: per pixel, the local energy of the Laplacian of the slightly smoothed plane
   (a Gaussian window of `window_sigma_px`): high where that plane renders edges sharply;
3. blend: each plane's weight is its focus measure relative to the best plane's, raised to
   `sharpness` (high: choose the sharpest plane; low: average), smoothed by a Gaussian of
   `blend_sigma_px` and normalised, so that where the chosen plane changes the image crosses
   over smoothly instead of in a seam; flat regions, where every plane is alike, average the
   planes (and their noise);
4. depth from focus: the height of the pixel's sharpest plane, except on the darker side of
   an edge between two layers (`depth_from_focus`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import read_stack
from edge.imaging.registration import register

log = logging.getLogger(__name__)

EPS = 1e-12
REGISTER_ITERATIONS = 50


@dataclass(frozen=True)
class FocusSettings:
    """How planes are fused (pixels of the planes)."""

    smooth_sigma_px: float = 1.0  # before the Laplacian: keeps camera noise out of the measure
    window_sigma_px: float = 4.0  # the neighbourhood over which focus energy is summed
    sharpness: float = 2.0  # exponent of the relative focus measure in the weights
    blend_sigma_px: float = 2.0  # smoothing of the weight maps
    depth_smooth_sigma_px: float = 2.0  # the same two for the height map, which needs the
    depth_window_sigma_px: float = 6.0  # planes' differences at the grain scale, not the noise's
    side_sigma_px: float = 8.0  # the surroundings a pixel is darker or brighter than
    second_peak: float = 0.05  # the weakest second focus peak an edge's darker side takes
    min_separation: int = 2  # planes between the two peaks of an edge
    register: bool = True
    max_shift_px: float = 8.0  # the largest drift from one plane to the next

    def __post_init__(self) -> None:
        for name in ("smooth_sigma_px", "window_sigma_px", "sharpness", "depth_smooth_sigma_px",
                     "depth_window_sigma_px", "max_shift_px",
                     "side_sigma_px", "second_peak", "min_separation"):
            if getattr(self, name) <= 0:
                raise UserError(f"focus setting {name} must be positive, got {getattr(self, name)}")
        if self.blend_sigma_px < 0:
            raise UserError(f"focus setting blend_sigma_px must be >= 0, got {self.blend_sigma_px}")


@dataclass
class FusedStack:
    """image: float32 [0, 1]; height_nm: float32, the depth-from-focus height per pixel (one
    of the planes' heights); shifts_px: (dx, dy) applied to each plane; reference: the plane
    the others were aligned to."""

    image: np.ndarray
    height_nm: np.ndarray
    shifts_px: list[tuple[float, float]]
    reference: int


def _gauss(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) if sigma > 0 \
        else image


def focus_measure(image: np.ndarray, smooth_sigma_px: float, window_sigma_px: float) -> np.ndarray:
    """Local energy of the Laplacian of the smoothed image (float32, same shape), summed over
    a Gaussian window."""
    smooth = _gauss(np.asarray(image, np.float32), smooth_sigma_px)
    laplacian = cv2.Laplacian(smooth, cv2.CV_32F, ksize=3, borderType=cv2.BORDER_REFLECT)
    return _gauss(laplacian * laplacian, window_sigma_px)


def _translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    return cv2.warpAffine(image, matrix, image.shape[::-1], flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def register_planes(planes: Sequence[np.ndarray], reference: int,
                    max_shift_px: float) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """Every plane translated onto `reference`; returns the planes and their (dx, dy).

    Each plane is registered to its neighbour towards the reference (neighbours differ least
    in defocus) and the shifts are chained: far from the reference, a plane can be so blurred
    that it no longer correlates with it. A step beyond `max_shift_px` is a failed
    registration (a plane with nothing sharp in it) and counts as no drift."""
    shifts = [np.zeros(2)] * len(planes)
    for k in [*range(reference + 1, len(planes)), *range(reference - 1, -1, -1)]:
        towards = k - 1 if k > reference else k + 1
        step = np.asarray(register(planes[k], planes[towards], affine=False,
                                   iterations=REGISTER_ITERATIONS).shift)
        if np.hypot(*step) > max_shift_px:  # a plane too blurred to register: left in place
            log.debug("plane %d: registration gave %.1f px, taken as 0", k, np.hypot(*step))
            step = np.zeros(2)
        shifts[k] = shifts[towards] + step
    aligned = [plane if k == reference else _translate(plane, *shifts[k])
               for k, plane in enumerate(planes)]
    return aligned, [(float(dx), float(dy)) for dx, dy in shifts]


def blend_weights(measures: np.ndarray, settings: FocusSettings) -> np.ndarray:
    """(N, H, W) weights summing to 1 per pixel, from the planes' focus measures."""
    best = measures.max(axis=0) + EPS
    weights = np.stack([_gauss((m / best) ** settings.sharpness, settings.blend_sigma_px)
                        for m in measures])
    return weights / (weights.sum(axis=0) + EPS)


def depth_from_focus(measures: np.ndarray, fused: np.ndarray, z_nm: np.ndarray,
                     settings: FocusSettings) -> np.ndarray:
    """The height of each pixel's sharpest plane, except on the darker side of an edge.

    An edge between two layers is the boundary of both, and each layer's plane renders it
    sharply, but the plane of the brighter layer with more contrast: the focus curve of a pixel
    near the edge has two peaks, the stronger at the brighter layer. A pixel darker than its
    surroundings (in the fused image) takes the other peak, when there is one of at least
    `second_peak` of the strongest, `min_separation` planes or more away. A median filter
    removes isolated outliers."""
    n = len(measures)
    first = np.argmax(measures, axis=0)
    padded = np.pad(measures, ((1, 1), (0, 0), (0, 0)), constant_values=-1.0)
    peaks = (measures >= padded[:-2]) & (measures >= padded[2:])
    apart = np.abs(np.arange(n)[:, None, None] - first[None]) >= settings.min_separation
    others = np.where(peaks & apart, measures, -1.0)
    second = np.argmax(others, axis=0)
    strength = np.take_along_axis(others, second[None], axis=0)[0]
    darker = fused < _gauss(fused, settings.side_sigma_px)
    use_second = darker & (strength > settings.second_peak * measures.max(axis=0))
    height = np.asarray(z_nm, np.float32)[np.where(use_second, second, first)]
    return cv2.medianBlur(height, 5)


def fuse_stack(planes: Sequence[np.ndarray], z_nm: Sequence[float],
               settings: FocusSettings = FocusSettings()) -> FusedStack:
    """Fuse planes (2-D, float [0, 1], one shape) recorded at heights `z_nm` (any order)."""
    if len(planes) == 0 or len(planes) != len(z_nm):
        raise UserError(f"a stack needs one height per plane, got {len(planes)} planes and "
                        f"{len(z_nm)} heights")
    shapes = {np.shape(p) for p in planes}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise UserError(f"the planes of a stack must be 2-D images of one shape, got {shapes}")
    order = np.argsort(np.asarray(z_nm, np.float64), kind="stable")
    stack = [np.asarray(planes[i], np.float32) for i in order]
    heights = np.asarray(z_nm, np.float64)[order]
    reference = len(stack) // 2
    shifts = [(0.0, 0.0)] * len(stack)
    if settings.register and len(stack) > 1:
        stack, shifts = register_planes(stack, reference, settings.max_shift_px)
    measures = np.stack([focus_measure(p, settings.smooth_sigma_px, settings.window_sigma_px)
                         for p in stack])
    weights = blend_weights(measures, settings)
    image = np.clip((weights * np.stack(stack)).sum(axis=0), 0.0, 1.0).astype(np.float32)
    depth = np.stack([focus_measure(p, settings.depth_smooth_sigma_px,
                                    settings.depth_window_sigma_px) for p in stack])
    height = depth_from_focus(depth, image, heights, settings)
    unsorted = [(0.0, 0.0)] * len(stack)
    for position, i in enumerate(order):
        unsorted[i] = shifts[position]
    return FusedStack(image, height, unsorted, int(order[reference]))


def fuse_file(path: str | Path, z_step_nm: float | None = None, z_start_nm: float = 0.0,
              settings: FocusSettings = FocusSettings()) -> FusedStack:
    """Fuse a stack on disk (a multi-page TIFF or a folder of planes, `read_stack`). With
    `z_step_nm`, plane k lies at z_start_nm + k z_step_nm (for stacks that do not record their
    heights, or to override them)."""
    planes, recorded = read_stack(path)
    if z_step_nm is not None:
        if z_step_nm <= 0:
            raise UserError(f"the step between planes must be positive, not {z_step_nm}")
        recorded = [z_start_nm + k * z_step_nm for k in range(len(planes))]
    if recorded is None:
        raise UserError(f"{path}: the stack does not record its planes' heights; give the step "
                        "between them (ssum convert --z-step)")
    return fuse_stack(planes, recorded, settings)
