"""Multilayer chip layouts: patterned layers standing at their own heights over the substrate.

Each layer (bottom to top by default: poly, metal 1, metal 2) is a pattern of the design grid (the
same patterns and smallest-feature guarantee as `generate_layout`) whose top surface lies one
random step (50-1000 nm) above the layer below it; where layers overlap, the upper one is seen.
The total height stays within `max_total_nm` (2 um: the rig's stacked depth of field).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.sim.layout import MATERIALS, OXIDE, DesignGrid, Layout, LayoutParams, pattern_layer


@dataclass(frozen=True)
class LayerStackParams:
    layers: tuple[str, ...] = ("poly", "metal", "metal")  # bottom to top, over the oxide substrate
    min_step_nm: float = 50.0
    max_step_nm: float = 1000.0
    max_total_nm: float = 2000.0

    def __post_init__(self) -> None:
        unknown = [name for name in self.layers if name not in MATERIALS]
        if unknown or not self.layers:
            raise ValueError(f"layers must be materials of {MATERIALS}, got {self.layers}")
        if not 0 < self.min_step_nm <= self.max_step_nm:
            raise ValueError("need 0 < min_step_nm <= max_step_nm")
        if self.min_step_nm * len(self.layers) > self.max_total_nm:
            raise ValueError("max_total_nm is below the smallest steps of all layers")


def layer_steps(rng: np.random.Generator, params: LayerStackParams) -> list[float]:
    """One step per layer, uniform in [min, max] nm, each capped so that the layers above it
    still fit their smallest step under `max_total_nm`."""
    steps: list[float] = []
    for k in range(len(params.layers)):
        room = params.max_total_nm - sum(steps) - params.min_step_nm * (len(params.layers) - k - 1)
        steps.append(float(rng.uniform(params.min_step_nm, min(params.max_step_nm, room))))
    return steps


def generate_multilayer(
    rng: np.random.Generator,
    shape: tuple[int, int],
    pixel_size_nm: float = 10.0,
    params: LayerStackParams | None = None,
    layout: LayoutParams | None = None,
) -> Layout:
    """A layout whose `height_nm` is the top surface of the highest layer at each pixel and
    whose `steps` are the regions at or above each layer's height (for the SEM's edge rims)."""
    p = params or LayerStackParams()
    grid = DesignGrid.of(shape, pixel_size_nm, layout or LayoutParams())
    material = np.full(shape, OXIDE, np.uint8)
    height = np.zeros(shape, np.float32)
    top = 0.0
    for name, step in zip(p.layers, layer_steps(rng, p), strict=True):
        top += step
        drawn = pattern_layer(rng, grid)
        material[drawn] = MATERIALS.index(name)
        height[drawn] = top
    levels = np.unique(height)[1:]
    steps = tuple(height >= level for level in levels)
    return Layout(material, height, float(pixel_size_nm), steps=steps)

