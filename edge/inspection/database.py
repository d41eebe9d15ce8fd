"""Die-to-database: the layout (a raster, or GDSII read with gdstk) rendered to the image's
look and registered to it.

The rendering is a small linear model fitted to each image: grey = c0 + c1 * blurred pattern
+ c2 * blurred rim + c3 * blurred (pattern x density) + c4 * blurred (space x density), where
the rim is the band just inside the pattern's edges (the bright edges of an SEM or SEM-like
image) and the density the share of pattern around a pixel (DENSITY_NM): an isolated wire looks
unlike a dense array of the same width, through the optics (proximity) and through a model that
converts them. The blur is chosen among a few widths by the fit, so one model serves SEM,
converted and optical images, in either tone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import gdstk
import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import read_raw
from edge.imaging.resample import rescale_to_pixel_size
from edge.inspection.reference import Reference, golden, place

GDS_SUFFIXES = (".gds", ".gds2", ".gdsii")
BLUR_CANDIDATES_NM = (5.0, 10.0, 20.0, 40.0, 80.0)
RIM_NM = 20.0
DENSITY_NM = 100.0  # the neighbourhood whose pattern density changes an isolated feature's look
FIT_STEP_PX = 2


@dataclass(frozen=True)
class LayoutRaster:
    """`pattern` (True where the drawn shapes are) at `pixel_size_nm`; its pixel (0, 0) lies
    at layout position `origin_nm` (x, y); rows follow +y."""

    pattern: np.ndarray
    pixel_size_nm: float
    origin_nm: tuple[float, float] = (0.0, 0.0)

    def at_pixel_size(self, pixel_size_nm: float) -> np.ndarray:
        """The pattern's coverage (0..1) resampled to another pixel size."""
        return rescale_to_pixel_size(self.pattern.astype(np.float32), self.pixel_size_nm,
                                     pixel_size_nm)


def read_layout(path: str | Path, pixel_size_nm: float, layer: int | None = None,
                datatype: int | None = None) -> LayoutRaster:
    """A layout from a GDSII file (shapes of `layer`/`datatype`, all when None) rasterised at
    `pixel_size_nm`, or from an image or .npy raster (non-zero = pattern) whose pixels are
    `pixel_size_nm`."""
    path = Path(path)
    if path.suffix.lower() in GDS_SUFFIXES:
        return _rasterise_gds(path, pixel_size_nm, layer, datatype)
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot read the layout raster ({exc})") from exc
    else:
        array = read_raw(path)
    if array.ndim != 2:
        raise UserError(f"{path}: a layout raster must be 2-D, got shape {array.shape}")
    return LayoutRaster(np.asarray(array) > 0, float(pixel_size_nm))


def _rasterise_gds(path: Path, pixel_size_nm: float, layer: int | None,
                   datatype: int | None) -> LayoutRaster:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        library = gdstk.read_gds(str(path))
    except Exception as exc:  # gdstk raises plain errors for a malformed file
        raise UserError(f"{path}: cannot read GDSII ({exc})") from exc
    tops = [cell for cell in library.top_level() if isinstance(cell, gdstk.Cell)]
    if not tops:
        raise UserError(f"{path}: the library has no cell")
    polygons = [p for p in tops[0].get_polygons()
                if (layer is None or p.layer == layer) and (datatype is None or p.datatype == datatype)]
    if not polygons:
        raise UserError(f"{path}: no shapes on layer {layer}, datatype {datatype}")
    scale = library.unit * 1e9 / pixel_size_nm  # user units -> pixels
    points = [np.asarray(p.points, np.float64) * scale for p in polygons]
    low = np.floor(np.min([q.min(axis=0) for q in points], axis=0))
    high = np.ceil(np.max([q.max(axis=0) for q in points], axis=0))
    width, height = (high - low).astype(int) + 1
    pattern = np.zeros((height, width), np.uint8)
    shift = 4  # sub-pixel vertex precision of cv2.fillPoly
    cv2.fillPoly(pattern, [np.round((q - low) * (1 << shift)).astype(np.int32) for q in points],
                 1, cv2.LINE_8, shift)
    origin = (float(low[0]) * pixel_size_nm, float(low[1]) * pixel_size_nm)
    return LayoutRaster(pattern.astype(bool), float(pixel_size_nm), origin)


def _layers(coverage: np.ndarray, rim_px: float, density_px: float) -> list[np.ndarray]:
    """What the rendering blurs, the same for every blur: the pattern, its rim, and the pattern
    and the space weighted by the density."""
    pattern = coverage > 0.5
    inside = cv2.distanceTransform(pattern.astype(np.uint8), cv2.DIST_L2, 5)
    rim = pattern * np.exp(-np.maximum(inside - 0.5, 0) / max(rim_px, 0.5))
    density = cv2.GaussianBlur(pattern.astype(np.float32), (0, 0), density_px)
    return [np.asarray(a, np.float32) for a in (coverage, rim, pattern * density,
                                                ~pattern * density)]


def render(coverage: np.ndarray, image: np.ndarray, valid: np.ndarray,
           pixel_size_nm: float) -> np.ndarray:
    """The pattern (aligned with `image`) rendered with the blur and coefficients that fit
    `image` best over `valid`."""
    best: tuple[float, np.ndarray] | None = None
    pick = valid[::FIT_STEP_PX, ::FIT_STEP_PX]
    target = image[::FIT_STEP_PX, ::FIT_STEP_PX][pick]
    layers = _layers(coverage, RIM_NM / pixel_size_nm, DENSITY_NM / pixel_size_nm)
    for blur_nm in BLUR_CANDIDATES_NM:
        blur_px = blur_nm / pixel_size_nm
        features = np.stack([np.ones_like(coverage),
                             *(cv2.GaussianBlur(a, (0, 0), blur_px) for a in layers)])
        design = features[:, ::FIT_STEP_PX, ::FIT_STEP_PX][:, pick].T
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        error = float(np.mean((design @ coef - target) ** 2))
        if best is None or error < best[0]:
            best = (error, np.tensordot(coef, features, 1).astype(np.float32))
    assert best is not None
    return best[1]


def database(image: np.ndarray, layout: LayoutRaster, pixel_size_nm: float,
             offset_nm: tuple[float, float] = (0.0, 0.0)) -> Reference:
    """The layout rendered to `image`'s look in its frame. `offset_nm` (x, y): where the image's
    pixel (0, 0) lies in layout coordinates according to the stage."""
    coverage = layout.at_pixel_size(pixel_size_nm)
    offset_px = ((offset_nm[0] - layout.origin_nm[0]) / pixel_size_nm,
                 (offset_nm[1] - layout.origin_nm[1]) / pixel_size_nm)
    everywhere = np.ones(coverage.shape, bool)
    rough = render(coverage, _nominal(image, coverage.shape, offset_px), everywhere, pixel_size_nm)
    placed = golden(image, rough, offset_px)
    aligned, _ = place(coverage, placed.shift, image.shape)
    final = render(aligned, image, placed.valid, pixel_size_nm)
    return Reference(final, placed.valid, placed.shift, pattern=aligned > 0.5)


def _nominal(image: np.ndarray, shape: tuple[int, ...], offset_px: tuple[float, float],
             ) -> np.ndarray:
    """The image pasted at its nominal place on a canvas of the layout's shape (the median
    elsewhere), so a first rendering can be fitted before registration."""
    canvas = np.full(shape[:2], float(np.median(image)), np.float32)
    x, y = round(offset_px[0]), round(offset_px[1])
    h, w = image.shape
    ys, xs = slice(max(0, y), max(0, min(shape[0], y + h))), slice(max(0, x), max(0, min(shape[1], x + w)))
    canvas[ys, xs] = image[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
    return canvas
