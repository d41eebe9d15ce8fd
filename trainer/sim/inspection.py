"""Inspection cases: one chip region imaged twice, a defect-free reference die and an
inspected die with injected defects, each as the SEM and as the SSUM microscope see it, with
independent noise and stage positions (what an inspection compares)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trainer.sim.defects import DefectParams, InjectedDefect, inject_defects, moved
from trainer.sim.layout import Layout, generate_layout, repeat_pitch_px
from trainer.sim.optics import capture, render_osr_clean
from trainer.sim.pairs import SimParams, field_centre
from trainer.sim.scan import cut_window
from trainer.sim.sem import add_sem_noise, render_clean

MARGIN_PX = 16
MODALITIES = ("osr", "sem")
ARRAY_UNIT_CELLS = (10, 18)  # an array's unit, in design-grid cells per axis (0.9-1.6 um)


@dataclass
class InspectionCase:
    """`inspected[m]` and `reference[m]` for each modality m of MODALITIES (float [0, 1]);
    `truth` in the inspected images' pixels; `layout_mask` the defect-free pattern (metal or
    via) in the inspected images' frame, for die-to-database comparison; `pitch_px` (x, y) the
    repeat of an array case (cell-to-cell comparison), None otherwise."""

    seed: int
    pixel_size_nm: float
    inspected: dict[str, np.ndarray] = field(default_factory=dict)
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    truth: list[InjectedDefect] = field(default_factory=list)
    layout_mask: np.ndarray | None = None
    pitch_px: tuple[float, float] | None = None


def _views(layout: Layout, params: SimParams) -> dict[str, np.ndarray]:
    return {"osr": render_osr_clean(layout, params.optics), "sem": render_clean(layout, params.sem)}


def _image(modality: str, clean: np.ndarray, rng: np.random.Generator, params: SimParams,
           centre: tuple[float, float]) -> np.ndarray:
    if modality == "osr":
        return capture(clean, rng, params.optics, centre)
    return np.clip(add_sem_noise(clean, rng, params.sem), 0, 1).astype(np.float32)


def make_case(seed: int, size: int = 512, pixel_size_nm: float = 10.0,
              defects: DefectParams | None = None, stage_error_px: float = 2.0,
              array: bool = False) -> InspectionCase:
    """One case; the same seed gives the same images. `array`: the layout is one unit (of
    ARRAY_UNIT_CELLS grid cells each way, drawn per seed) repeated over the die."""
    params = SimParams()
    layout_rng, defect_rng, stage_rng, noise_rng, unit_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, 15]).spawn(5))
    full = size + 2 * MARGIN_PX
    lo, hi = ARRAY_UNIT_CELLS
    unit = (int(unit_rng.integers(lo, hi + 1)), int(unit_rng.integers(lo, hi + 1)))
    clean = generate_layout(layout_rng, (full, full), pixel_size_nm, params.layout,
                            unit if array else None)
    region = (MARGIN_PX, MARGIN_PX, MARGIN_PX + size, MARGIN_PX + size)
    defective, truth = inject_defects(clean, defect_rng, defects, params.layout, region)
    pitch = repeat_pitch_px(unit, pixel_size_nm, params.layout)
    case = InspectionCase(seed, pixel_size_nm,
                          pitch_px=(float(pitch[0]), float(pitch[1])) if array else None)
    views = {"reference": _views(clean, params), "inspected": _views(defective, params)}
    offsets = {}
    for role in ("reference", "inspected"):
        offset = np.clip(stage_rng.normal(0, stage_error_px, 2), -MARGIN_PX / 2, MARGIN_PX / 2)
        top_left = (MARGIN_PX + float(offset[0]), MARGIN_PX + float(offset[1]))
        offsets[role] = top_left
        centre = field_centre(stage_rng, params.misalign.max_field_offset)
        for modality in MODALITIES:
            window = cut_window(views[role][modality], top_left, size)
            getattr(case, role)[modality] = _image(modality, window, noise_rng, params, centre)
    oy, ox = offsets["inspected"]
    case.truth = [moved(d, ox, oy) for d in truth]
    top = clean.top_mask().astype(np.float32)
    case.layout_mask = cut_window(top, offsets["inspected"], size) > 0.5
    return case
