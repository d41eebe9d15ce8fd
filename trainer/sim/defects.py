"""Defects injected into a layout, so that the SEM and the SSUM renderings of it show the same
defect: particles, bridges, opens, missing and extra contacts, line-edge excursions.

Each kind edits the layout's material and height maps (extra material is metal at metal height,
missing material uncovers what lies below), and returns a truth record of the pixels it changed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from trainer.sim.layout import METAL, OXIDE, POLY, VIA, Layout, LayoutParams

DEFECT_KINDS = ("particle", "bridge", "open", "missing_contact", "extra_contact",
                "edge_excursion")
TRIES = 400  # random positions tried per defect before giving up on it


@dataclass(frozen=True)
class DefectParams:
    """`count` defects of kinds drawn from `kinds`, sizes log-uniform in [min, max] nm, each
    at least `clearance_nm` from the others and from the border."""

    count: int = 6
    min_size_nm: float = 20.0
    max_size_nm: float = 300.0
    kinds: tuple[str, ...] = DEFECT_KINDS
    clearance_nm: float = 400.0


@dataclass(frozen=True)
class InjectedDefect:
    """Truth: `x_px`, `y_px` the centroid of the changed pixels, `bbox_px` (x0, y0, x1, y1)
    half-open, in the layout's pixels; `polarity` "extra" or "missing" material."""

    id: int
    kind: str
    size_nm: float
    polarity: str
    x_px: float
    y_px: float
    bbox_px: tuple[int, int, int, int]
    area_px: int

    def to_dict(self, pixel_size_nm: float) -> dict:
        """The record, with the position and area in nm as well (pixel (0, 0) at 0 nm)."""
        return asdict(self) | {"bbox_px": list(self.bbox_px),
                               "bbox_nm": [v * pixel_size_nm for v in self.bbox_px],
                               "x_nm": self.x_px * pixel_size_nm,
                               "y_nm": self.y_px * pixel_size_nm,
                               "area_nm2": self.area_px * pixel_size_nm**2}


class _Canvas:
    """The layout being edited, with what lies below the top layer (to uncover it)."""

    def __init__(self, layout: Layout, params: LayoutParams) -> None:
        self.layout = Layout(layout.material.copy(), layout.height_nm.copy(),
                             layout.pixel_size_nm, layout.second_layer, layout.materials)
        self.metal_height = params.metal_thickness_nm
        below = layout.second_layer if layout.second_layer is not None else np.zeros(
            layout.shape, bool)
        self.below_material = np.where(below, POLY, OXIDE).astype(np.uint8)
        self.below_height = np.where(self.below_material == POLY,
                                     -params.second_layer_depth_nm, 0.0).astype(np.float32)
        self.taken = np.zeros(layout.shape, bool)

    @property
    def top(self) -> np.ndarray:
        return self.layout.top_mask()

    def add(self, mask: np.ndarray, material: int = METAL) -> None:
        self.layout.material[mask] = material
        self.layout.height_nm[mask] = self.metal_height

    def remove(self, mask: np.ndarray) -> None:
        self.layout.material[mask] = self.below_material[mask]
        self.layout.height_nm[mask] = self.below_height[mask]


def _disk(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float,
          angle: float = 0.0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (round(cx * 16), round(cy * 16)), (max(1, round(rx * 16)), max(1, round(ry * 16))),
                math.degrees(angle), 0, 360, 1, -1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _box(shape: tuple[int, int], y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> tuple[int, int] | None:
    ys, xs = np.nonzero(candidates)
    if ys.size == 0:
        return None
    i = int(rng.integers(ys.size))
    return int(ys[i]), int(xs[i])


def _distance(mask: np.ndarray) -> np.ndarray:
    """Distance in pixels from each pixel to the nearest True pixel of `mask`."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)


def _particle(canvas: _Canvas, rng: np.random.Generator, size_px: float,
              free: np.ndarray) -> np.ndarray | None:
    """A blob of metal on open oxide, away from every feature."""
    r = size_px / 2
    spot = _pick(rng, free & (_distance(canvas.top) > r + 3))
    if spot is None:
        return None
    ratio = rng.uniform(0.7, 1.0)
    return _disk(canvas.layout.shape, spot[0], spot[1], r, r * ratio, rng.uniform(0, math.pi))


def _runs(mask: np.ndarray, rng: np.random.Generator, max_len: int, free: np.ndarray,
          ) -> tuple[int, int, int, bool] | None:
    """A run of True pixels of `mask` along a row or column (at most `max_len` long) bounded by
    False on both ends: (line, start, stop, vertical) where vertical means along a column."""
    vertical = bool(rng.random() < 0.5)
    m = mask.T if vertical else mask
    f = free.T if vertical else free
    for _ in range(TRIES):
        spot = _pick(rng, m & f)
        if spot is None:
            return None
        row, col = spot
        line = m[row]
        start = col
        while start > 0 and line[start - 1]:
            start -= 1
        stop = col
        while stop < line.size and line[stop]:
            stop += 1
        if start > 0 and stop < line.size and stop - start <= max_len:
            return row, start, stop, vertical
    return None


def _band(shape: tuple[int, int], line: int, start: int, stop: int, vertical: bool,
          width: int) -> np.ndarray:
    """Pixels start..stop along the run's axis, `width` across it, centred on `line`."""
    lo = line - width // 2
    if vertical:
        return _box(shape, start, lo, stop, lo + width)
    return _box(shape, lo, start, lo + width, stop)


def _bridge(canvas: _Canvas, rng: np.random.Generator, size_px: float,
            free: np.ndarray) -> np.ndarray | None:
    """Metal across a narrow gap between two features, `size` wide."""
    width = max(1, round(size_px))
    top = canvas.top
    for _ in range(20):
        run = _runs(~top, rng, round(400 / canvas.layout.pixel_size_nm), free)
        if run is None:
            return None
        mask = _band(top.shape, *run, width)
        ends = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
        if (ends & top).sum() >= 2 * width:
            return mask & ~top
    return None


def _open(canvas: _Canvas, rng: np.random.Generator, size_px: float,
          free: np.ndarray) -> np.ndarray | None:
    """A cut `size` long through the whole width of a narrow line (not a via)."""
    length = max(1, round(size_px))
    metal = canvas.layout.material == METAL
    for _ in range(20):
        run = _runs(metal, rng, round(300 / canvas.layout.pixel_size_nm), free)
        if run is None:
            return None
        line, start, stop, vertical = run
        reach = _band(metal.shape, line, start, stop, vertical, length + 2 * (stop - start) + 4)
        cut = _band(metal.shape, line, start, stop, vertical, length)
        if (reach & metal).sum() > 1.8 * (cut & metal).sum():  # the line goes on both sides
            return cut & metal
    return None


def _contacts(canvas: _Canvas) -> list[np.ndarray]:
    """Masks of the layout's contacts (via islands)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        (canvas.layout.material == VIA).astype(np.uint8), connectivity=8)
    return [labels == i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] > 0]


def _missing_contact(canvas: _Canvas, rng: np.random.Generator, size_px: float,
                     free: np.ndarray) -> np.ndarray | None:
    choices = [c for c in _contacts(canvas) if (c & ~free).sum() == 0]
    if not choices:
        return None
    return choices[int(rng.integers(len(choices)))]


def _extra_contact(canvas: _Canvas, rng: np.random.Generator, size_px: float,
                   free: np.ndarray) -> np.ndarray | None:
    """A contact where the design has none: a via of the size of the layout's contacts, on
    open oxide near them (none in a layout without contacts)."""
    contacts = _contacts(canvas)
    if not contacts:
        return None
    side = max(1, round(math.sqrt(np.median([c.sum() for c in contacts]))))
    vias = canvas.layout.material == VIA
    near = _distance(vias) <= 6 * side
    spot = _pick(rng, free & near & (_distance(canvas.top) > side + 3))
    if spot is None:
        return None
    y0, x0 = spot[0] - side // 2, spot[1] - side // 2
    return _box(canvas.layout.shape, y0, x0, y0 + side, x0 + side)


def _edge_excursion(canvas: _Canvas, rng: np.random.Generator, size_px: float,
                    free: np.ndarray) -> np.ndarray | None:
    """A bump out of (extra) or a bite into (missing) a straight feature edge, `size` along
    the edge and at most half the neighbouring gap or line deep."""
    top = canvas.top
    r = size_px / 2
    edges = top ^ cv2.erode(top.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    spot = _pick(rng, edges & free)
    if spot is None:
        return None
    inside = cv2.distanceTransform(top.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((~top).astype(np.uint8), cv2.DIST_L2, 5)
    disk = _disk(top.shape, spot[0], spot[1], r, r)
    if rng.random() < 0.5:
        limit = outside <= max(1.0, min(r, 0.5 * _local_max(outside, spot, size_px)))
        return disk & ~top & limit
    limit = inside <= max(1.0, min(r, 0.5 * _local_max(inside, spot, size_px)))
    return disk & top & limit


def _local_max(distance: np.ndarray, spot: tuple[int, int], size_px: float) -> float:
    """Half the width of the gap or line beside `spot` (the largest distance nearby)."""
    y, x = spot
    reach = int(size_px + 40)
    return float(distance[max(0, y - reach):y + reach, max(0, x - reach):x + reach].max())


_INJECT = {"particle": _particle, "bridge": _bridge, "open": _open,
           "missing_contact": _missing_contact, "extra_contact": _extra_contact,
           "edge_excursion": _edge_excursion}


def inject_defects(layout: Layout, rng: np.random.Generator, params: DefectParams | None = None,
                   layout_params: LayoutParams | None = None,
                   region: tuple[int, int, int, int] | None = None,
                   ) -> tuple[Layout, list[InjectedDefect]]:
    """A copy of `layout` with defects, and their truth records. `region` (x0, y0, x1, y1)
    limits where they go (default: the whole layout). A defect for which no place is found is
    left out (the truth list only holds those injected)."""
    p = params or DefectParams()
    unknown = set(p.kinds) - set(DEFECT_KINDS)
    if unknown or not p.kinds:
        raise ValueError(f"defect kinds must be among {', '.join(DEFECT_KINDS)}")
    canvas = _Canvas(layout, layout_params or LayoutParams())
    px = layout.pixel_size_nm
    x0, y0, x1, y1 = region or (0, 0, layout.shape[1], layout.shape[0])
    border = math.ceil(p.clearance_nm / px)
    allowed = _box(layout.shape, y0 + border, x0 + border, y1 - border, x1 - border)
    truth: list[InjectedDefect] = []
    for _ in range(p.count):
        kind = p.kinds[int(rng.integers(len(p.kinds)))]
        size_nm = float(math.exp(rng.uniform(math.log(p.min_size_nm), math.log(p.max_size_nm))))
        free = allowed & ~canvas.taken
        mask = _INJECT[kind](canvas, rng, size_nm / px, free)
        if mask is None or not mask.any():
            continue
        changed = _apply(canvas, kind, mask)
        truth.append(_record(len(truth) + 1, kind, size_nm, changed, canvas))
        canvas.taken |= _distance(changed) <= border
    return canvas.layout, truth


def _apply(canvas: _Canvas, kind: str, mask: np.ndarray) -> np.ndarray:
    top = canvas.top
    if kind == "missing_contact" or kind == "open" or (kind == "edge_excursion" and mask[top].any()):
        canvas.remove(mask)
    else:
        canvas.add(mask & ~top, VIA if kind == "extra_contact" else METAL)
    return mask


def _record(index: int, kind: str, size_nm: float, mask: np.ndarray,
            canvas: _Canvas) -> InjectedDefect:
    ys, xs = np.nonzero(mask)
    polarity = "extra" if canvas.top[ys[0], xs[0]] else "missing"
    if kind in ("missing_contact", "extra_contact"):
        size_nm = math.sqrt(mask.sum()) * canvas.layout.pixel_size_nm
    return InjectedDefect(index, kind, round(size_nm, 1), polarity, float(xs.mean()),
                          float(ys.mean()), (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                             int(ys.max()) + 1), int(mask.sum()))


def moved(defect: InjectedDefect, dx: float, dy: float) -> InjectedDefect:
    """The same defect in a frame whose origin is at (dx, dy) pixels (e.g. a crop's); the
    box is rounded to whole pixels."""
    x0, y0, x1, y1 = defect.bbox_px
    return replace(defect, x_px=defect.x_px - dx, y_px=defect.y_px - dy,
                   bbox_px=(round(x0 - dx), round(y0 - dy), round(x1 - dx), round(y1 - dy)))
