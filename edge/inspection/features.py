"""Die-to-database: layout features that are not there.

A contact (or any small isolated shape of the layout) that is missing leaves flat ground where
the rendered layout expects a bright or dark spot. Its pixels alone often do not clear the
difference threshold: small shapes are all edge, and the edge class's threshold is set by how
differently a converted image draws every contact (dimmer in one corner, rings in one column).
Their neighbours of the same size, drawn by the same optics and model, are the better
reference: each feature's contrast against the ground just around it is compared with the
median contrast of its nearest neighbours of similar area (cell-to-cell, with the layout saying
where the cells are). A feature is missing when it keeps less than half of its neighbours'
contrast (it is closer to absent than to them) and the deficit is significant at the
false-alarm rate against the noise of the ground around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from edge.imaging.morphology import disk
from edge.imaging.statistics import robust_std
from edge.inspection.components import Region
from edge.inspection.merge import boxes_near

PRESENCE = 0.5  # the share of its neighbours' contrast below which a feature counts as missing
NEIGHBOURS = 8
MIN_NEIGHBOURS = 4
AREA_RATIO = 2.0  # neighbours of a feature have an area within this factor of its own
SPREAD_PX = 1  # the footprint grown by the blur and residual misregistration
RING_PX = 3  # the width of the ground the contrast is measured against
MIN_GROUND_PX = 5


@dataclass
class _Feature:
    area: int
    contrast: float  # mean over the grown footprint minus the median of the ground around it
    noise: float  # the standard error of `contrast` from the ground's pixel noise
    centre: np.ndarray
    footprint: np.ndarray  # the grown footprint, in a window whose top-left pixel is `corner`
    corner: tuple[int, int]


def _features(image: np.ndarray, pattern: np.ndarray, judged: np.ndarray, max_side_px: int,
              ) -> list[_Feature]:
    """The small isolated features whose surroundings lie wholly where the image is judged."""
    n, labels, stats, centres = cv2.connectedComponentsWithStats(pattern, connectivity=8)
    reach = SPREAD_PX + RING_PX
    found = []
    for label in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[label])
        y0, y1, x0, x1 = y - reach, y + h + reach, x - reach, x + w + reach
        if max(w, h) > max_side_px or min(y0, x0) < 0 or y1 > image.shape[0] or \
                x1 > image.shape[1] or not judged[y0:y1, x0:x1].all():
            continue
        window = labels[y0:y1, x0:x1]
        own = (window == label).astype(np.uint8)
        others = cv2.dilate(((window > 0) & (window != label)).astype(np.uint8), disk(SPREAD_PX))
        inner = cv2.dilate(own, disk(SPREAD_PX)).astype(bool)
        ground = cv2.dilate(own, disk(reach)).astype(bool) & ~inner & ~others.astype(bool)
        if ground.sum() < MIN_GROUND_PX:
            continue
        pixels = image[y0:y1, x0:x1]
        contrast = float(pixels[inner].mean() - np.median(pixels[ground]))
        noise = robust_std(pixels[ground]) * float(np.sqrt(1 / inner.sum() + 1 / ground.sum()))
        found.append(_Feature(area, contrast, noise, centres[label], inner, (x0, y0)))
    return found


def missing_features(image: np.ndarray, pattern: np.ndarray, judged: np.ndarray,
                     max_side_px: int, rate: float) -> list[Region]:
    """The small features of `pattern` (the layout placed in `image`'s frame, True = shape)
    no wider than `max_side_px` that `image` lacks, as missing contacts; `score`
    is the contrast deficit over the decision level (> 1)."""
    features = _features(image, pattern.astype(np.uint8), judged, max_side_px)
    if len(features) <= MIN_NEIGHBOURS:
        return []
    contrast = np.array([f.contrast for f in features])
    grid = _Grid(np.array([f.centre for f in features]),
                 np.array([f.area for f in features], float), image.shape)
    z = NormalDist().inv_cdf(1 - rate / 2)
    regions = []
    for i, feature in enumerate(features):
        peers = grid.alike_nearest(i)
        if peers.size < MIN_NEIGHBOURS:
            continue
        expected = float(np.median(contrast[peers]))
        deficit = (expected - feature.contrast) * np.sign(expected)
        level = (1 - PRESENCE) * abs(expected)
        if deficit > level and deficit > z * feature.noise:
            regions.append(_region(feature, deficit / level))
    return regions


class _Grid:
    """Feature centres bucketed in square cells, so that finding a feature's nearest
    neighbours searches the cells around it, not the whole image (a die's mosaic holds
    hundreds of thousands of contacts)."""

    def __init__(self, centres: np.ndarray, areas: np.ndarray, shape: tuple[int, ...]) -> None:
        self.centres, self.areas = centres, areas
        self.cell = max(8.0, 2.0 * float(np.sqrt(shape[0] * shape[1] / len(centres))))
        self.keys = np.floor(centres / self.cell).astype(np.int64)
        self.span = int((self.keys.max(0) - self.keys.min(0)).max())
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for index, key in enumerate(map(tuple, self.keys)):
            self.buckets.setdefault(key, []).append(index)

    def alike_nearest(self, i: int) -> np.ndarray:
        """Up to NEIGHBOURS other features of an area within AREA_RATIO of feature `i`'s,
        nearest first: the search grows ring by ring until the last of them is nearer than any
        unsearched cell."""
        kx, ky = (int(k) for k in self.keys[i])
        area = self.areas[i]
        ring = 1
        while True:
            found = [j for dx in range(-ring, ring + 1) for dy in range(-ring, ring + 1)
                     for j in self.buckets.get((kx + dx, ky + dy), ()) if j != i]
            candidates = np.array(found, np.int64)
            candidates = candidates[(self.areas[candidates] <= AREA_RATIO * area) &
                                    (self.areas[candidates] >= area / AREA_RATIO)]
            distance = np.hypot(*(self.centres[candidates] - self.centres[i]).T)
            rank = np.argsort(distance, kind="stable")[:NEIGHBOURS]
            if ring > self.span or (rank.size == NEIGHBOURS and
                                    distance[rank[-1]] <= ring * self.cell):
                return candidates[rank]
            ring += 1


def _region(feature: _Feature, score: float) -> Region:
    ys, xs = np.nonzero(feature.footprint)
    x0, y0 = feature.corner
    box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
    mask = feature.footprint[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return Region(box, mask, "missing", float(score), x0 + float(xs.mean()), y0 + float(ys.mean()),
                  "missing_contact")


def apart(new: list[Region], found: list[Region], gap_px: int) -> list[Region]:
    """The `new` regions farther than `gap_px` from every `found` one (those already cover
    them)."""
    return [r for r in new if not any(boxes_near(r.bbox, f.bbox, gap_px) for f in found)]
