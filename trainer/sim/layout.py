"""Manhattan chip layouts as label and height maps, with a guaranteed smallest feature."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.imaging.morphology import disk

MATERIALS: tuple[str, ...] = ("oxide", "metal", "via", "poly")
OXIDE, METAL, VIA, POLY = range(4)
PATTERNS: tuple[str, ...] = ("lines", "vias", "routing", "shapes")


@dataclass(frozen=True)
class LayoutParams:
    min_feature_nm: float = 73.0
    corner_radius_nm: float = 40.0  # capped at half the design-grid cell
    max_width_nm: float = 400.0
    metal_thickness_nm: float = 120.0
    second_layer: bool = True
    second_layer_depth_nm: float = 400.0
    block_size_nm: float = 1800.0  # each block of this size gets one pattern type
    # "lines": drawn shapes are metal on oxide; "trenches": drawn shapes are gaps cut into a metal
    # field (the tone of the real SEM images); "random": either, with equal chance
    tone: str = "random"


@dataclass
class Layout:
    """A chip region: `material` indexes MATERIALS, `height_nm` is the z of the surface seen there
    (top of metal/via, 0 for oxide, minus the depth for the buried second layer).
    `second_layer` is the whole buried layer, including where metal hides it; `steps` is set
    by multilayer layouts (trainer/sim/layers.py)."""

    material: np.ndarray
    height_nm: np.ndarray
    pixel_size_nm: float
    second_layer: np.ndarray | None = None
    materials: tuple[str, ...] = MATERIALS
    steps: tuple[np.ndarray, ...] | None = None  # raised regions, one mask per surface step

    @property
    def shape(self) -> tuple[int, int]:
        return self.material.shape  # type: ignore[return-value]

    def raised_masks(self) -> tuple[np.ndarray, ...]:
        """The regions raised above their surroundings, one per height step: each has a bright
        SEM rim inside its edges and a shadow at its foot (default: the top layer alone)."""
        return self.steps if self.steps is not None else (self.top_mask(),)

    def mask(self, name: str) -> np.ndarray:
        return self.material == self.materials.index(name)

    def top_mask(self) -> np.ndarray:
        """Pixels covered by the raised top layer (metal or via)."""
        return (self.material == METAL) | (self.material == VIA)


def feature_px(size_nm: float, pixel_size_nm: float) -> int:
    """Smallest whole number of pixels at least `size_nm` wide."""
    return max(1, math.ceil(size_nm / pixel_size_nm - 1e-9))


def grid_cell_px(min_feature_nm: float, pixel_size_nm: float) -> int:
    """Design-grid cell in pixels: odd (so a disk fits centred) and at least the smallest feature."""
    n = feature_px(min_feature_nm, pixel_size_nm)
    return n + 1 - n % 2


def round_corners(mask: np.ndarray, diameter_px: int) -> np.ndarray:
    """Round convex corners (opening) and concave corners (closing) with a disk."""
    kernel = disk(diameter_px // 2)  # an even diameter rounded up: the kernel has a true centre
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(opened, cv2.MORPH_CLOSE, kernel).astype(bool)


def remove_pinches(cells: np.ndarray) -> np.ndarray:
    """Fill diagonal-only contacts between cells (a 2x2 checkerboard) so no gap or feature is
    narrower than one cell in any direction."""
    cells = cells.astype(bool).copy()
    while True:
        a, b, c, d = cells[:-1, :-1], cells[:-1, 1:], cells[1:, :-1], cells[1:, 1:]
        pinch = (a & d & ~b & ~c) | (b & c & ~a & ~d)
        if not pinch.any():
            return cells
        ys, xs = np.nonzero(pinch)
        cells[ys, xs] = True
        cells[ys + 1, xs + 1] = True
        cells[ys, xs + 1] = True


def cells_to_pixels(cells: np.ndarray, cell_px: int, shape: tuple[int, int]) -> np.ndarray:
    return np.kron(cells.astype(np.uint8), np.ones((cell_px, cell_px), np.uint8))[: shape[0], : shape[1]]


def _jittered_edges(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    edges = np.linspace(0, size, n + 1).round().astype(int)
    wiggle = size // (4 * n)
    edges[1:-1] = np.clip(edges[1:-1] + rng.integers(-wiggle, wiggle + 1, n - 1), 0, size)
    return edges


def _blocks(rng: np.random.Generator, h: int, w: int, n: int) -> list[tuple[int, int, int, int]]:
    """Split the canvas into an n x n grid of jittered rectangles (y0, x0, y1, x1)."""
    ys, xs = _jittered_edges(rng, h, n), _jittered_edges(rng, w, n)
    return [(ys[i], xs[j], ys[i + 1], xs[j + 1]) for i in range(n) for j in range(n)]


def _rect(canvas: np.ndarray, y0: int, x0: int, y1: int, x1: int) -> None:
    canvas[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 1


def _draw_lines(rng, canvas, box, wmin, wmax) -> None:
    y0, x0, y1, x1 = box
    width = int(rng.integers(wmin, wmax + 1))
    space = int(rng.integers(wmin, 2 * wmax + 1))
    vertical = rng.random() < 0.5
    start, stop = (x0, x1) if vertical else (y0, y1)
    for pos in range(start + int(rng.integers(0, width + space)), stop, width + space):
        if vertical:
            _rect(canvas, y0, pos, y1, pos + width)
        else:
            _rect(canvas, pos, x0, pos + width, x1)


def _draw_vias(rng, canvas, box, wmin, wmax) -> None:
    y0, x0, y1, x1 = box
    size = int(rng.integers(wmin, max(wmin + 1, wmax // 2) + 1))
    pitch = size + int(rng.integers(wmin, 2 * size + wmin + 1))
    for y in range(y0 + size // 2, y1 - size, pitch):
        for x in range(x0 + size // 2, x1 - size, pitch):
            _rect(canvas, y, x, y + size, x + size)


def _draw_routing(rng, canvas, box, wmin, wmax) -> None:
    """Random Manhattan wires: alternating horizontal and vertical segments (L and T joints)."""
    y0, x0, y1, x1 = box
    area = (y1 - y0) * (x1 - x0)
    for _ in range(max(1, area // (60 * wmax * wmin))):
        width = int(rng.integers(wmin, wmax + 1))
        y, x = int(rng.integers(y0, y1)), int(rng.integers(x0, x1))
        horizontal = rng.random() < 0.5
        for _ in range(int(rng.integers(2, 6))):
            length = int(rng.integers(4 * wmin, max(5 * wmin, (x1 - x0) // 2)))
            step = length if rng.random() < 0.5 else -length
            if horizontal:
                nx = int(np.clip(x + step, x0, x1))
                _rect(canvas, y, min(x, nx), y + width, max(x, nx) + width)
                x = nx
            else:
                ny = int(np.clip(y + step, y0, y1))
                _rect(canvas, min(y, ny), x, max(y, ny) + width, x + width)
                y = ny
            horizontal = not horizontal


def _draw_shapes(rng, canvas, box, wmin, wmax) -> None:
    """L and T shapes scattered in the block."""
    y0, x0, y1, x1 = box
    for _ in range(int(rng.integers(2, 6))):
        width = int(rng.integers(wmin, wmax + 1))
        arm = int(rng.integers(4 * wmin, max(5 * wmin, min(y1 - y0, x1 - x0) // 2)))
        y, x = int(rng.integers(y0, max(y0 + 1, y1 - arm))), int(rng.integers(x0, max(x0 + 1, x1 - arm)))
        _rect(canvas, y, x, y + width, x + arm)
        if rng.random() < 0.5:
            _rect(canvas, y, x, y + arm, x + width)
        else:
            mid = x + arm // 2 - width // 2
            _rect(canvas, y, mid, y + arm, mid + width)


_DRAW = {"lines": _draw_lines, "vias": _draw_vias, "routing": _draw_routing, "shapes": _draw_shapes}


def _top_layer(rng, shape, wmin, wmax, n_blocks) -> tuple[np.ndarray, np.ndarray]:
    metal = np.zeros(shape, np.uint8)
    via = np.zeros(shape, np.uint8)
    for box in _blocks(rng, shape[0], shape[1], n_blocks):
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        _DRAW[pattern](rng, via if pattern == "vias" else metal, box, wmin, wmax)
    return metal.astype(bool), via.astype(bool)


def _trench_tone(rng: np.random.Generator, tone: str) -> bool:
    if tone not in ("lines", "trenches", "random"):
        raise ValueError(f"tone must be lines, trenches or random, not {tone!r}")
    return tone == "trenches" or (tone == "random" and bool(rng.random() < 0.5))


@dataclass(frozen=True)
class DesignGrid:
    """The design grid of a canvas: `cell` px per cell (the smallest feature), `cells` its
    shape, `wmax` the widest drawn feature in cells, `n_blocks` pattern blocks per side."""

    shape: tuple[int, int]
    cell: int
    rounding: int
    cells: tuple[int, int]
    wmax: int
    n_blocks: int

    @classmethod
    def of(cls, shape: tuple[int, int], pixel_size_nm: float, p: LayoutParams) -> DesignGrid:
        cell = grid_cell_px(p.min_feature_nm, pixel_size_nm)
        return cls(shape, cell, min(cell, feature_px(2 * p.corner_radius_nm, pixel_size_nm)),
                   (-(-shape[0] // cell), -(-shape[1] // cell)),
                   max(2, int(p.max_width_nm / (cell * pixel_size_nm))),
                   max(1, round(max(shape) * pixel_size_nm / p.block_size_nm)))

    def pixels(self, cells: np.ndarray) -> np.ndarray:
        """Cells drawn on the pixel canvas with rounded corners."""
        return round_corners(cells_to_pixels(cells, self.cell, self.shape), self.rounding)


def _tiled(unit: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    reps = (-(-shape[0] // unit.shape[0]), -(-shape[1] // unit.shape[1]))
    return np.tile(unit, reps)[: shape[0], : shape[1]]


def generate_layout(
    rng: np.random.Generator,
    shape: tuple[int, int],
    pixel_size_nm: float = 10.0,
    params: LayoutParams | None = None,
    repeat_cells: tuple[int, int] | None = None,
) -> Layout:
    """Draw a random layout on a design grid whose cell is the smallest feature (odd pixel count,
    at least `min_feature_nm`), so every feature and every gap is at least one cell wide; then
    round the corners. `repeat_cells` (x, y): an array, one unit of that many grid cells drawn
    and repeated over the canvas (pitch: `repeat_pitch_px`; within a rounding disk of the
    canvas's border the rounding breaks the repeat)."""
    p = params or LayoutParams()
    grid = DesignGrid.of(shape, pixel_size_nm, p)
    unit = grid.cells if repeat_cells is None else (repeat_cells[1], repeat_cells[0])
    blocks = grid.n_blocks if repeat_cells is None else 1
    metal, via = (_tiled(a, grid.cells) for a in _top_layer(rng, unit, 1, grid.wmax, blocks))
    top_cells = remove_pinches(metal | via)
    if _trench_tone(rng, p.tone):
        top_cells, via = ~top_cells, np.zeros_like(via)
    top = grid.pixels(top_cells)
    via_px = cells_to_pixels(via & ~metal, grid.cell, shape).astype(bool)
    material = np.full(shape, OXIDE, np.uint8)
    height = np.zeros(shape, np.float32)
    second = np.zeros(shape, bool)
    if p.second_layer:
        poly = np.zeros(unit, np.uint8)
        _draw_lines(rng, poly, (0, 0, poly.shape[0], poly.shape[1]), 2, 2 * grid.wmax)
        poly = _tiled(poly, grid.cells)
        second = grid.pixels(remove_pinches(poly))
        material[second] = POLY
        height[second] = -p.second_layer_depth_nm
    material[top] = METAL
    material[top & via_px] = VIA
    height[top] = p.metal_thickness_nm
    return Layout(material, height, float(pixel_size_nm), second_layer=second)


def repeat_pitch_px(repeat_cells: tuple[int, int], pixel_size_nm: float = 10.0,
                    params: LayoutParams | None = None) -> tuple[int, int]:
    """The pitch (x, y) in pixels of an array drawn with `repeat_cells`."""
    cell = grid_cell_px((params or LayoutParams()).min_feature_nm, pixel_size_nm)
    return repeat_cells[0] * cell, repeat_cells[1] * cell


def pattern_layer(rng: np.random.Generator, grid: DesignGrid) -> np.ndarray:
    """One patterned layer on the pixel canvas: each block filled with one of PATTERNS."""
    metal, via = _top_layer(rng, grid.cells, 1, grid.wmax, grid.n_blocks)
    return grid.pixels(remove_pinches(metal | via))
