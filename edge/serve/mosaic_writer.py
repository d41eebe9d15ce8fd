"""The daemon's optional scan mosaics ([mosaic]): converted tiles stitched per scan."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge.imaging.mosaic import MosaicBuilder, write_ome_tiff

log = logging.getLogger(__name__)


class MosaicWriter:
    """A pipeline observer: builds each scan's mosaic from its converted tiles and writes
    <dir>/<scan_id>.ome.tif at its scan-end."""

    def __init__(self, directory: Path, refine: bool) -> None:
        self.directory = directory
        self.refine = refine
        self._builders: dict[str, MosaicBuilder] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def converted(self, header: dict, image: np.ndarray, raw: np.ndarray) -> list[list[bytes]]:
        builder = self._builders.get(header["scan_id"])
        if builder is None:
            builder = MosaicBuilder(float(header["pixel_size_nm"]), refine=self.refine)
            self._builders[header["scan_id"]] = builder
        builder.add(image, header["x_nm"], header["y_nm"])
        return []

    def scan_end(self, scan_id: str, summary: dict) -> list[list[bytes]]:
        builder = self._builders.pop(scan_id, None)
        if builder is None:
            return []
        path = self.directory / f"{scan_id}.ome.tif"
        write_ome_tiff(path, builder.render(), builder.pixel_size_nm,
                       metadata={k: v for k, v in summary.items()
                                 if isinstance(v, str | int | float)})
        log.info("wrote the mosaic of scan %s to %s", scan_id, path)
        return []
