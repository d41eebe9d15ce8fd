"""The scan mosaic: tiles placed by stage position, overlaps feather-blended, written as OME-TIFF.

One implementation for the daemon's mosaic writer, `ssum consume` and the demo. Stages err by
tens of nm, so with refine=True the tiles' positions are corrected from the overlaps: each pair
of overlapping neighbours is phase-correlated, and the positions that best agree with all those
measurements (weighted least squares, first tile fixed) are used.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from edge.errors import UserError
from edge.imaging.registration import phase_shift

log = logging.getLogger(__name__)

MIN_OVERLAP_PX = 16
MIN_RESPONSE = 0.05


@dataclass
class Placement:
    x_px: float  # top-left in mosaic pixels, from the stage position
    y_px: float
    dx: float = 0.0  # correction found by refinement
    dy: float = 0.0


class MosaicBuilder:
    """Collect tiles with stage positions (nm of their top-left pixel); render() stitches them."""

    def __init__(self, pixel_size_nm: float, refine: bool = False, feather_px: int | None = None,
                 max_correction_px: float = 16.0) -> None:
        if pixel_size_nm <= 0:
            raise UserError(f"pixel size must be positive, got {pixel_size_nm}")
        self.pixel_size_nm = float(pixel_size_nm)
        self.refine = refine
        self.feather_px = feather_px
        self.max_correction_px = max_correction_px
        self.images: list[np.ndarray] = []
        self.placements: list[Placement] = []

    def add(self, image: np.ndarray, x_nm: float, y_nm: float) -> None:
        image = np.asarray(image, np.float32)
        if image.ndim != 2:
            raise ValueError(f"mosaic tiles must be 2-D, got {image.shape}")
        self.images.append(image)
        self.placements.append(Placement(float(x_nm) / self.pixel_size_nm,
                                         float(y_nm) / self.pixel_size_nm))

    @property
    def origin_nm(self) -> tuple[float, float]:
        """Stage position (x, y) of the mosaic's pixel (0, 0)."""
        if not self.placements:
            return 0.0, 0.0
        x0, y0 = self._origin_px()
        return x0 * self.pixel_size_nm, y0 * self.pixel_size_nm

    def _origin_px(self) -> tuple[float, float]:
        return (min(p.x_px + p.dx for p in self.placements),
                min(p.y_px + p.dy for p in self.placements))

    def _positions(self) -> list[tuple[int, int]]:
        x0, y0 = self._origin_px()
        return [(round(p.y_px + p.dy - y0), round(p.x_px + p.dx - x0)) for p in self.placements]

    def render(self) -> np.ndarray:
        """The stitched mosaic, float32; uncovered pixels are 0."""
        if not self.images:
            raise UserError("the mosaic has no tiles")
        if self.refine and len(self.images) > 1:
            self._refine()
        positions = self._positions()
        height = max(y + im.shape[0] for (y, _), im in zip(positions, self.images))
        width = max(x + im.shape[1] for (_, x), im in zip(positions, self.images))
        total = np.zeros((height, width), np.float64)
        weight = np.zeros((height, width), np.float64)
        for (y, x), image in zip(positions, self.images):
            w = feather_weights(image.shape, self.feather_px)
            total[y : y + image.shape[0], x : x + image.shape[1]] += image * w
            weight[y : y + image.shape[0], x : x + image.shape[1]] += w
        covered = weight > 0
        total[covered] /= weight[covered]
        return total.astype(np.float32)

    def _refine(self) -> None:
        """Correct positions from pairwise phase correlation of the overlaps."""
        for p in self.placements:
            p.dx = p.dy = 0.0
        positions = self._positions()
        rows, values, weights = [], [], []
        n = len(self.images)
        for i in range(n):
            for j in range(i + 1, n):
                pair = _overlap(positions[i], self.images[i].shape, positions[j], self.images[j].shape)
                if pair is None:
                    continue
                a = self.images[i][pair[0]]
                b = self.images[j][pair[1]]
                sx, sy, response = phase_shift(a, b)
                if response < MIN_RESPONSE or max(abs(sx), abs(sy)) > self.max_correction_px:
                    log.debug("overlap %d-%d rejected: shift (%.1f, %.1f), response %.2f", i, j,
                              sx, sy, response)
                    continue
                rows.append((i, j))
                values.append((-sx, -sy))  # e_j - e_i
                weights.append(response)
        if not rows:
            log.warning("mosaic refinement found no reliable overlap; using stage positions")
            return
        corrections = _solve(n, rows, np.array(values), np.array(weights))
        for p, (dx, dy) in zip(self.placements, corrections):
            p.dx, p.dy = float(dx), float(dy)


def _overlap(pos_a: tuple[int, int], shape_a: tuple[int, ...], pos_b: tuple[int, int],
             shape_b: tuple[int, ...]) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    y0, x0 = max(pos_a[0], pos_b[0]), max(pos_a[1], pos_b[1])
    y1 = min(pos_a[0] + shape_a[0], pos_b[0] + shape_b[0])
    x1 = min(pos_a[1] + shape_a[1], pos_b[1] + shape_b[1])
    if y1 - y0 < MIN_OVERLAP_PX or x1 - x0 < MIN_OVERLAP_PX:
        return None
    a = (slice(y0 - pos_a[0], y1 - pos_a[0]), slice(x0 - pos_a[1], x1 - pos_a[1]))
    b = (slice(y0 - pos_b[0], y1 - pos_b[0]), slice(x0 - pos_b[1], x1 - pos_b[1]))
    return a, b


def _solve(n: int, pairs: list[tuple[int, int]], values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Corrections e (n x 2) minimising sum w (e_j - e_i - v)^2 with e_0 = 0; tiles not connected
    to tile 0 by any measured overlap keep a zero correction."""
    a = np.zeros((len(pairs) + 1, n))
    for k, (i, j) in enumerate(pairs):
        a[k, i], a[k, j] = -1.0, 1.0
    a[-1, 0] = 1.0  # anchor
    b = np.vstack([values, [0.0, 0.0]])
    sw = np.sqrt(np.append(weights, 1.0))[:, None]
    solution, *_ = np.linalg.lstsq(a * sw, b * sw, rcond=None)
    connected = {0}
    changed = True
    while changed:
        changed = False
        for i, j in pairs:
            if (i in connected) != (j in connected):
                connected |= {i, j}
                changed = True
    solution[[k for k in range(n) if k not in connected]] = 0.0
    return solution


def feather_weights(shape: tuple[int, ...], feather_px: int | None = None) -> np.ndarray:
    """Weights ramping linearly from ~0 at each tile edge to 1 at `feather_px` inside (default:
    an eighth of the shorter side), so overlapping tiles fade into each other without seams."""
    h, w = shape[:2]
    f = max(1, feather_px if feather_px is not None else min(h, w) // 8)
    ramp_y = np.minimum(np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / f, 1.0)
    ramp_x = np.minimum(np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / f, 1.0)
    return np.outer(ramp_y, ramp_x)


def write_ome_tiff(path: str | Path, image: np.ndarray, pixel_size_nm: float,
                   metadata: dict[str, Any] | None = None) -> Path:
    """16-bit OME-TIFF with the physical pixel size (nm); extra metadata as OME map annotations."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.round(np.clip(np.asarray(image, np.float32), 0, 1) * 65535).astype(np.uint16)
    ome = {"axes": "YX", "PhysicalSizeX": float(pixel_size_nm), "PhysicalSizeXUnit": "nm",
           "PhysicalSizeY": float(pixel_size_nm), "PhysicalSizeYUnit": "nm"}
    if metadata:
        ome["MapAnnotation"] = {str(k): str(v) for k, v in metadata.items()}
    tmp = path.with_name(path.name + ".tmp")
    tifffile.imwrite(tmp, data, ome=True, metadata=ome, photometric="minisblack")
    tmp.replace(path)
    return path


def read_ome_annotations(path: str | Path) -> dict[str, str]:
    """The key-value map annotations of an OME-TIFF (what write_ome_tiff's metadata became)."""
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata or ""
    return {html.unescape(k): html.unescape(v)
            for k, v in re.findall(r'<M K="([^"]*)">([^<]*)</M>', xml)}


def read_ome_pixel_size(path: str | Path) -> float:
    """PhysicalSizeX of an OME-TIFF, in nm."""
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata or ""
    match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml)
    if not match:
        raise UserError(f"{path}: no PhysicalSizeX in its OME metadata")
    return float(match.group(1))
