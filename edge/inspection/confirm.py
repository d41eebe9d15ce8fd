"""Detections on a converted image confirmed by the raw optical image.

Two conversions of one defect-free pattern can differ where the model paints detail into wide
flat areas (smudges that neither optical image shows); a real defect changes the light the
microscope measured. So a converted image's detection is kept only when the raw optical pair
(image and reference, in the same frame) differs near it at a loose false-alarm rate: the
converted image places and classifies the defect, the raw one vouches that it is there.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from edge.inspection.inspector import Inspection, Inspector
from edge.inspection.merge import boxes_near
from edge.inspection.records import Defect
from edge.inspection.settings import InspectionSettings


def confirmed(defects: list[Defect], evidence: list[Defect], distance_nm: float) -> list[Defect]:
    """The `defects` whose box lies within `distance_nm` of some `evidence` box, renumbered."""
    boxes = [e.bbox_nm for e in evidence]
    kept = [d for d in defects if any(boxes_near(d.bbox_nm, b, distance_nm) for b in boxes)]
    return [replace(d, id=number) for number, d in enumerate(kept, 1)]


def evidence_settings(settings: InspectionSettings) -> InspectionSettings:
    """The settings that the raw optical difference is judged by."""
    return replace(settings, false_alarm_rate=settings.confirm_rate)


class ConfirmedInspector:
    """Inspects a converted image with `converted` and confirms each detection by the raw
    optical image against `optical`'s reference (same mode and placement, raw look), at
    `converted`'s `confirm_rate` and within its `confirm_distance_nm`."""

    def __init__(self, converted: Inspector, optical: Inspector) -> None:
        self.converted = converted
        self.optical = copy.copy(optical)
        self.optical.settings = evidence_settings(converted.settings)

    def inspect(self, image: np.ndarray, raw: np.ndarray, pixel_size_nm: float,
                origin_nm: tuple[float, float] = (0.0, 0.0)) -> Inspection:
        """The defects of the converted `image` that the `raw` optical one (same frame, float
        [0, 1]) confirms."""
        found = self.converted.inspect(image, pixel_size_nm, origin_nm)
        if not found.defects:
            return found
        evidence = self.optical.inspect(np.asarray(raw, np.float32), pixel_size_nm, origin_nm)
        kept = confirmed(found.defects, evidence.defects,
                         self.converted.settings.confirm_distance_nm)
        return Inspection(kept, found.region, found.reference, len(found.defects) - len(kept))
