"""The patch planner: where the patches of an image go and how their outputs blend.

Rows and columns are planned alike and independently. Along one axis:
- the image is extended to a multiple of the network's stride `multiple` (reflect, at most
  multiple - 1 px at the far end) and, for fixed-size patches, to at least one patch;
- n patches of one length P start on the stride grid: the first at 0, the last ending at the
  extended end, the others evenly spaced between;
- each patch keeps its output except `context` px on each side that faces another patch. At the
  image's own edges it keeps everything: the generator pads every convolution itself (reflect),
  so a patch that starts at the image edge sees there exactly what whole-image inference sees.
  With `context` >= the receptive margin the kept output is exact on the inner sides too;
- where the kept spans of neighbours overlap, the window blends them; elsewhere one patch
  gives each pixel, with weight 1. The weights sum to one at every pixel.

Fit mode (`fit_shape`) chooses P per axis for one image: the patch shape of at most `max_pixels`
that executes the fewest pixels (ties: the fewest patches). One patch of the whole image when it
fits; every patch of an image has the same shape, so they batch together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import UserError

WINDOWS = ("hann", "gaussian", "linear", "constant", "crop")


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class AxisPlan:
    """Patches along one axis: their starts in the extended image (on the stride grid), the
    span [lo, hi) of output each keeps, and the normalised weights over that span."""

    length: int
    extended: int
    patch: int
    starts: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    weights: tuple[np.ndarray, ...]

    @property
    def executed(self) -> int:
        """Pixels the network computes along this axis."""
        return self.patch * len(self.starts)


def patches_needed(extended: int, patch: int, context: int) -> int:
    """The fewest patches of `patch` px whose kept spans cover `extended` px."""
    if patch >= extended:
        return 1
    return -(-(extended - 2 * context) // (patch - 2 * context))


def plan_axis(length: int, patch: int, context: int, multiple: int, window: str) -> AxisPlan:
    """Equal patches of `patch` px along `length` px (patch and context multiples of `multiple`,
    patch - 2 x context >= multiple when several patches are needed)."""
    extended = max(patch, round_up(length, multiple))
    n = patches_needed(extended, patch, context)
    # Floor of evenly spaced grid steps: neighbours are never more than patch - 2 x context apart.
    steps = (extended - patch) // multiple
    starts = tuple(multiple * (i * steps // (n - 1)) for i in range(n)) if n > 1 else (0,)
    spans = tuple((0 if i == 0 else s + context, extended if i == n - 1 else s + patch - context)
                  for i, s in enumerate(starts))
    return AxisPlan(length, extended, patch, starts, spans, _weights(spans, starts, patch, window))


def fit_length(extended: int, n: int, context: int, multiple: int) -> int:
    """The length of each of n equal patches whose kept spans cover `extended` px."""
    if n == 1:
        return extended
    return round_up(-(-(extended + 2 * (n - 1) * context) // n), multiple)


def fit_shape(extended: tuple[int, int], context: int, multiple: int, max_pixels: int,
              max_side: int) -> tuple[int, int]:
    """The patch shape (rows, columns) that executes the fewest pixels for an image extended to
    `extended`, with at most max_pixels per patch and max_side per side."""
    ey, ex = extended
    best: tuple[tuple[int, int], tuple[int, int]] | None = None
    for ny in range(1, ey // multiple + 1):
        py = fit_length(ey, ny, context, multiple)
        if ny > 1 and (py - 2 * context < multiple or py >= ey):
            break
        limit = min(max_side, max_pixels // py // multiple * multiple)
        if py > max_side or limit < min(ex, 2 * context + multiple):
            continue
        nx = patches_needed(ex, min(limit, ex), context)
        px = fit_length(ex, nx, context, multiple)
        cost = (ny * py * nx * px, ny * nx)
        if best is None or cost < best[0]:
            best = (cost, (py, px))
    if best is None:
        raise UserError(f"no patch of at most {max_pixels} px and {max_side} px a side fits "
                        f"{context} px of context on each side; allow more pixels per patch")
    return best[1]


def _weights(spans: tuple[tuple[int, int], ...], starts: tuple[int, ...], patch: int,
             window: str) -> tuple[np.ndarray, ...]:
    raw = [_window(spans, i, window, starts[i] + patch / 2, patch / 8) for i in range(len(spans))]
    total = np.zeros(spans[-1][1])
    for (lo, hi), w in zip(spans, raw):
        total[lo:hi] += w
    return tuple((w / total[lo:hi]).astype(np.float32) for (lo, hi), w in zip(spans, raw))


def _window(spans: tuple[tuple[int, int], ...], i: int, kind: str, centre: float,
            sigma: float) -> np.ndarray:
    """Raw weights of patch i over its span: ramps only over the px shared with a neighbour."""
    lo, hi = spans[i]
    before = spans[i - 1][1] - lo if i > 0 else 0
    after = hi - spans[i + 1][0] if i + 1 < len(spans) else 0
    x = np.arange(lo, hi) + 0.5
    if kind == "constant":
        return np.ones(hi - lo)
    if kind == "gaussian":
        return np.exp(-((x - centre) ** 2) / (2 * sigma**2))
    if kind == "crop":  # each shared px from the patch on its side of the overlap's middle
        cut_lo = lo + before // 2
        cut_hi = hi if after == 0 else spans[i + 1][0] + after // 2
        return ((x >= cut_lo) & (x < cut_hi)).astype(np.float64)
    up = np.clip((x - lo) / before, 0.0, 1.0) if before > 0 else np.ones(hi - lo)
    down = np.clip((hi - x) / after, 0.0, 1.0) if after > 0 else np.ones(hi - lo)
    ramp = np.minimum(up, down)
    return ramp if kind == "linear" else np.sin(ramp * np.pi / 2) ** 2
