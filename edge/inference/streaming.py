"""Convert an image one band of patch rows at a time: memory holds about two bands, never the
whole image, so an image larger than memory converts from and to disk.

The bands are the rows of the tiler's plan; each is read with `margin` more rows on each side
for the preprocessing to see what it sees on the whole image, preprocessed, padded as the whole
image would be, cut into that row's patches, converted and merged. The rows of the output that
no later band touches are handed out at once; the rows shared with the next band wait for it.
The numbers equal `convert_image` on the whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edge.inference.tiling import TilePlan, Tiler, infer_in_place, pad_to_plan

ReadRows = Callable[[int, int], np.ndarray]


def convert_rows(read: ReadRows, shape: tuple[int, int], prepare: Callable[[np.ndarray], np.ndarray],
                 margin: int, backend: Any, tiler: Tiler, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive blocks of output rows (float32, full width), from top to bottom.

    read(y0, y1): raw rows y0..y1-1 of the image; prepare: raw -> network input; margin: rows
    of context the preprocessing needs (0 when it works pixel by pixel)."""
    plan = tiler.plan(shape)
    rows = plan.rows
    carry = np.zeros((0, plan.cols.extended), dtype=np.float32)
    for i, (lo, hi) in enumerate(rows.spans):
        band = _band(read, prepare, margin, plan, rows.starts[i])
        patches = infer_in_place(backend, tiler.row_patches(band, plan), batch_size)
        merged = tiler.merge_row(patches, plan, i)
        merged[: len(carry)] += carry
        final = rows.spans[i + 1][0] if i + 1 < len(rows.spans) else hi
        if min(final, shape[0]) > lo:
            yield merged[: min(final, shape[0]) - lo, : shape[1]]
        carry = merged[final - lo :]


def _band(read: ReadRows, prepare: Callable[[np.ndarray], np.ndarray], margin: int,
          plan: TilePlan, top: int) -> np.ndarray:
    """Rows top..top+patch of the extended, preprocessed image."""
    height = plan.shape[0]
    bottom = min(top + plan.rows.patch, height)
    first, last = max(0, top - margin), min(height, bottom + margin)
    rows = np.asarray(prepare(read(first, last)), dtype=np.float32)[top - first : bottom - first]
    return pad_to_plan(rows, plan, top + plan.rows.patch - bottom)
