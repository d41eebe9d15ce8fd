import cv2
import numpy as np
import pytest

from edge.imaging.morphology import disk
from trainer.sim.layout import (
    MATERIALS,
    LayoutParams,
    feature_px,
    generate_layout,
    grid_cell_px,
    repeat_pitch_px,
)


def _layout(seed, **kw):
    return generate_layout(np.random.default_rng(seed), (256, 256), 10.0, LayoutParams(**kw))


def test_same_seed_same_layout_and_different_seed_differs():
    a, b, c = _layout(3), _layout(3), _layout(4)
    assert np.array_equal(a.material, b.material) and np.array_equal(a.height_nm, b.height_nm)
    assert not np.array_equal(a.material, c.material)


@pytest.mark.parametrize("pixel_size_nm", [10.0, 7.3])
@pytest.mark.parametrize("seed", range(6))
def test_every_feature_and_gap_holds_a_73nm_disk(seed, pixel_size_nm):
    layout = generate_layout(np.random.default_rng(seed), (256, 256), pixel_size_nm)
    kernel = disk(feature_px(73.0, pixel_size_nm) // 2)
    assert (kernel.shape[0] - 0) * pixel_size_nm >= 73.0
    for mask in (layout.top_mask(), layout.second_layer):
        m = mask.astype(np.uint8)
        # opening removes every feature narrower than the disk, closing every narrower gap
        assert np.array_equal(cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel), m)
        assert np.array_equal(cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel), m)


def test_grid_cell_is_odd_and_not_below_the_smallest_feature():
    for px in (5.0, 6.1, 7.3, 10.0, 12.5):
        cell = grid_cell_px(73.0, px)
        assert cell % 2 == 1 and cell * px >= 73.0


def test_materials_and_heights_are_consistent():
    layout = _layout(1, tone="lines", second_layer_depth_nm=350.0, metal_thickness_nm=100.0)
    assert layout.material.dtype == np.uint8 and layout.material.max() < len(MATERIALS)
    assert np.all(layout.height_nm[layout.top_mask()] == 100.0)
    assert np.all(layout.height_nm[layout.mask("poly")] == -350.0)
    assert np.all(layout.height_nm[layout.mask("oxide")] == 0.0)
    assert layout.top_mask().any() and layout.mask("oxide").any()


def test_trench_tone_covers_more_than_line_tone():
    lines = np.mean([_layout(s, tone="lines").top_mask().mean() for s in range(4)])
    trenches = np.mean([_layout(s, tone="trenches").top_mask().mean() for s in range(4)])
    assert trenches > 0.5 > lines


def test_without_second_layer_there_is_no_poly():
    layout = _layout(2, second_layer=False)
    assert not layout.mask("poly").any() and not layout.second_layer.any()


def test_an_array_repeats_its_unit_at_its_pitch_and_keeps_the_design_rules():
    layout = generate_layout(np.random.default_rng(5), (300, 300), 10.0, repeat_cells=(11, 13))
    px, py = repeat_pitch_px((11, 13))
    assert (px, py) == (99, 117)
    for a in (layout.material, layout.height_nm):  # the corners' rounding stops at the border
        a = a[10:-10, 10:-10]
        assert np.array_equal(a[:, px:], a[:, :-px]) and np.array_equal(a[py:], a[:-py])
    assert not np.array_equal(layout.material[:, 45:], layout.material[:, :-45])
    kernel = disk(feature_px(73.0, 10.0) // 2)
    m = layout.top_mask().astype(np.uint8)
    assert np.array_equal(cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel), m)
    assert np.array_equal(cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel), m)
