"""The difference of an image and its aligned reference, tolerant of what is not a defect.

Three things differ between two images of the same defect-free pattern: grey levels (gain,
offset, the microsphere's field falloff), sub-pixel position (residual misregistration, edge
jitter) and noise. The reference is first mapped onto the image's grey levels by a smooth gain
and offset field; both are smoothed by a filter matched to the smallest defect of interest; then
a pixel differs only by what exceeds the reference's range over +-`shift_tolerance_px` (its
grey-level envelope), so an edge displaced by less than that leaves no difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge.imaging.registration import edge_strength
from edge.imaging.morphology import disk
from edge.imaging.statistics import robust_std

POLY_DEGREE = 2
FIT_STEP_PX = 4  # every 4th pixel along each axis fits the gain/offset field
OUTLIER_MADS = 4.0
LINE_WINDOW = 5  # lines each side of the running median that scan-line jitter stands out of
PLATEAU_SIGMAS = 4.0
TREND_WINDOW = 40  # lines each side: wider than the widest wire, narrower than shading


@dataclass
class Difference:
    """signed: > 0 where the image is brighter than the reference's envelope, < 0 darker, 0
    within it; edges: the reference's edge strength (where misregistration shows); image and
    reference: the smoothed, grey-level-matched pair; valid: pixels judged."""

    signed: np.ndarray
    edges: np.ndarray
    image: np.ndarray
    reference: np.ndarray
    valid: np.ndarray


def _monomials(shape: tuple[int, int], step: int = 1) -> np.ndarray:
    """Polynomial terms in x, y (scaled to [-1, 1]) up to POLY_DEGREE, shape (terms, h, w)."""
    h, w = shape
    y, x = np.mgrid[0:h:step, 0:w:step].astype(np.float32)
    y, x = 2 * y / max(h - 1, 1) - 1, 2 * x / max(w - 1, 1) - 1
    return np.stack([x**i * y**j for i in range(POLY_DEGREE + 1)
                     for j in range(POLY_DEGREE + 1 - i)])


def match_grey_levels(image: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The reference as g(x, y) * reference + o(x, y), g and o low-order polynomials fitted to
    the image by least squares (refitted once without the outliers, so defects do not bias it)."""
    s = FIT_STEP_PX
    terms = _monomials(image.shape, s)
    pick = valid[::s, ::s].ravel()
    design = np.concatenate([terms * reference[::s, ::s], terms]).reshape(len(terms) * 2, -1).T
    design, target = design[pick], image[::s, ::s].ravel()[pick]
    if len(target) < design.shape[1] * 4:
        return reference
    keep = np.ones(len(target), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        residual = target - design @ coef
        mad = np.median(np.abs(residual - np.median(residual))) + 1e-6
        keep = np.abs(residual) < OUTLIER_MADS * 1.4826 * mad
    full = _monomials(image.shape)
    n = len(full)
    gain = np.tensordot(coef[:n], full, 1)
    offset = np.tensordot(coef[n:], full, 1)
    return (gain * reference + offset).astype(np.float32)


def _running_median(values: np.ndarray, half: int) -> np.ndarray:
    half = min(half, len(values) - 1)
    if half < 1:
        return np.full_like(values, np.median(values))
    padded = np.pad(values, half, mode="reflect")
    return np.median(sliding_window_view(padded, 2 * half + 1), axis=1)


def _jitter(offsets: np.ndarray) -> np.ndarray:
    """The part of a line-by-line profile of medians to subtract as scan-line offsets: all of
    it but wire-sized plateaus. A long wire along the lines that the image draws brighter or
    darker than its reference moves the medians of several lines in a row together; taking
    that for scan-line offsets would paint a streak along the rest of those lines. So where
    the running median over 2 * LINE_WINDOW + 1 lines stands out of the one over
    2 * TREND_WINDOW + 1 lines (slow trends: shading) by more than PLATEAU_SIGMAS of its own
    noise, that difference is kept out."""
    short = _running_median(offsets, LINE_WINDOW)
    plateau = short - _running_median(offsets, TREND_WINDOW)
    rest = offsets - short
    noise = math.sqrt(math.pi / 2) * robust_std(rest) / math.sqrt(2 * LINE_WINDOW + 1)  # of a median
    return np.where(np.abs(plateau) > PLATEAU_SIGMAS * noise, offsets - plateau, offsets)


def _line_offsets(residual: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The scan-line offsets (the streaks of SEM images) as an image to subtract: the median
    residual of each row, then of each column, less what pattern along the lines explains
    (`_jitter`)."""
    if not valid.any():
        return np.zeros_like(residual)
    rows = _jitter(np.array([np.median(r[v]) if v.any() else 0.0
                             for r, v in zip(residual, valid)]))
    less = residual - rows[:, None]
    cols = _jitter(np.array([np.median(c[v]) if v.any() else 0.0
                             for c, v in zip(less.T, valid.T)]))
    return (rows[:, None] + cols[None, :]).astype(np.float32)


def smoothing_sigma_px(min_defect_nm: float, pixel_size_nm: float) -> float:
    """A Gaussian matched to a defect of `min_defect_nm`: sigma a quarter of its diameter."""
    return max(0.5, 0.25 * min_defect_nm / pixel_size_nm)


def shading(residual: np.ndarray, valid: np.ndarray, window_px: int) -> np.ndarray:
    """The residual's local median in windows of `window_px` (half-overlapping), interpolated
    to every pixel: what differs over areas too wide to be a defect."""
    h, w = residual.shape
    step = max(1, window_px // 2)
    grid_y, grid_x = np.arange(0, h, step), np.arange(0, w, step)
    medians = np.zeros((len(grid_y), len(grid_x)), np.float32)
    for i, y in enumerate(grid_y):
        for j, x in enumerate(grid_x):
            window = np.s_[max(0, y - step):y + step + 1, max(0, x - step):x + step + 1]
            values = residual[window][valid[window]]
            medians[i, j] = np.median(values) if values.size else 0.0
    return cv2.resize(medians, (w, h), interpolation=cv2.INTER_LINEAR)


def envelope_difference(image: np.ndarray, reference: np.ndarray, valid: np.ndarray,
                        sigma_px: float, tolerance_px: float, shading_px: int) -> Difference:
    """The tolerant difference of an aligned pair (float images, `valid` the judged pixels);
    differences wider than `shading_px` are shading, removed first."""
    image = np.asarray(image, np.float32)
    matched = match_grey_levels(image, np.asarray(reference, np.float32), valid)
    image = image - _line_offsets(image - matched, valid)  # before smoothing blurs the lines
    a = cv2.GaussianBlur(image, (0, 0), sigma_px)
    b = cv2.GaussianBlur(matched, (0, 0), sigma_px)
    a = a - shading(a - b, valid, shading_px)
    radius = int(np.ceil(tolerance_px))
    if radius > 0:
        kernel = disk(radius)
        high, low = cv2.dilate(b, kernel), cv2.erode(b, kernel)
    else:
        high = low = b
    signed = np.maximum(a - high, 0) - np.maximum(low - a, 0)
    inner = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8),
                      iterations=radius + int(np.ceil(2 * sigma_px))).astype(bool)
    signed[~inner] = 0
    return Difference(signed.astype(np.float32), edge_strength(b), a, b, inner)
