"""The daemon's inline inspection ([inspection]): each converted tile inspected against the
reference, the scan's defects merged in mosaic coordinates and published as `defect/`
messages right before its scan-end, written as a KLARF file and counted in the metrics."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.inspection.confirm import ConfirmedInspector, inspect_converted
from edge.inspection.inspector import Inspector
from edge.inspection.klarf import KlarfSample, write_klarf
from edge.inspection.merge import covered_area, merge
from edge.inspection.records import Defect
from edge.protocol import encode_defect
from edge.serve.config import InspectionConfig
from edge.serve.metrics import EdgeMetrics

log = logging.getLogger(__name__)

MAX_OPEN_SCANS = 64
MAX_DEFECTS_PER_SCAN = 2000
NM2_PER_M2 = 1e18


@dataclass
class _Scan:
    pixel_size_nm: float = 0.0
    defects: list[Defect] = field(default_factory=list)
    judged: list[tuple[float, float, float, float]] = field(default_factory=list)
    tiles: list[tuple[float, float, float, float]] = field(default_factory=list)
    left_out: int = 0


def _nm_box(box: tuple[int, int, int, int], origin: tuple[float, float],
            pixel: float) -> tuple[float, float, float, float]:
    return (origin[0] + box[0] * pixel, origin[1] + box[1] * pixel,
            origin[0] + box[2] * pixel, origin[1] + box[3] * pixel)


class InspectionWriter:
    """A pipeline observer (see edge.serve.pipeline.Observer)."""

    def __init__(self, config: InspectionConfig, metrics: EdgeMetrics,
                 inspector: Inspector | ConfirmedInspector | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.directory = Path(config.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in ("reference", "optical_reference"):
            path = getattr(config, name)
            if inspector is None and path and not Path(path).is_file():
                raise UserError(f"[inspection] {name} {path}: no such file")
        self._inspector = inspector
        self._scans: OrderedDict[str, _Scan] = OrderedDict()

    def _inspector_for(self, pixel_size_nm: float) -> Inspector | ConfirmedInspector:
        """Loaded at the first tile, whose pixel size the reference is resampled to (a
        reference that cannot be read raises UserError for every tile)."""
        if self._inspector is None:
            inspector = self._load(self.config.reference, pixel_size_nm)
            if self.config.confirm:
                optical = inspector if self.config.mode != "golden" else \
                    self._load(self.config.optical_reference, pixel_size_nm)
                self._inspector = ConfirmedInspector(inspector, optical)
            else:
                self._inspector = inspector
        return self._inspector

    def _load(self, reference: str, pixel_size_nm: float) -> Inspector:
        c = self.config
        pitch = tuple(p or None for p in c.pitch_nm)
        return Inspector.from_file(c.mode, reference or None, pixel_size_nm, c.settings(),
                                   c.reference_origin_nm, (pitch[0], pitch[1]),
                                   c.reference_pixel_nm or None,
                                   None if c.gds_layer < 0 else c.gds_layer)

    def _scan(self, scan_id: str) -> _Scan:
        if scan_id not in self._scans:
            if len(self._scans) >= MAX_OPEN_SCANS:
                old, _ = self._scans.popitem(last=False)
                log.warning("forgot the defects of scan %s: no scan-end came", old)
            self._scans[scan_id] = _Scan()
        self._scans.move_to_end(scan_id)
        return self._scans[scan_id]

    def converted(self, header: dict, image: np.ndarray, raw: np.ndarray) -> list[list[bytes]]:
        start = time.monotonic()
        scan = self._scan(header["scan_id"])
        pixel = float(header["pixel_size_nm"])
        origin = (float(header["x_nm"]), float(header["y_nm"]))
        try:
            found = inspect_converted(self._inspector_for(pixel), np.clip(image, 0, 1), raw,
                                      pixel, origin)
        except UserError as exc:  # the reference cannot be used for this tile
            log.error("tile seq %s of scan %s not inspected: %s", header.get("seq"),
                      header["scan_id"], exc)
            self.metrics.inspection_errors.inc()
            return []
        except Exception:  # one tile's failure must not stop the others
            log.exception("inspecting tile seq %s of scan %s failed", header.get("seq"),
                          header["scan_id"])
            self.metrics.inspection_errors.inc()
            return []
        for defect in found.defects:
            defect.scan_id, defect.tiles = header["scan_id"], [int(header["seq"])]
        room = MAX_DEFECTS_PER_SCAN - len(scan.defects)
        scan.defects += found.defects[:max(room, 0)]
        scan.left_out += max(len(found.defects) - max(room, 0), 0)
        scan.pixel_size_nm = pixel
        scan.judged.append(_nm_box(found.region, origin, pixel))
        scan.tiles.append(_nm_box((0, 0, image.shape[1], image.shape[0]), origin, pixel))
        self.metrics.inspected_tiles.inc()
        self.metrics.detections_unconfirmed.inc(found.unconfirmed)
        self.metrics.inspection_latency.observe(time.monotonic() - start)
        return []

    def scan_end(self, scan_id: str, summary: dict) -> list[list[bytes]]:
        scan = self._scans.pop(scan_id, None)
        if scan is None:
            return []
        defects = merge(scan.defects, self.config.merge_distance_nm)
        area = covered_area(scan.judged)
        self._write(scan_id, scan, defects, area)
        for defect in defects:
            self.metrics.defects.labels(defect.defect_class).inc()
        self.metrics.inspected_area.inc(area / NM2_PER_M2)
        if area > 0:
            self.metrics.scan_defect_density.observe(len(defects) / (area / NM2_PER_M2))
        if scan.left_out:
            log.warning("scan %s: %d detections beyond the first %d were left out", scan_id,
                        scan.left_out, MAX_DEFECTS_PER_SCAN)
        log.info("scan %s: %d defect(s) in %.1f um^2", scan_id, len(defects), area * 1e-6)
        return [encode_defect(scan_id, {**d.record(), "n_defects": len(defects)}, d.thumbnail)
                for d in defects]

    def _write(self, scan_id: str, scan: _Scan, defects: list[Defect], area: float) -> None:
        c = self.config
        x0 = min(b[0] for b in scan.tiles)
        y0 = min(b[1] for b in scan.tiles)
        extent = (max(b[2] for b in scan.tiles) - x0, max(b[3] for b in scan.tiles) - y0)
        whole_scan = not (c.die_pitch_nm[0] and c.die_pitch_nm[1])
        sample = KlarfSample(scan_id, area, extent if whole_scan else c.die_pitch_nm,
                             (x0, y0) if whole_scan else c.die_origin_nm, c.lot_id, c.device_id,
                             c.step_id)
        files = write_klarf(self.directory / f"{scan_id}.klarf", defects, sample)
        log.info("wrote %s", ", ".join(str(f) for f in files))
