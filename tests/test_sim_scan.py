import cv2
import numpy as np
import pytest
import tifffile

from edge.imaging.imageio import to_float01
from edge.tools.scanfile import read_scan
from trainer.sim.optics import field_falloff
from trainer.sim.scan import mosaic_shape, simulate_scan

TILE, OVERLAP, PX = 192, 48, 10.0


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "s"
    return read_scan(simulate_scan(path, rows=2, cols=2, tile=TILE, overlap=OVERLAP, seed=4,
                                   pixel_size_nm=PX, stage_error_nm=30.0))


def test_reported_positions_follow_the_grid_with_the_given_overlap(scan):
    assert len(scan.tiles) == 4 and scan.tile_width == TILE and scan.dtype == "uint16"
    assert scan.meta["overlap_px"] == OVERLAP and scan.meta["rows"] == scan.meta["cols"] == 2
    step_nm = (TILE - OVERLAP) * PX
    for tile in scan.tiles:
        assert (tile.x_nm, tile.y_nm) == (tile.col * step_nm, tile.row * step_nm)
        assert scan.load_tile(tile).shape == (TILE, TILE)


def test_stage_errors_are_recorded(scan):
    truth = scan.meta["simulation"]["tiles_true"]
    errors = np.array([[t["error_x_nm"], t["error_y_nm"]] for t in truth])
    assert errors.shape == (4, 2) and np.all(errors != 0) and np.abs(errors).max() < 6 * 30.0
    for t, tile in zip(truth, scan.tiles):
        assert t["x_nm_true"] == pytest.approx(tile.x_nm + t["error_x_nm"])


def _residual_rms(tile, mosaic, x_px, y_px, falloff):
    centre = (x_px + (TILE - 1) / 2.0, y_px + (TILE - 1) / 2.0)
    model = cv2.getRectSubPix(mosaic, (TILE, TILE), centre) * falloff
    inner = np.s_[8:-8, 8:-8]
    return float(np.sqrt(np.mean((tile[inner] - model[inner]) ** 2))), float(model.mean())


def test_each_tile_is_the_mosaic_seen_at_its_true_position(scan):
    """A tile matches the clean ground-truth mosaic (times the field falloff) at its true stage
    position up to camera noise, and clearly worse at the reported position."""
    sim = scan.meta["simulation"]
    optics = sim["params"]["optics"]
    mosaic = to_float01(tifffile.imread(scan.ground_truth["osr_mosaic_clean"]))
    falloff = field_falloff((TILE, TILE), optics["falloff"], tuple(sim["field_centre"]))
    for tile, truth in zip(scan.tiles, sim["tiles_true"]):
        pixels = to_float01(scan.load_tile(tile))
        at_true, level = _residual_rms(pixels, mosaic, truth["x_nm_true"] / PX, truth["y_nm_true"] / PX, falloff)
        at_reported, _ = _residual_rms(pixels, mosaic, tile.x_nm / PX, tile.y_nm / PX, falloff)
        shot_noise = np.sqrt(level / optics["full_well_e"])
        assert at_true < 1.5 * shot_noise
        assert at_true < at_reported


def test_ground_truth_mosaics_cover_the_scan(scan):
    assert set(scan.ground_truth) == {"sem_mosaic", "osr_mosaic_clean"}
    sem = tifffile.imread(scan.ground_truth["sem_mosaic"])
    assert sem.shape == mosaic_shape(2, 2, TILE, OVERLAP) == (2 * TILE - OVERLAP,) * 2


def test_same_seed_same_scan(tmp_path):
    a = simulate_scan(tmp_path / "a", rows=1, cols=2, tile=64, overlap=16, seed=1)
    b = simulate_scan(tmp_path / "b", rows=1, cols=2, tile=64, overlap=16, seed=1)
    ra, rb = read_scan(a), read_scan(b)
    for ta, tb in zip(ra.tiles, rb.tiles):
        assert np.array_equal(ra.load_tile(ta), rb.load_tile(tb))
    assert ra.meta["simulation"] == rb.meta["simulation"]
