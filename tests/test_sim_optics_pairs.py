import json
import warnings

import cv2
import numpy as np
import pytest
import tifffile

from edge.errors import UserError
from edge.imaging.imageio import read_image
from trainer.sim.layout import METAL, POLY, Layout, generate_layout
from trainer.sim.optics import OpticsParams, degrade_sem_to_osr, optical_psf, render_osr_clean
from trainer.sim.pairs import make_pair, write_pairs
from trainer.sim.sem import render_clean
from trainer.sim.stats import radial_power_spectrum


def test_make_pair_is_deterministic_and_seed_dependent():
    osr1, sem1, meta1 = make_pair(5, size=128)
    osr2, sem2, meta2 = make_pair(5, size=128)
    osr3, sem3, _ = make_pair(6, size=128)
    assert np.array_equal(osr1, osr2) and np.array_equal(sem1, sem2) and meta1 == meta2
    assert not np.array_equal(sem1, sem3) and not np.array_equal(osr1, osr3)
    for image in (osr1, sem1):
        assert image.shape == (128, 128) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0


def test_meta_records_every_parameter_and_is_json():
    _, _, meta = make_pair(1, size=64, resolution_nm=100.0, tone="lines")
    assert meta["params"]["optics"]["resolution_nm"] == 100.0
    assert meta["params"]["layout"]["tone"] == "lines"
    assert {"sem", "misalign"} <= meta["params"].keys()
    json.dumps(meta)


def test_unknown_override_is_a_user_error():
    with pytest.raises(UserError, match="no_such_knob"):
        make_pair(0, size=64, no_such_knob=1)


def _high_frequency_fraction(image, f_min):
    freqs, power = radial_power_spectrum(image, bins=64)
    return power[freqs > f_min].sum() / power.sum()


def test_osr_has_no_detail_beyond_the_optical_cutoff_while_sem_has():
    layout = generate_layout(np.random.default_rng(0), (256, 256), 10.0)
    params = OpticsParams()
    cutoff = params.cutoff_per_nm * 10.0  # cycles per pixel
    osr = render_osr_clean(layout, params)
    sem = render_clean(layout)
    # the incoherent OTF is zero beyond 2 NA / lambda: only window leakage remains there
    assert _high_frequency_fraction(osr, 1.2 * cutoff) < 1e-3 * _high_frequency_fraction(sem, 1.2 * cutoff)


def test_a_featureless_field_renders_flat_and_without_warnings():
    material = np.full((64, 64), POLY, np.uint8)
    layout = Layout(material, np.zeros((64, 64), np.float32), 10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sem = render_clean(layout)
    assert np.ptp(sem) < 1e-6


def test_psf_is_normalised_symmetric_and_widens_with_worse_resolution():
    sharp = optical_psf(10.0)
    wide = optical_psf(10.0, OpticsParams(resolution_nm=160.0))
    assert sharp.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(sharp, sharp.T, atol=1e-7) and np.allclose(sharp, sharp[::-1], atol=1e-7)

    def second_moment(psf):
        y, x = np.indices(psf.shape) - psf.shape[0] // 2
        return float((psf * (x**2 + y**2)).sum())

    assert second_moment(wide) > 2 * second_moment(sharp)
    assert optical_psf(10.0, defocus_nm=500.0).max() < sharp.max()


def _edge_sharpness(profile):
    """Steepest slope across an edge divided by the height of the step."""
    return np.abs(np.diff(profile)).max() / (profile.max() - profile.min())


def test_deeper_layer_is_blurred_more():
    material = np.zeros((32, 160), np.uint8)
    height = np.zeros((32, 160), np.float32)
    material[:, 20:60], height[:, 20:60] = METAL, 120.0
    material[:, 100:140], height[:, 100:140] = POLY, -400.0
    image = render_osr_clean(Layout(material, height, 10.0))
    profile = image[16].astype(np.float64)
    assert _edge_sharpness(profile[80:120]) < 0.7 * _edge_sharpness(profile[0:40])


def test_misregistration_in_meta_is_the_applied_shift():
    kw = {"size": 256, "max_rotation_deg": 0.0, "max_scale": 0.0, "max_shift_px": 3.0}
    aligned, _, _ = make_pair(11, misalign=False, **kw)
    shifted, _, meta = make_pair(11, misalign=True, **kw)
    window = cv2.createHanningWindow(aligned.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(aligned.astype(np.float64), shifted.astype(np.float64), window)
    record = meta["misregistration"]
    assert abs(record["dx_px"]) + abs(record["dy_px"]) > 0.5
    assert dx == pytest.approx(record["dx_px"], abs=0.25)
    assert dy == pytest.approx(record["dy_px"], abs=0.25)


def test_misregistration_matrix_maps_sem_points_into_the_osr():
    _, _, meta = make_pair(2, size=128, max_shift_px=0.0)
    record = meta["misregistration"]
    m = np.array(record["matrix"])
    centre = np.array([63.5, 63.5, 1.0])
    assert m @ centre == pytest.approx(centre[:2], abs=1e-9)  # rotation/scale about the centre
    assert np.hypot(*m[:, 0]) == pytest.approx(record["scale"])


def test_degrade_real_sem_reduces_resolution_and_keeps_geometry(real_sem_dir):
    sem = read_image(real_sem_dir / "case3_reference_image.tif")[:256, :256]
    osr = degrade_sem_to_osr(sem, 7.3, np.random.default_rng(0))
    assert osr.shape == sem.shape and osr.dtype == np.float32
    clean = degrade_sem_to_osr(sem, 7.3, np.random.default_rng(0), OpticsParams(full_well_e=1e9, read_noise_e=0.0))
    cutoff = OpticsParams().cutoff_per_nm * 7.3
    assert _high_frequency_fraction(clean, 1.2 * cutoff) < 0.01 * _high_frequency_fraction(sem, 1.2 * cutoff)
    assert np.corrcoef(clean.ravel(), sem.ravel())[0, 1] > 0.5


def test_write_pairs_writes_matching_16bit_files_and_meta(tmp_path):
    out = write_pairs(tmp_path / "pairs", n=2, seed=3, size=64)
    names = sorted(p.name for p in (out / "osr").iterdir())
    assert names == ["0000.tif", "0001.tif"] == sorted(p.name for p in (out / "sem").iterdir())
    assert tifffile.imread(out / "osr" / "0000.tif").dtype == np.uint16
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n"] == 2 and len(meta["pairs"]) == 2 and meta["size"] == 64
    assert meta["pairs"][0]["file"] == "0000.tif" and "dx_px" in meta["pairs"][0]["misregistration"]
    assert meta["pairs"][0]["seed"] != meta["pairs"][1]["seed"]
