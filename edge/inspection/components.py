"""Connected components of the thresholded difference: a defect is a region whose difference
exceeds the threshold somewhere (its seed) and half of it everywhere (its extent, hysteresis);
regions closer than the merge distance are one defect, whatever their polarity (in the SEM
look an open is a dark cut between the bright rims of the two new line ends)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.imaging.morphology import disk

HYSTERESIS = 0.5


@dataclass
class Region:
    """One detection in an image's pixels: `mask` covers `bbox` (x0, y0, x1, y1, half-open);
    `polarity` "extra" (brighter than the reference) or "missing"; `score` the peak of
    |difference| / threshold (> 1); `x`, `y` the score-weighted centroid; `defect_class` set
    by a detector that knows what it found (else classified from the patterns)."""

    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    polarity: str
    score: float
    x: float
    y: float
    defect_class: str | None = None

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())


def _ratio(signed: np.ndarray, level: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(level), signed / np.maximum(level, 1e-12), 0.0)


def detected_pixels(signed: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The pixels of every region (the extent of the regions that have a seed)."""
    ratio = np.abs(_ratio(signed, level))
    _, labels = cv2.connectedComponents((ratio > HYSTERESIS).astype(np.uint8), connectivity=8)
    seeds = np.unique(labels[ratio > 1.0])
    return np.isin(labels, seeds[seeds > 0])


def find_regions(signed: np.ndarray, level: np.ndarray, merge_px: int) -> list[Region]:
    """The detections, highest score first; a region's polarity is that of the larger sum of
    |difference| / threshold over its pixels."""
    ratio = _ratio(signed, level)
    extent = (np.abs(ratio) > HYSTERESIS).astype(np.uint8)
    joined = extent
    if merge_px > 0:
        joined = cv2.dilate(extent, disk(merge_px))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    labels[extent == 0] = 0
    seeds = np.unique(labels[np.abs(ratio) > 1.0])
    regions = [_region(labels, stats, int(label), ratio) for label in seeds[seeds > 0]]
    return sorted(regions, key=lambda r: -r.score)


def _region(labels: np.ndarray, stats: np.ndarray, label: int, ratio: np.ndarray) -> Region:
    x0, y0, w, h = (int(v) for v in stats[label, :4])
    mask = labels[y0:y0 + h, x0:x0 + w] == label
    ys, xs = np.nonzero(mask)
    values = ratio[y0:y0 + h, x0:x0 + w][mask]
    weight = np.abs(values)
    bright, dark = values[values > 0].sum(), -values[values < 0].sum()
    box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1,
           y0 + int(ys.max()) + 1)
    return Region(box, mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1],
                  "extra" if bright >= dark else "missing", float(weight.max()),
                  x0 + float(np.average(xs, weights=weight)),
                  y0 + float(np.average(ys, weights=weight)))
