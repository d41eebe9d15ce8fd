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

from edge.errors import UserError
from edge.imaging.imageio import to_float01
from edge.inspection.inspector import Inspection, Inspector
from edge.inspection.merge import boxes_near
from edge.inspection.records import Defect


def confirmed(defects: list[Defect], evidence: list[Defect], distance_nm: float) -> list[Defect]:
    """The `defects` whose box lies within `distance_nm` of some `evidence` box, renumbered."""
    boxes = [e.bbox_nm for e in evidence]
    kept = [d for d in defects if any(boxes_near(d.bbox_nm, b, distance_nm) for b in boxes)]
    return [replace(d, id=number) for number, d in enumerate(kept, 1)]


class ConfirmedInspector:
    """Inspects a converted image with `converted` and confirms each detection by the raw
    optical image against `optical`'s reference (same mode and placement, raw look), at
    `converted`'s `confirm_rate` and within its `confirm_distance_nm`."""

    def __init__(self, converted: Inspector, optical: Inspector) -> None:
        self.converted = converted
        self.optical = copy.copy(optical)
        self.optical.settings = replace(converted.settings,
                                        false_alarm_rate=converted.settings.confirm_rate)

    def inspect(self, image: np.ndarray, raw: np.ndarray, pixel_size_nm: float,
                origin_nm: tuple[float, float] = (0.0, 0.0)) -> Inspection:
        """The defects of the converted `image` that the `raw` optical one (same frame; integer
        or float [0, 1]) confirms."""
        if np.shape(raw) != np.shape(image):
            raise UserError(f"the raw image {np.shape(raw)} and the converted one "
                            f"{np.shape(image)} differ in shape: its detections cannot be "
                            "confirmed")
        found = self.converted.inspect(image, pixel_size_nm, origin_nm)
        if not found.defects:
            return found
        evidence = self.optical.inspect(to_float01(np.asarray(raw)), pixel_size_nm, origin_nm)
        kept = confirmed(found.defects, evidence.defects,
                         self.converted.settings.confirm_distance_nm)
        return Inspection(kept, found.region, found.reference, len(found.defects) - len(kept))


def inspect_converted(inspector: Inspector | ConfirmedInspector, image: np.ndarray,
                      raw: np.ndarray, pixel_size_nm: float,
                      origin_nm: tuple[float, float] = (0.0, 0.0)) -> Inspection:
    """The converted `image` inspected; a ConfirmedInspector also judges the `raw` one."""
    if isinstance(inspector, ConfirmedInspector):
        return inspector.inspect(image, raw, pixel_size_nm, origin_nm)
    return inspector.inspect(image, pixel_size_nm, origin_nm)
