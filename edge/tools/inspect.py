"""Offline inspection of image files against a reference (`ssum inspect`), with the daemon's
inspection code: per image OUT/<stem>.defects.json, OUT/<stem>.klarf (+ .klarf.json,
.defects.tif) and OUT/<stem>.overlay.png. Only the part of the image that the reference covers
can be judged; `inspected_region_px` says which."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.imaging.imageio import read_image
from edge.inference.converter import Converter
from edge.inspection.confirm import ConfirmedInspector, inspect_converted
from edge.inspection.inspector import Inspection, Inspector
from edge.inspection.klarf import KlarfSample, write_klarf
from edge.inspection.overlay import write_overlay
from edge.inspection.settings import InspectionSettings


@dataclass(frozen=True)
class InspectOptions:
    """The reference (`mode`, `reference` file, its pixel size, the cell pitch, the GDSII
    layer), the images' pixel size, the detection settings, and whether converted images'
    detections are confirmed by the raw ones (`confirm`, edge.inspection.confirm)."""

    mode: str = "golden"
    reference: Path | None = None
    pixel_size_nm: float = 10.0
    reference_pixel_nm: float | None = None
    pitch_nm: tuple[float | None, float | None] = (None, None)
    gds_layer: int | None = None
    settings: InspectionSettings = field(default_factory=InspectionSettings)
    confirm: bool = True


def _prepared(image: np.ndarray, converter: Converter | None) -> np.ndarray:
    return image if converter is None else np.clip(converter.convert(image), 0, 1)


def build_inspector(options: InspectOptions, converter: Converter | None = None,
                    ) -> Inspector | ConfirmedInspector:
    """The inspector of `options`; with a converter, a golden reference image is converted too
    (like is compared with like) and, with `options.confirm`, the raw images vouch for the
    converted ones' detections."""
    inspector = Inspector.from_file(options.mode, options.reference, options.pixel_size_nm,
                                    options.settings, pitch_nm=options.pitch_nm,
                                    reference_pixel_nm=options.reference_pixel_nm,
                                    gds_layer=options.gds_layer)
    if converter is None:
        return inspector
    optical = copy.copy(inspector)
    if inspector.reference is not None:
        inspector.reference = _prepared(inspector.reference, converter)
    return ConfirmedInspector(inspector, optical) if options.confirm else inspector


def write_results(path: Path, image: np.ndarray, found: Inspection, out_dir: Path,
                  pixel_size_nm: float) -> dict[str, Any]:
    """The three outputs of one inspected image; returns the defects.json content."""
    stem = path.stem
    x0, y0, x1, y1 = found.region
    area = (x1 - x0) * (y1 - y0) * pixel_size_nm**2
    extent = (image.shape[1] * pixel_size_nm, image.shape[0] * pixel_size_nm)
    write_klarf(out_dir / f"{stem}.klarf", found.defects, KlarfSample(stem, area, extent))
    write_overlay(out_dir / f"{stem}.overlay.png", image, found.defects, found.region)
    result = {"image": str(path), "inspected_region_px": list(found.region),
              "defects": [d.summary() for d in found.defects]}
    (out_dir / f"{stem}.defects.json").write_text(json.dumps(result, indent=1))
    return result


def inspect_file(path: Path, inspector: Inspector | ConfirmedInspector, out_dir: Path,
                 pixel_size_nm: float, converter: Converter | None = None) -> dict[str, Any]:
    """Inspect one image file (converted first when a converter is given)."""
    raw = read_image(path)
    image = _prepared(raw, converter)
    found = inspect_converted(inspector, image, raw, pixel_size_nm)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_results(path, image, found, out_dir, pixel_size_nm)
