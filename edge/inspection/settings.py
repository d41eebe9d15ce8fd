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
    thumbnail_px: side of the thumbnail crop of each defect."""

    false_alarm_rate: float = 1e-10
    min_defect_nm: float = 40.0
    max_defect_nm: float = 300.0
    border_px: int = 16
    shift_tolerance_px: float = 1.0
    merge_distance_nm: float = 30.0
    thumbnail_px: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm_rate < 0.01:
            raise UserError(f"the false-alarm rate must be in (0, 0.01), got {self.false_alarm_rate}")
        if not 0 < self.min_defect_nm <= self.max_defect_nm:
            raise UserError("the defect sizes must satisfy 0 < min_defect_nm <= max_defect_nm")
        if self.shift_tolerance_px < 0 or self.merge_distance_nm < 0 or self.border_px < 0:
            raise UserError("the shift tolerance, merge distance and border must be >= 0")
        if self.thumbnail_px < 8:
            raise UserError(f"the thumbnail must be at least 8 px, got {self.thumbnail_px}")
