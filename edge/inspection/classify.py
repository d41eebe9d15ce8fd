"""A rough class for each detection, from how it changes the reference's pattern.

The pattern is the bright phase of the (defect-free) reference, by Otsu's threshold. Extra
material that joins two separate pattern shapes is a bridge; extra material touching no shape
is a particle, or an extra contact when it has the size of the contacts around it; extra
material on one shape is a blob on it (particle). Missing material that splits a shape is an
open; missing material that takes most of a small isolated shape is a missing contact; other
missing material is unclassified.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.inspection.components import Region

CLASSES = ("unclassified", "particle", "bridge", "open", "missing_contact", "extra_contact")
CONTEXT = 3.0  # the window around a defect, in defect sizes
CONTACT_SIZE_RATIO = 1.6


def pattern_mask(reference: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The bright phase of the reference (Otsu's threshold over `valid`)."""
    values = reference[valid]
    if values.size == 0:
        return np.zeros(reference.shape, bool)
    lo, hi = np.percentile(values, [0.5, 99.5])
    scaled = np.clip((reference - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(scaled[valid], 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return scaled > level


def _window(region: Region, shape: tuple[int, int]) -> tuple[slice, slice]:
    x0, y0, x1, y1 = region.bbox
    reach = int(CONTEXT * max(x1 - x0, y1 - y0)) + 4
    return slice(max(0, y0 - reach), min(shape[0], y1 + reach)), \
        slice(max(0, x0 - reach), min(shape[1], x1 + reach))


def _defect_mask(region: Region, window: tuple[slice, slice]) -> np.ndarray:
    ys, xs = window
    mask = np.zeros((ys.stop - ys.start, xs.stop - xs.start), bool)
    x0, y0, x1, y1 = region.bbox
    mask[y0 - ys.start:y1 - ys.start, x0 - xs.start:x1 - xs.start] = region.mask
    return mask


def _labels(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return n, labels, stats


def _touched(labels: np.ndarray, defect: np.ndarray) -> set[int]:
    grown = cv2.dilate(defect.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return set(np.unique(labels[grown]).tolist()) - {0}


def classify(region: Region, pattern: np.ndarray) -> str:
    """One of CLASSES for `region`, judged against the reference's `pattern`."""
    window = _window(region, pattern.shape)
    local = pattern[window]
    defect = _defect_mask(region, window)
    _, labels, stats = _labels(local)
    touched = _touched(labels, defect)
    if region.polarity == "extra":
        if len(touched) >= 2:
            return "bridge"
        if touched:
            return "particle"
        return "extra_contact" if _like_contacts(defect, labels, stats) else "particle"
    if not touched:
        return "unclassified"
    _, after, _ = _labels(local & ~cv2.dilate(defect.astype(np.uint8),
                                              np.ones((3, 3), np.uint8)).astype(bool))
    for label in touched:
        if len(set(np.unique(after[labels == label]).tolist()) - {0}) >= 2:
            return "open"
        shape = labels == label
        isolated = not (shape[0].any() or shape[-1].any() or shape[:, 0].any() or shape[:, -1].any())
        if isolated and (shape & defect).sum() >= 0.5 * shape.sum():
            return "missing_contact"
    return "unclassified"


def _like_contacts(defect: np.ndarray, labels: np.ndarray, stats: np.ndarray) -> bool:
    """Whether isolated shapes of about the defect's size and squareness lie around it."""
    area = defect.sum()
    h, w = labels.shape
    for i in range(1, len(stats)):
        x, y, bw, bh, a = (int(v) for v in stats[i])
        inside = x > 0 and y > 0 and x + bw < w and y + bh < h
        square = max(bw, bh) <= 1.5 * min(bw, bh)
        if inside and square and 1 / CONTACT_SIZE_RATIO <= a / area <= CONTACT_SIZE_RATIO:
            return True
    return False
