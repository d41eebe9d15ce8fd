"""References: what an inspected image is compared with, in the image's own frame.

- golden: a reference image (a defect-free die, converted or SEM) placed by stage position and
  registered to sub-pixel accuracy with the project's registration;
- cell: the image itself shifted by its repeat pitch (known, or detected by autocorrelation),
  the median of the neighbouring cells on each side, so a defect in one neighbour is outvoted;
- database: a layout raster rendered to the image's look (edge/inspection/database.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.registration import register

MIN_OVERLAP_PX = 32
MIN_PITCH_PX = 4
MIN_CELL_CORRELATION = 0.5
PROMINENCE = 0.1
MULTIPLE_TOLERANCE = 0.05


@dataclass
class Reference:
    """`image` in the inspected image's frame, judged where `valid`; `shift` (dx, dy) found by
    registration (px), `pitch` (px, x and y) for cell references."""

    image: np.ndarray
    valid: np.ndarray
    shift: tuple[float, float] = (0.0, 0.0)
    pitch: tuple[float | None, float | None] = (None, None)


def _translate(image: np.ndarray, dx: float, dy: float, shape: tuple[int, int]) -> np.ndarray:
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    return cv2.warpAffine(np.asarray(image, np.float32), matrix, (shape[1], shape[0]),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=np.nan)


def place(reference: np.ndarray, offset_px: tuple[float, float], shape: tuple[int, int],
          ) -> tuple[np.ndarray, np.ndarray]:
    """The window of `reference` whose pixel (0, 0) lies at `offset_px` (x, y, sub-pixel), and
    where it has real pixels."""
    placed = _translate(reference, -offset_px[0], -offset_px[1], shape)
    valid = np.isfinite(placed)
    return np.nan_to_num(placed, nan=float(np.nanmedian(placed)) if valid.any() else 0.0), valid


def golden(image: np.ndarray, reference: np.ndarray, offset_px: tuple[float, float] = (0, 0),
           ) -> Reference:
    """The part of `reference` that `image` shows, in the image's frame. `offset_px` (x, y) is
    where the image's pixel (0, 0) lies in the reference according to the stage; registration
    then finds the rest (up to about a quarter of the image)."""
    h, w = image.shape
    ox, oy = round(offset_px[0]), round(offset_px[1])
    nominal = _translate(reference, -ox, -oy, (h, w))
    known = np.isfinite(nominal)
    if known.sum() < MIN_OVERLAP_PX**2:
        raise UserError(f"the reference does not cover the image at offset ({ox}, {oy}) px")
    fill = float(np.nanmedian(nominal))
    reg = register(np.where(known, nominal, fill), np.where(known, image, fill), affine=False)
    shift = (ox - reg.shift[0], oy - reg.shift[1])
    return Reference(*place(reference, shift, (h, w)), shift)


def detect_pitch(image: np.ndarray, axis: int, max_fraction: float = 0.4) -> float | None:
    """The repeat period along `axis` (1: x, 0: y) in pixels, sub-pixel, from the first strong
    peak of the autocorrelation of the mean-removed image; None when nothing repeats."""
    a = np.asarray(image, np.float64)
    a = a - a.mean()
    spectrum = np.fft.rfft(a, n=2 * a.shape[axis], axis=axis)
    profile = np.fft.irfft(np.abs(spectrum) ** 2, axis=axis).sum(axis=1 - axis)
    profile = profile[: int(a.shape[axis] * max_fraction)]
    overlap = a.shape[axis] - np.arange(len(profile))
    corr = profile / overlap / (profile[0] / a.shape[axis] + 1e-12)
    peak = _first_peak(corr)
    if peak is None or corr[peak] < MIN_CELL_CORRELATION:
        return None
    left, mid, right = corr[peak - 1], corr[peak], corr[peak + 1]
    denom = left - 2 * mid + right
    return float(peak + (0.5 * (left - right) / denom if denom < 0 else 0.0))


def _first_peak(corr: np.ndarray) -> int | None:
    """The highest autocorrelation after its first dip, or a whole fraction of that lag when
    the correlation there is as high (noise can make a multiple of the pitch win)."""
    start = MIN_PITCH_PX
    while start + 1 < len(corr) and corr[start + 1] < corr[start]:
        start += 1
    if start + 2 >= len(corr):
        return None
    peak = start + int(np.argmax(corr[start:-1]))
    for k in (4, 3, 2):
        lo, hi = max(start, round(peak / k) - 2), round(peak / k) + 3
        if lo < hi <= len(corr) - 1:
            near = lo + int(np.argmax(corr[lo:hi]))
            if corr[near] >= corr[peak] - MULTIPLE_TOLERANCE:
                return near if 0 < near < len(corr) - 1 else None
    return peak if corr[peak] > corr[start] + PROMINENCE else None


def cell(image: np.ndarray, pitch_px: tuple[float | None, float | None] = (None, None),
         ) -> Reference:
    """The median of the image shifted by +-1 and +-2 pitches along each repeating axis (a
    pitch of None is detected; an axis that does not repeat is left out). Only pixels with at
    least 3 neighbours are judged, so one defective neighbour is always outvoted."""
    px = pitch_px[0] or detect_pitch(image, 1)
    py = pitch_px[1] or detect_pitch(image, 0)
    if px is None and py is None:
        raise UserError("no repeating pattern found: give the cell pitch")
    shifts = [(k * px, 0.0) for k in (-2, -1, 1, 2) if px] + \
             [(0.0, k * py) for k in (-2, -1, 1, 2) if py]
    stack = np.stack([_translate(image, dx, dy, image.shape) for dx, dy in shifts])
    valid = np.isfinite(stack).sum(axis=0) >= 3
    median = np.zeros(image.shape, np.float32)
    median[valid] = np.nanmedian(stack[:, valid], axis=0)
    return Reference(median, valid, pitch=(px, py))
