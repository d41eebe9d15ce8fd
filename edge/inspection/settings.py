"""The settings of a detection, one default each (the daemon's [inspection] keys and the
`ssum inspect` options take theirs from here)."""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import UserError

MODES = ("golden", "cell", "database")


@dataclass(frozen=True)
class InspectionSettings:
    """false_alarm_rate: the probability that a defect-free pixel exceeds the threshold (the
    threshold is extrapolated from each image's own difference statistics to this rate);
    min_defect_nm: the smallest defect of interest, which sets the matched smoothing;
    max_defect_nm: the largest one measured in full (grey-level differences wider than twice
    this are shading: converted images render wide flat areas slightly differently);
    border_px: pixels at the image border (and at the reference's) not judged (a converted
    tile's border shows the model's padding);
    shift_tolerance_px: residual misregistration and edge jitter tolerated, in pixels;
    merge_distance_nm: detections closer than this (of either polarity) are one defect;
    thumbnail_px: side of the thumbnail crop of each defect;
    confirm_rate, confirm_distance_nm: when a converted image's detections are confirmed by the
    raw optical image (edge.inspection.confirm), the false-alarm rate of the raw difference and
    how far from a detection its evidence may lie."""

    false_alarm_rate: float = 1e-10
    min_defect_nm: float = 40.0
    max_defect_nm: float = 300.0
    border_px: int = 16
    shift_tolerance_px: float = 1.0
    merge_distance_nm: float = 30.0
    thumbnail_px: int = 64
    confirm_rate: float = 1e-4
    confirm_distance_nm: float = 30.0

    def __post_init__(self) -> None:
        for name in ("false_alarm_rate", "confirm_rate"):
            if not 0 < getattr(self, name) < 0.01:
                raise UserError(f"{name} must be in (0, 0.01), got {getattr(self, name)}")
        if not 0 < self.min_defect_nm <= self.max_defect_nm:
            raise UserError("the defect sizes must satisfy 0 < min_defect_nm <= max_defect_nm")
        if min(self.shift_tolerance_px, self.merge_distance_nm, self.border_px,
               self.confirm_distance_nm) < 0:
            raise UserError("the shift tolerance, merge and confirm distances and border must be >= 0")
        if self.thumbnail_px < 8:
            raise UserError(f"the thumbnail must be at least 8 px, got {self.thumbnail_px}")
