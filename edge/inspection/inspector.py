"""One inspection: an image (with its stage position) against the reference of a mode, to
defect records and the region that could be judged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import read_image
from edge.imaging.mosaic import read_ome_pixel_size
from edge.imaging.resample import rescale_to_pixel_size
from edge.inspection.database import LayoutRaster, database, read_layout
from edge.inspection.detect import compare
from edge.inspection.features import apart, missing_features
from edge.inspection.records import Defect, to_defects
from edge.inspection.reference import Reference, cell, golden
from edge.inspection.settings import MODES, InspectionSettings


@dataclass
class Inspection:
    """The defects of one image (in its pixel frame) and `region` (x0, y0, x1, y1), the
    bounding box of the pixels judged; `unconfirmed`: detections left out because the raw
    image did not confirm them (edge.inspection.confirm)."""

    defects: list[Defect]
    region: tuple[int, int, int, int]
    reference: Reference
    unconfirmed: int = 0


def _region(valid: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(valid)
    if ys.size == 0:
        return 0, 0, 0, 0
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class Inspector:
    """Compares images with a reference of one of MODES: `reference` (golden: an image whose
    pixel (0, 0) lies at stage `origin_nm`, at the inspected images' pixel size), `pitch_nm`
    (cell: the repeat, (x, y), None = detected), `layout` (database: placed with its pixel
    (0, 0) at stage `origin_nm`)."""

    def __init__(self, mode: str, settings: InspectionSettings | None = None,
                 reference: np.ndarray | None = None, origin_nm: tuple[float, float] = (0, 0),
                 pitch_nm: tuple[float | None, float | None] = (None, None),
                 layout: LayoutRaster | None = None) -> None:
        if mode not in MODES:
            raise UserError(f"unknown inspection mode {mode!r} (choose from {', '.join(MODES)})")
        if mode == "golden" and reference is None:
            raise UserError("golden-reference inspection needs a reference image")
        if mode == "database" and layout is None:
            raise UserError("die-to-database inspection needs a layout")
        self.mode = mode
        self.settings = settings or InspectionSettings()
        self.reference = None if reference is None else np.asarray(reference, np.float32)
        self.origin_nm = (float(origin_nm[0]), float(origin_nm[1]))
        self.pitch_nm = pitch_nm
        self.layout = layout

    @classmethod
    def from_file(cls, mode: str, path: str | Path | None, pixel_size_nm: float,
                  settings: InspectionSettings | None = None,
                  origin_nm: tuple[float, float] = (0, 0),
                  pitch_nm: tuple[float | None, float | None] = (None, None),
                  reference_pixel_nm: float | None = None,
                  gds_layer: int | None = None) -> Inspector:
        """The reference of `mode` from a file: a golden image (an OME-TIFF gives its own pixel
        size; other images are at `reference_pixel_nm`, default the inspected one's), a layout
        raster or GDSII file; cell needs none."""
        if mode == "cell" or path is None:
            return cls(mode, settings, origin_nm=origin_nm, pitch_nm=pitch_nm)
        path = Path(path)
        if mode == "database":
            layout = read_layout(path, reference_pixel_nm or pixel_size_nm, gds_layer)
            return cls(mode, settings, origin_nm=origin_nm, layout=layout)
        source_nm = reference_pixel_nm or (read_ome_pixel_size(path) if path.name.endswith(
            ".ome.tif") else pixel_size_nm)
        image = rescale_to_pixel_size(read_image(path), source_nm, pixel_size_nm)
        return cls(mode, settings, image, origin_nm)

    def reference_for(self, image: np.ndarray, pixel_size_nm: float,
                      origin_nm: tuple[float, float] = (0.0, 0.0)) -> Reference:
        """What `image` is compared with, in its frame."""
        offset_nm = (origin_nm[0] - self.origin_nm[0], origin_nm[1] - self.origin_nm[1])
        if self.mode == "golden":
            assert self.reference is not None
            return golden(image, self.reference,
                          (offset_nm[0] / pixel_size_nm, offset_nm[1] / pixel_size_nm))
        if self.mode == "cell":
            pitch = tuple(p / pixel_size_nm if p else None for p in self.pitch_nm)
            return cell(image, (pitch[0], pitch[1]))
        assert self.layout is not None
        return database(image, self.layout, pixel_size_nm, offset_nm)

    def inspect(self, image: np.ndarray, pixel_size_nm: float,
                origin_nm: tuple[float, float] = (0.0, 0.0),
                reference: Reference | None = None) -> Inspection:
        """The defects of `image` (float [0, 1]) whose pixel (0, 0) lies at `origin_nm`, against
        `reference` when given (one built by `reference_for`, reused), else its own."""
        image = np.asarray(image, np.float32)
        reference = reference or self.reference_for(image, pixel_size_nm, origin_nm)
        found = compare(image, reference.image, reference.valid, pixel_size_nm, self.settings)
        diff = found.difference
        regions = found.regions
        if reference.pattern is not None:
            regions = regions + apart(missing_features(
                image, reference.pattern, diff.valid,
                round(self.settings.max_defect_nm / pixel_size_nm),
                self.settings.false_alarm_rate), regions,
                round(self.settings.merge_distance_nm / pixel_size_nm))
        defects = to_defects(regions, image, (diff.image, diff.reference), diff.valid,
                             pixel_size_nm, self.settings.thumbnail_px, origin_nm)
        return Inspection(defects, _region(found.difference.valid), reference)
