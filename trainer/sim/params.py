"""Every parameter of a simulated OSR/SEM pair, grouped by what it describes, and overrides by
field name. The defaults are the narrow domain (the shipped model's training data); the
randomized domain (trainer/sim/domain.py) draws other values per pair."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edge.errors import UserError
from trainer.sim.layout import LayoutParams
from trainer.sim.optics import OpticsParams
from trainer.sim.sem import SemParams


@dataclass(frozen=True)
class MisalignParams:
    max_shift_px: float = 2.0  # uniform in [-max, max] per axis, in output pixels
    max_rotation_deg: float = 0.5
    max_scale: float = 0.01  # scale drawn uniformly in [1 - max, 1 + max]
    max_field_offset: float = 0.2  # microsphere field centre offset, fraction of the half frame


@dataclass(frozen=True)
class SamplingParams:
    # the microscope's pixel size: the pair is rendered at it, then resampled to the output
    # pixel size (None: rendered at the output pixel size)
    native_pixel_nm: float | None = None


@dataclass(frozen=True)
class SimParams:
    layout: LayoutParams = field(default_factory=LayoutParams)
    sem: SemParams = field(default_factory=SemParams)
    optics: OpticsParams = field(default_factory=OpticsParams)
    misalign: MisalignParams = field(default_factory=MisalignParams)
    sampling: SamplingParams = field(default_factory=SamplingParams)


def apply_overrides(params: SimParams, overrides: dict[str, Any]) -> SimParams:
    """Replace fields by name (e.g. resolution_nm=100, tone="lines") in whichever group has them."""
    groups = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    for key, value in overrides.items():
        owner = [g for g, obj in groups.items() if key in {f.name for f in dataclasses.fields(obj)}]
        if not owner:
            raise UserError(f"unknown simulation parameter {key!r}")
        groups[owner[0]] = dataclasses.replace(groups[owner[0]], **{key: value})
    return SimParams(**groups)
