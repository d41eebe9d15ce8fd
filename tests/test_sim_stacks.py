"""The simulator's multilayer layouts and z-stacks: heights per layer, defocus growing with the
distance from each plane's focus, drift between planes, stacked scan recordings."""

from __future__ import annotations

import numpy as np
import pytest

from edge.imaging.imageio import to_float01
from edge.tools.scanfile import read_scan
from trainer.sim.layers import LayerStackParams, generate_multilayer, layer_steps
from trainer.sim.optics import OpticsParams
from trainer.sim.scan import simulate_scan
from trainer.sim.sem import SemParams, yield_map
from trainer.sim.zstack import StackParams, focus_heights, render_planes


def _layout(seed: int = 2, size: int = 160):
    return generate_multilayer(np.random.default_rng(seed), (size, size), 10.0)


def test_layers_stand_one_step_of_50_to_1000_nm_above_each_other_within_2_um():
    for seed in range(20):
        steps = layer_steps(np.random.default_rng(seed), LayerStackParams())
        assert len(steps) == 3 and all(50.0 <= s <= 1000.0 for s in steps)
        assert sum(steps) <= 2000.0
    layout = _layout()
    levels = np.unique(layout.height_nm)
    assert levels[0] == 0.0 and len(levels) == 4
    assert len(layout.raised_masks()) == 3
    for level, raised in zip(levels[1:], layout.raised_masks(), strict=True):
        assert np.array_equal(raised, layout.height_nm >= level)


def test_the_sem_sees_a_rim_at_every_step():
    layout = _layout()
    yields = yield_map(layout, SemParams())
    base = np.array([SemParams().material_yield[m] for m in layout.materials])[layout.material]
    for raised in layout.raised_masks():
        edge = raised & ~np.roll(raised, 1, axis=1)  # the first pixel inside a raised edge
        assert (yields - base)[edge].mean() > 0.5 * SemParams().edge_gain


def test_each_layer_is_sharpest_in_the_plane_focused_at_its_height():
    layout = _layout(size=192)
    optics = OpticsParams()
    z_nm = focus_heights(layout.height_nm, StackParams(planes=5))
    assert z_nm[0] == 0.0 and z_nm[-1] == pytest.approx(float(layout.height_nm.max()))
    planes = render_planes(layout, z_nm, optics)
    for level in np.unique(layout.height_nm)[1:]:
        raised = layout.height_nm == level
        border = raised ^ np.roll(raised, 1, axis=1)
        sharpness = [np.abs(np.diff(p, axis=1, prepend=p[:, :1]))[border].mean() for p in planes]
        nearest = int(np.argmin([abs(z - level) for z in z_nm]))
        assert int(np.argmax(sharpness)) == nearest, (level, z_nm, sharpness)
        far = int(np.argmax([abs(z - level) for z in z_nm]))
        assert sharpness[far] < sharpness[nearest]


def test_a_stacked_scan_records_its_planes_with_heights_and_drift(tmp_path):
    path = simulate_scan(tmp_path / "s", rows=1, cols=2, tile=64, overlap=8, seed=1, planes=4,
                         multilayer=True)
    scan = read_scan(path)
    assert len(scan.tiles) == 8 and [t.seq for t in scan.tiles] == list(range(8))
    first = scan.tiles[:4]
    assert {(t.row, t.col, t.stack_size) for t in first} == {(0, 0, 4)}
    assert [t.z_nm for t in first] == scan.meta["simulation"]["z_nm"]
    assert first[0].file == "tiles/r000_c000_p00.tif" and first[3].file.endswith("_p03.tif")
    assert scan.header(first[1])["stack_size"] == 4 and "z_nm" in scan.header(first[1])
    truth = scan.meta["simulation"]["tiles_true"]
    assert truth[0]["drift_x_nm"] == 0.0 and any(t["drift_x_nm"] != 0.0 for t in truth[1:4])
    assert set(scan.ground_truth) == {"sem_mosaic", "osr_mosaic_clean", "height_nm"}
    planes = [to_float01(scan.load_tile(t)) for t in first]
    assert not np.allclose(planes[0], planes[-1], atol=0.02)
