"""Detection on an aligned image/reference pair: tolerant difference, threshold from the
false-alarm rate, connected components."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.inspection.components import Region, find_regions
from edge.inspection.difference import Difference, envelope_difference, smoothing_sigma_px
from edge.inspection.settings import InspectionSettings
from edge.inspection.threshold import threshold_map


@dataclass
class Comparison:
    """What one comparison found (`regions`), with the difference and the threshold per pixel
    it was judged by."""

    regions: list[Region]
    difference: Difference
    level: np.ndarray


def compare(image: np.ndarray, reference: np.ndarray, valid: np.ndarray, pixel_size_nm: float,
            settings: InspectionSettings) -> Comparison:
    """Defects of `image` against `reference` (same frame, float [0, 1]) where `valid`."""
    sigma = smoothing_sigma_px(settings.min_defect_nm, pixel_size_nm)
    judged = _inside(valid, settings.border_px)
    diff = envelope_difference(image, reference, judged, sigma, settings.shift_tolerance_px,
                               math.ceil(2 * settings.max_defect_nm / pixel_size_nm))
    level = threshold_map(diff.signed, diff.image - diff.reference, diff.edges, diff.valid,
                          settings.false_alarm_rate)
    merge_px = round(settings.merge_distance_nm / pixel_size_nm)
    return Comparison(find_regions(diff.signed, level, merge_px), diff, level)


def _inside(valid: np.ndarray, border_px: int) -> np.ndarray:
    """`valid` without a band of `border_px` at its edges and at the image's."""
    if border_px <= 0:
        return valid
    padded = np.pad(valid.astype(np.uint8), 1)
    size = 2 * border_px + 1
    inner = cv2.erode(padded, np.ones((size, size), np.uint8), borderValue=0)
    return inner[1:-1, 1:-1].astype(bool)
