"""A rough class and the polarity of each detection, from how it changes the pattern.

The pattern is the bright phase of the (defect-free) reference, by Otsu's threshold; the same
threshold applied to the inspected image gives its pattern. Material is extra where the image
has pattern the reference has not, missing where the reference has pattern the image has not.
Extra material that joins two separate shapes of the reference (or splits a gap in two: the
same in the other tone, where the pattern is a metal field cut by trenches) is a bridge; extra
material on no shape is a particle, or an extra contact when it is the size of the image's
contacts (the small isolated square shapes of the reference); extra material on one shape is a
blob on it (particle). Missing material that splits a shape (or joins two gaps) is an open;
missing material that takes most of a small isolated shape is a missing contact; other missing
material is unclassified.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.inspection.components import Region

CLASSES = ("unclassified", "particle", "bridge", "open", "missing_contact", "extra_contact")
CONTEXT = 3.0  # the window around a defect, in defect sizes
CONTACT_SIZE_RATIO = 2.0  # area ratio within which a defect has a contact's size
SQUARE = 1.5  # the most elongated bounding box a contact has


@dataclass
class Patterns:
    """The reference's and the image's bright phase, and the areas of the reference's
    contacts."""

    reference: np.ndarray
    image: np.ndarray
    contact_areas: np.ndarray


def _otsu_level(reference: np.ndarray, valid: np.ndarray) -> float:
    values = reference[valid]
    lo, hi = np.percentile(values, [0.5, 99.5])
    scaled = np.clip((values - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(lo + level / 255 * (hi - lo))


def patterns(image: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> Patterns:
    """The patterns of an aligned, grey-level-matched pair."""
    if not valid.any():
        empty = np.zeros(reference.shape, bool)
        return Patterns(empty, empty, np.zeros(0))
    level = _otsu_level(reference, valid)
    ref = reference > level
    _, _, stats, _ = cv2.connectedComponentsWithStats(ref.astype(np.uint8), connectivity=8)
    h, w = ref.shape
    contacts = [a for x, y, bw, bh, a in stats[1:]
                if x > 0 and y > 0 and x + bw < w and y + bh < h
                and max(bw, bh) <= SQUARE * min(bw, bh)]
    return Patterns(ref, image > level, np.array(contacts, float))


def _window(region: Region, shape: tuple[int, ...]) -> tuple[slice, slice]:
    x0, y0, x1, y1 = region.bbox
    reach = int(CONTEXT * max(x1 - x0, y1 - y0)) + 4
    return slice(max(0, y0 - reach), min(shape[0], y1 + reach)), \
        slice(max(0, x0 - reach), min(shape[1], x1 + reach))


def _defect_mask(region: Region, window: tuple[slice, slice]) -> np.ndarray:
    ys, xs = window
    mask = np.zeros((ys.stop - ys.start, xs.stop - xs.start), bool)
    x0, y0, x1, y1 = region.bbox
    mask[y0 - ys.start:y1 - ys.start, x0 - xs.start:x1 - xs.start] = region.mask
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _labels(mask: np.ndarray) -> np.ndarray:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[1]


def _ids(labels: np.ndarray, where: np.ndarray) -> set[int]:
    return set(np.unique(labels[where]).tolist()) - {0}


def _joins(changed: np.ndarray, before: np.ndarray, after: np.ndarray) -> bool:
    """Whether a shape of `after` that holds changed pixels covers two shapes of `before`."""
    return any(len(_ids(before, after == shape)) >= 2 for shape in _ids(after, changed))


def _splits(changed: np.ndarray, before: np.ndarray, after: np.ndarray) -> bool:
    """Whether a shape of `before` next to the changed pixels falls apart in `after`."""
    grown = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return any(len(_ids(after, before == shape)) >= 2 for shape in _ids(before, grown))


def classify(region: Region, found: Patterns) -> tuple[str, str]:
    """(one of CLASSES, polarity "extra" or "missing") of `region`."""
    window = _window(region, found.reference.shape)
    ref, img = found.reference[window], found.image[window]
    defect = _defect_mask(region, window)
    added, removed = defect & img & ~ref, defect & ref & ~img
    if not added.any() and not removed.any():
        return "unclassified", region.polarity
    ref_labels, img_labels = _labels(ref), _labels(img)
    gaps = (_labels(~ref), _labels(~img))
    if added.sum() >= removed.sum():
        if _joins(added, ref_labels, img_labels) or _splits(added, *gaps):
            return "bridge", "extra"
        return _extra(region, added, ref_labels, found.contact_areas), "extra"
    if _splits(removed, ref_labels, img_labels) or _joins(removed, *gaps):
        return "open", "missing"
    return _missing(removed, ref_labels), "missing"


def _extra(region: Region, added: np.ndarray, ref_labels: np.ndarray,
           contact_areas: np.ndarray) -> str:
    grown = cv2.dilate(added.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if _ids(ref_labels, grown):
        return "particle"
    x0, y0, x1, y1 = region.bbox
    area, square = added.sum(), max(x1 - x0, y1 - y0) <= SQUARE * min(x1 - x0, y1 - y0)
    like = contact_areas.size and square and np.any(
        (contact_areas / CONTACT_SIZE_RATIO <= area) & (area <= contact_areas * CONTACT_SIZE_RATIO))
    return "extra_contact" if like else "particle"


def _missing(removed: np.ndarray, ref_labels: np.ndarray) -> str:
    for shape in _ids(ref_labels, removed):
        mask = ref_labels == shape
        isolated = not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        if isolated and (removed & mask).sum() >= 0.5 * mask.sum():
            return "missing_contact"
    return "unclassified"
