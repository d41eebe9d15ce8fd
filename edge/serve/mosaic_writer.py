"""The daemon's optional scan mosaics ([mosaic]): converted tiles stitched per scan, and on
request the raw tiles at the same placements."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

from edge.imaging.imageio import to_float01
from edge.imaging.mosaic import MosaicBuilder, write_ome_tiff

log = logging.getLogger(__name__)


class MosaicWriter:
    """A pipeline observer: builds each scan's mosaic from its converted tiles and writes
    <dir>/<scan_id>.ome.tif at its scan-end; with `raw`, also <dir>/<scan_id>.raw.ome.tif, the
    tiles as received (a fused plane for a z-stack), placed where the converted ones were
    (refinement included), so that the two mosaics share one frame."""

    def __init__(self, directory: Path, refine: bool, raw: bool = False) -> None:
        self.directory = directory
        self.refine = refine
        self.raw = raw
        self._builders: dict[str, tuple[MosaicBuilder, MosaicBuilder | None]] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def converted(self, header: dict, image: np.ndarray, raw: np.ndarray) -> list[list[bytes]]:
        scan_id = header["scan_id"]
        if scan_id not in self._builders:
            pixel = float(header["pixel_size_nm"])
            self._builders[scan_id] = (MosaicBuilder(pixel, refine=self.refine),
                                       MosaicBuilder(pixel) if self.raw else None)
        converted, raws = self._builders[scan_id]
        converted.add(image, header["x_nm"], header["y_nm"])
        if raws is not None:
            raws.add(to_float01(np.asarray(raw)), header["x_nm"], header["y_nm"])
        return []

    def scan_end(self, scan_id: str, summary: dict) -> list[list[bytes]]:
        builders = self._builders.pop(scan_id, None)
        if builders is None:
            return []
        converted, raws = builders
        metadata = {k: v for k, v in summary.items() if isinstance(v, str | int | float)}
        self._write(scan_id, f"{scan_id}.ome.tif", converted, metadata)
        if raws is not None:
            raws.placements = copy.deepcopy(converted.placements)
            self._write(scan_id, f"{scan_id}.raw.ome.tif", raws, metadata)
        return []

    def _write(self, scan_id: str, name: str, builder: MosaicBuilder, metadata: dict) -> None:
        """The mosaic, with the stage position of its pixel (0, 0) in its metadata
        (`origin_x_nm`, `origin_y_nm`: the `[inspection] reference_origin_nm` it needs as a
        reference)."""
        path = self.directory / name
        image = builder.render()
        x0, y0 = builder.origin_nm
        write_ome_tiff(path, image, builder.pixel_size_nm,
                       metadata={**metadata, "origin_x_nm": x0, "origin_y_nm": y0})
        log.info("wrote the mosaic of scan %s to %s (pixel (0, 0) at stage %.1f, %.1f nm)",
                 scan_id, path, x0, y0)
