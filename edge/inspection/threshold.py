"""The detection threshold, set from a false-alarm rate on the difference's own statistics.

Noise and misregistration make the difference larger near edges than on flat ground, so the
pixels are grouped by the reference's edge strength (equal-count classes) and each class gets
its own threshold. Within a class, the tail of |difference| is modelled as exponential above
a high percentile u (peaks over threshold): P(|d| > t) = q_u exp(-(t - u) / beta), beta
estimated robustly as the median excess over u divided by ln 2. The threshold is the t where
that probability equals the requested rate. Defect pixels would inflate the tail (a few large
defects can cover several percent of an image), so a first estimate takes u at the median,
where they are a small minority of the excesses (it comes out high: the body of the
distribution falls faster than its tail), and the final one takes it at the 99th percentile of
the pixels outside the regions the first one detected. Classes hold at least
MIN_CLASS_PIXELS, so that one large defect stays a small part of its class. A class
whose difference is almost always zero (a noise-free pair) takes the threshold of all classes
together, and when even those are degenerate, a Gaussian threshold on the plain residual.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import cv2
import numpy as np

from edge.imaging.statistics import robust_std
from edge.inspection.components import detected_pixels

EDGE_CLASSES = 4
TAIL_QUANTILES = (0.5, 0.99)  # one per estimate
MIN_CLASS_PIXELS = 16000
MIN_EXCESS = 10


def tail_threshold(values: np.ndarray, rate: float, quantile: float = 0.99) -> float | None:
    """The level that |values| exceeds with probability `rate` under an exponential tail above
    their `quantile`; None when too few values are non-zero to tell."""
    magnitude = np.abs(values)
    u = float(np.quantile(magnitude, quantile)) if magnitude.size else 0.0
    excess = magnitude[magnitude > u] - u
    q_u = excess.size / max(magnitude.size, 1)
    if excess.size < MIN_EXCESS:
        return None
    beta = float(np.median(excess)) / math.log(2.0)
    return u + beta * math.log(q_u / rate) if q_u > rate else u


def gaussian_threshold(residual: np.ndarray, rate: float) -> float:
    """The two-sided Gaussian level of `rate` for the residual's robust (MAD) spread."""
    return max(robust_std(residual), 1e-6) * NormalDist().inv_cdf(1 - rate / 2)


def edge_classes(edges: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Class index per pixel (0 = flattest), by quantiles of edge strength over `valid`."""
    n = max(1, min(EDGE_CLASSES, int(valid.sum()) // MIN_CLASS_PIXELS))
    if n == 1:
        return np.zeros(edges.shape, np.int32)
    cuts = np.quantile(edges[valid], np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(cuts, edges).astype(np.int32)


def _levels(signed: np.ndarray, residual: np.ndarray, classes: np.ndarray, clean: np.ndarray,
            rate: float, quantile: float) -> np.ndarray:
    """The threshold of each class (index = class), with the fallbacks described above."""
    pooled = tail_threshold(signed[clean], rate, quantile)
    if pooled is None:
        pooled = gaussian_threshold(residual[clean], rate)
    levels = [tail_threshold(signed[clean & (classes == c)], rate, quantile)
              for c in range(int(classes.max()) + 1)]
    return np.array([pooled if level is None else level for level in levels])


def threshold_map(signed: np.ndarray, residual: np.ndarray, edges: np.ndarray,
                  valid: np.ndarray, rate: float) -> np.ndarray:
    """Per pixel, the threshold of its edge class (inf outside `valid`); `residual` is the
    plain difference of the pair (for the last fallback)."""
    if not valid.any():
        return np.full(valid.shape, np.inf, np.float32)
    classes = edge_classes(edges, valid)
    flagged = np.zeros(valid.shape, bool)
    for quantile in TAIL_QUANTILES:
        clean = valid & ~flagged
        if not clean.any():
            clean = valid
        level = _levels(signed, residual, classes, clean, rate, quantile)[classes]
        flagged = cv2.dilate(detected_pixels(signed, level).astype(np.uint8),
                             np.ones((5, 5), np.uint8)).astype(bool)
    level = level.astype(np.float32)
    level[~valid] = np.inf
    return level
