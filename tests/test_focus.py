"""Focus-stack fusion (edge/imaging/focus.py) on simulated multilayer z-stacks: sharper than
every plane, layers ordered by the height map, drift registered, no seams where planes meet."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from edge.imaging.focus import FocusSettings, fuse_file, fuse_stack
from edge.imaging.imageio import write_stack, write_tiff16
from ssum.cli import main
from trainer.evaluation.frc import frc_resolution
from trainer.sim.layers import LayerStackParams
from trainer.sim.zstack import StackParams, simulate_stack_scene

SIZE, PX = 224, 10.0


def _stack(seed: int, drift_nm: float = 0.0):
    """(planes, z_nm, drift px, in-focus clean image, true heights) of one multilayer scene, as
    the simulator renders it (`simulate_stack_scene`)."""
    layers = LayerStackParams(min_step_nm=300.0, max_step_nm=700.0)
    scene = simulate_stack_scene(np.random.default_rng(seed), SIZE,
                                 StackParams(planes=6, drift_nm=drift_nm), pixel_size_nm=PX,
                                 layers=layers)
    return scene.planes, scene.z_nm, scene.drift_px, scene.osr_in_focus, scene.height_nm


@pytest.fixture(scope="module")
def scene():
    planes, z_nm, _, truth, heights = _stack(3)
    return planes, z_nm, truth, heights, fuse_stack(planes, z_nm)


def test_the_fused_stack_is_sharper_than_every_plane(scene):
    planes, _, truth, _, fused = scene
    resolution = [frc_resolution(plane, truth, PX) for plane in planes]
    assert frc_resolution(fused.image, truth, PX) < min(resolution), resolution


def test_the_height_map_orders_the_layers(scene):
    _, z_nm, _, heights, fused = scene
    levels = np.unique(heights)
    assert len(levels) == 4  # the substrate and three layers
    found = [np.median(fused.height_nm[heights == level]) for level in levels]
    assert found == sorted(found) and found[0] < found[-1], (levels, found)
    assert set(np.unique(fused.height_nm)) <= {np.float32(z) for z in z_nm}


def test_planes_that_drift_are_registered_to_the_middle_one():
    """To a fraction of the drift, and within 1.5 px (15 nm, a fifth of the resolution) even
    for the planes that see little in focus (a plane that cannot be registered at all stays
    where it is)."""
    planes, z_nm, drift, _, _ = _stack(6, drift_nm=15.0)
    fused = fuse_stack(planes, z_nm)
    reference = fused.reference
    errors, drifts = [], []
    for k, (dx, dy) in enumerate(fused.shifts_px):
        true = (drift[k, 1] - drift[reference, 1], drift[k, 0] - drift[reference, 0])
        errors.append(np.hypot(dx - true[0], dy - true[1]))
        drifts.append(np.hypot(*true))
    assert max(errors) < 1.5 and np.mean(errors) < np.mean(drifts) / 3, (errors, drifts)


def test_where_the_sharp_plane_changes_there_is_no_seam():
    """Two planes, each sharp on one half: the fused image follows the sharp one everywhere,
    across the boundary too, without a step or a band of error there."""
    rng = np.random.default_rng(0)
    sharp = cv2.GaussianBlur(rng.random((128, 128)).astype(np.float32), (0, 0), 1.5)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4.0)
    left, right = sharp.copy(), blurred.copy()
    left[:, 64:], right[:, 64:] = blurred[:, 64:], sharp[:, 64:]
    fused = fuse_stack([left, right], [0.0, 500.0], FocusSettings(register=False))
    error = np.abs(fused.image - sharp)
    band, away = error[8:-8, 56:72].mean(), error[8:-8, 16:48].mean()
    assert band < 3 * away + 0.01 and error[8:-8, 8:-8].max() < 0.1, (band, away)
    assert np.median(fused.height_nm[:, :56]) == 0.0 and np.median(fused.height_nm[:, 72:]) == 500.0


def test_a_stack_file_is_fused_with_its_recorded_or_given_heights(tmp_path, scene):
    planes, z_nm, *_ = scene
    path = write_stack(tmp_path / "stack.tif", planes, z_nm)
    same = np.isclose(fuse_file(path).height_nm, scene[4].height_nm, atol=1.0)
    assert same.mean() > 0.99  # the file holds the planes at 16 bits
    stepped = fuse_file(path, z_step_nm=100.0, z_start_nm=50.0)
    assert set(np.unique(stepped.height_nm)) <= {50.0 + 100.0 * k for k in range(len(planes))}


def test_planes_must_match_their_heights():
    with pytest.raises(Exception, match="one height per plane"):
        fuse_stack([np.zeros((8, 8))], [0.0, 1.0])


def test_ssum_convert_fuses_a_stack_file_or_folder_then_converts(tmp_path, tiny_bundle_source,
                                                               scene):
    planes, z_nm, *_ = scene
    write_stack(tmp_path / "in" / "chip.tif", planes[:3], z_nm[:3])
    for k, image in enumerate(planes[:3]):
        write_tiff16(tmp_path / "in" / "folder" / f"z{k}.tif", image)
    out = tmp_path / "out"
    assert main(["convert", "--bundle", str(tiny_bundle_source), "--out", str(out), "--stack",
                 str(tmp_path / "in" / "chip.tif")]) == 0
    assert main(["convert", "--bundle", str(tiny_bundle_source), "--out", str(out), "--stack",
                 "--z-step", "250", str(tmp_path / "in" / "folder")]) == 0
    for name, heights in (("chip", z_nm[:3]), ("folder", [0.0, 250.0, 500.0])):
        assert tifffile.imread(out / f"{name}.tif").shape == (SIZE, SIZE)
        assert tifffile.imread(out / f"{name}_fused.tif").dtype == np.uint16
        height = tifffile.imread(out / f"{name}_height_nm.tif")
        assert height.dtype == np.float32 and set(np.unique(height)) <= set(np.float32(heights))
    assert main(["convert", "--bundle", str(tiny_bundle_source), "--out", str(out), "--stack",
                 str(tmp_path / "in" / "folder")]) == 1  # a folder records no heights


def test_the_trainers_data_preparation_fuses_stacks(tmp_path, scene):
    from trainer.data import load_pairs

    planes, z_nm, *_ = scene
    write_stack(tmp_path / "osr" / "0000.tif", planes, z_nm)
    write_tiff16(tmp_path / "sem" / "0000.tif", planes[0])
    pairs = load_pairs(tmp_path)
    expected = fuse_file(tmp_path / "osr" / "0000.tif").image
    assert pairs.names == ["0000"] and np.array_equal(pairs.osr[0], expected)
