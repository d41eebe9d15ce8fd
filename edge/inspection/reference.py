"""References: what an inspected image is compared with, in the image's own frame.

- golden: a reference image (a defect-free die, converted or SEM) placed by stage position and
  registered to sub-pixel accuracy with the project's registration;
- cell: the image itself shifted by its repeat pitch (known, or detected as the shortest shift
  at which it matches itself), the median of the neighbouring cells on each side, so a defect
  in one neighbour is outvoted;
- database: a layout raster rendered to the image's look (edge/inspection/database.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.registration import register

MIN_OVERLAP_PX = 32
SEARCH_FRACTION = 0.25  # golden: registration corrects the stage by up to this share of the image
MIN_PITCH_PX = 4
MAX_PERIOD_DIFFERENCE = 0.3
PERIOD_TOLERANCE = 0.05
RISE = 0.3
NOISE_SIGMA_PX = 1.5
CELL_NEIGHBOURS = 3
REFINE_FRACTION = 0.75
SHADING_SIGMA_PX = 24.0
SOURCE_EPS_PX = 1e-3  # a source coordinate this far outside the image still counts as on it


@dataclass
class Reference:
    """`image` in the inspected image's frame, judged where `valid`; `shift` (dx, dy) found by
    registration (px), `pitch` (px, x and y) for cell references, `pattern` (True = shape)
    the layout placed in the frame for database references."""

    image: np.ndarray
    valid: np.ndarray
    shift: tuple[float, float] = (0.0, 0.0)
    pitch: tuple[float | None, float | None] = (None, None)
    pattern: np.ndarray | None = None


def _translate(image: np.ndarray, dx: float, dy: float, shape: tuple[int, int]) -> np.ndarray:
    """`image` moved by (dx, dy) onto a canvas of `shape`, NaN where no source pixel lies.
    The NaNs are set from the source coordinates, not by OpenCV's NaN border, which its
    bilinear taps carry into the last row and column even at a whole-pixel shift."""
    source = np.asarray(image, np.float32)
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    moved = cv2.warpAffine(source, matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    xs, ys = np.arange(shape[1]) - dx, np.arange(shape[0]) - dy
    moved[:, (xs < -SOURCE_EPS_PX) | (xs > source.shape[1] - 1 + SOURCE_EPS_PX)] = np.nan
    moved[(ys < -SOURCE_EPS_PX) | (ys > source.shape[0] - 1 + SOURCE_EPS_PX), :] = np.nan
    return moved


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
    then finds the rest (up to a quarter of the image; a lock farther off, onto another period
    of a repeating pattern, is refined from the stage position instead)."""
    h, w = image.shape
    ox, oy = round(offset_px[0]), round(offset_px[1])
    nominal = _translate(reference, -ox, -oy, (h, w))
    known = np.isfinite(nominal)
    if known.sum() < MIN_OVERLAP_PX**2:
        raise UserError(f"the reference does not cover the image at offset ({ox}, {oy}) px")
    fill = float(np.nanmedian(nominal))
    reg = register(np.where(known, nominal, fill), np.where(known, image, fill), affine=False,
                   max_shift_px=SEARCH_FRACTION * max(h, w))
    shift = (ox - reg.shift[0], oy - reg.shift[1])
    return Reference(*place(reference, shift, (h, w)), shift)


def shift_difference(image: np.ndarray, axis: int, max_lag: int) -> np.ndarray:
    """d(L) = mean((a(x) - a(x + L))^2) / (2 var a) over the overlap, for lags L along `axis`
    (1: x, 0: y) from 0 to `max_lag`, on the image band-passed (Gaussians of NOISE_SIGMA_PX
    less SHADING_SIGMA_PX: pixel noise and the field's fall-off are no pattern, and a linear
    filter keeps any period): near 0 at a period of the pattern (only the noise is
    left), near 1 between unrelated parts."""
    a = np.asarray(image, np.float32)
    a = cv2.GaussianBlur(a, (0, 0), NOISE_SIGMA_PX) - cv2.GaussianBlur(a, (0, 0), SHADING_SIGMA_PX)
    a = np.moveaxis(a.astype(np.float64), axis, 1)
    n = a.shape[1]
    lags = np.arange(max_lag + 1)
    spectrum = np.fft.rfft(a, n=2 * n, axis=1)
    products = np.fft.irfft(np.abs(spectrum) ** 2, axis=1).sum(axis=0)[lags]
    squares = np.concatenate([[0.0], np.cumsum((a**2).sum(axis=0))])
    sums = squares[n - lags] + (squares[n] - squares[lags])  # a(x)^2 and a(x + L)^2
    overlap = (n - lags) * a.shape[0]
    return (sums - 2 * products) / overlap / (2 * float(np.mean(a**2)) + 1e-12)


def detect_pitch(image: np.ndarray, axis: int, max_fraction: float = 0.4) -> float | None:
    """The repeat period along `axis` (1: x, 0: y) in pixels, sub-pixel: the shortest lag (up
    to `max_fraction` of the image) at which the image matches its shifted self
    (shift_difference at most MAX_PERIOD_DIFFERENCE, and within PERIOD_TOLERANCE of the best
    lag, so that a multiple of the pitch does not win by noise) after having differed by at
    least RISE on the way; refined at the farthest multiple of it within REFINE_FRACTION of the
    image. None when nothing repeats, and when the pattern does not change along the axis
    (lines parallel to it): a shift along such an axis would compare a defect with itself."""
    n = image.shape[axis]
    d = shift_difference(image, axis, int(n * max(max_fraction, REFINE_FRACTION)))
    top = int(n * max_fraction)
    minima = [lag for lag in range(MIN_PITCH_PX, top)
              if d[lag] <= d[lag - 1] and d[lag] <= d[lag + 1]
              and float(d[1:lag].max()) - d[lag] >= RISE]
    if not minima:
        return None
    best = min(float(d[lag]) for lag in minima)
    if best > MAX_PERIOD_DIFFERENCE:
        return None
    lag = next(lag for lag in minima if d[lag] <= best + PERIOD_TOLERANCE)
    k = max(1, (len(d) - 2) // lag)
    reach = min(k, lag // 3)  # the error of k lags of the first estimate, less than a pitch
    window = d[k * lag - reach:k * lag + reach + 1]
    return _parabola_minimum(d, k * lag - reach + int(np.argmin(window))) / k


def _parabola_minimum(d: np.ndarray, i: int) -> float:
    """The sub-sample position of the minimum of `d` near its sample `i`."""
    if not 0 < i < len(d) - 1:
        return float(i)
    left, mid, right = d[i - 1], d[i], d[i + 1]
    denom = left - 2 * mid + right
    return float(i + (0.5 * (left - right) / denom if denom > 0 else 0.0))


def cell(image: np.ndarray, pitch_px: tuple[float | None, float | None] = (None, None),
         ) -> Reference:
    """The median of the image shifted by 1 to CELL_NEIGHBOURS pitches either way along each
    repeating axis (a pitch of None is detected; an axis that does not repeat is left out), so
    one defective neighbour is outvoted; the farther cells let pixels near the image's border
    be judged too. A pixel with only 2 neighbours takes the one nearer its own grey level (the
    arbitration of three dies: a defect differs from both, a defective neighbour is matched
    by the other); one with fewer is not judged."""
    px = pitch_px[0] or detect_pitch(image, 1)
    py = pitch_px[1] or detect_pitch(image, 0)
    if px is None and py is None:
        raise UserError("no repeating pattern found: give the cell pitch")
    steps = [k for n in range(1, CELL_NEIGHBOURS + 1) for k in (-n, n)]
    shifts = [(k * px, 0.0) for k in steps if px and abs(k * px) < image.shape[1]] + \
             [(0.0, k * py) for k in steps if py and abs(k * py) < image.shape[0]]
    stack = np.stack([_translate(image, dx, dy, image.shape) for dx, dy in shifts])
    count = np.isfinite(stack).sum(axis=0)
    reference = np.zeros(image.shape, np.float32)
    many, two = count >= 3, count == 2
    reference[many] = np.nanmedian(stack[:, many], axis=0)
    pair = stack[:, two]
    nearest = np.nanargmin(np.where(np.isnan(pair), np.inf, np.abs(pair - image[two])), axis=0)
    reference[two] = pair[nearest, np.arange(pair.shape[1])]
    return Reference(reference, many | two, pitch=(px, py))
