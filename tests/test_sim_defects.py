"""Defect injection in the simulator: every kind, sizes in range, a truth record per defect,
rendered the same in the SEM and the SSUM images; and inspection cases."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.sim.defects import DEFECT_KINDS, DefectParams, inject_defects
from trainer.sim.inspection import make_case
from trainer.sim.layout import generate_layout
from trainer.sim.optics import render_osr_clean
from trainer.sim.sem import render_clean


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_each_kind_changes_the_layout_where_its_truth_says(kind):
    layout = generate_layout(np.random.default_rng(7), (320, 320), 10.0)  # has contacts
    params = DefectParams(count=3, kinds=(kind,), min_size_nm=40, max_size_nm=200,
                          clearance_nm=300)
    defective, truth = inject_defects(layout, np.random.default_rng(3), params)
    assert truth, f"no {kind} could be placed"
    changed = defective.material != layout.material
    covered = np.zeros_like(changed)
    for t in truth:
        x0, y0, x1, y1 = t.bbox_px
        covered[y0:y1, x0:x1] = True
        assert t.kind == kind and t.area_px == changed[y0:y1, x0:x1].sum() > 0
        assert t.polarity == ("extra" if defective.top_mask()[round(t.y_px), round(t.x_px)]
                              or kind in ("particle", "bridge", "extra_contact") else "missing")
        if kind not in ("missing_contact", "extra_contact"):
            assert 40 <= t.size_nm <= 200
    assert not (changed & ~covered).any()
    for render in (render_clean, render_osr_clean):  # both modalities see every defect
        difference = np.abs(render(defective) - render(layout))
        for t in truth:
            x0, y0, x1, y1 = t.bbox_px
            assert difference[y0:y1, x0:x1].max() > 0.02, (render.__name__, t)


def test_cases_are_reproducible_and_keep_defects_inside():
    a, b = make_case(7, size=128), make_case(7, size=128)
    assert np.array_equal(a.inspected["sem"], b.inspected["sem"])
    assert not np.array_equal(a.inspected["osr"], a.reference["osr"])
    assert a.truth and all(0 <= t.x_px < 128 and 0 <= t.y_px < 128 for t in a.truth)
    assert a.layout_mask is not None and a.layout_mask.shape == (128, 128)
