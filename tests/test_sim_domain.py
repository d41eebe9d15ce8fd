"""The randomized simulation domain: each randomization changes the rendered images as the
physics says, the narrow default is unchanged, and meta.json records every pair's draw."""

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from edge.imaging.registration import register
from ssum.cli import main
from trainer.evaluation.frc import frc_resolution
from trainer.sim.domain import (
    DomainRanges,
    contrast_table,
    draw,
    holdout_params,
    resolution_for_fwhm,
    reversed_table,
)
from trainer.sim.layout import METAL, Layout
from trainer.sim.optics import OpticsParams, illumination, optical_psf
from trainer.sim.pairs import make_pair, pair_seed, pair_streams, write_pairs
from trainer.sim.params import SimParams
from trainer.sim.sem import SemParams, render_sem
from trainer.sim.stats import narrowest_width_px, noise_std, two_class_mask

FIXTURES = Path(__file__).parent / "fixtures"


def test_narrow_default_renders_the_pairs_of_before_the_randomized_domain():
    """tests/fixtures/narrow_pairs.npz was written by the simulator of commit 3aa495a (before
    the domain existed): make_pair(7, size=64) and make_pair(8, size=48, pixel_size_nm=7.3,
    misalign=False). Any change to the narrow path's random streams moves every noisy pixel."""
    expected = np.load(FIXTURES / "narrow_pairs.npz")
    osr7, sem7, _ = make_pair(7, size=64)
    osr8, sem8, meta = make_pair(8, size=48, pixel_size_nm=7.3, misalign=False, params=SimParams())
    for name, got in (("osr_7", osr7), ("sem_7", sem7), ("osr_8", osr8), ("sem_8", sem8)):
        np.testing.assert_allclose(got, expected[name], rtol=0, atol=1e-6, err_msg=name)
    assert meta["native_pixel_nm"] == 7.3 and meta["contrast_table"] == "normal"


def _osr_sem(seed: int, **overrides) -> tuple[np.ndarray, np.ndarray]:
    osr, sem, _ = make_pair(seed, size=192, misalign=False, **overrides)
    return osr, sem


def test_psf_width_is_the_requested_fwhm():
    params = OpticsParams(resolution_nm=resolution_for_fwhm(100.0))
    psf = optical_psf(2.0, params).astype(np.float64)
    profile = psf[psf.shape[0] // 2]
    above = np.flatnonzero(profile >= profile.max() / 2)
    assert params.fwhm_nm == pytest.approx(100.0)
    assert (above[-1] - above[0] + 1) * 2.0 == pytest.approx(100.0, abs=4.0)


def test_osr_frc_resolution_coarsens_with_the_fwhm():
    frc = []
    for fwhm in (60.0, 100.0, 150.0):
        osr, sem = _osr_sem(3, resolution_nm=resolution_for_fwhm(fwhm), full_well_e=1e5)
        frc.append(frc_resolution(osr, sem, 10.0))
    assert frc[0] < frc[1] < frc[2]
    assert frc[2] > 1.5 * frc[0]


def test_spherical_aberration_lowers_the_strehl_ratio_as_marechal_says():
    perfect = optical_psf(10.0).max()
    for waves in (0.1, 0.2):
        peak = optical_psf(10.0, OpticsParams(spherical_waves=waves)).max()
        rms = waves / np.sqrt(5.0)  # RMS of the Zernike term 6 rho^4 - 6 rho^2 + 1
        assert peak / perfect == pytest.approx(np.exp(-((2 * np.pi * rms) ** 2)), abs=0.03)
    astig = optical_psf(10.0, OpticsParams(astigmatism_waves=0.2))
    assert astig.sum() == pytest.approx(1.0, abs=1e-5) and astig.max() < 0.9 * perfect


def test_noise_std_grows_as_the_photon_count_drops():
    stds = [noise_std(_osr_sem(4, full_well_e=photons)[0]) for photons in (5000.0, 1000.0, 100.0)]
    assert stds[0] < stds[1] < stds[2]
    assert 2.5 < stds[2] / stds[1] < 4.5  # shot noise: sqrt(10), plus read noise


def test_illumination_tilt_vignetting_and_offset_centre():
    shape = (101, 101)
    tilted = illumination(shape, OpticsParams(falloff=0.0, tilt=0.3))
    assert tilted[50, -1] / tilted[50, 0] == pytest.approx(1.15 / 0.85, rel=0.02)
    vignetted = illumination(shape, OpticsParams(falloff=0.0, vignetting=0.4))
    assert vignetted[50, 50] == pytest.approx(1.0, abs=1e-3)
    assert vignetted[0, 0] == pytest.approx(0.6, abs=0.02)  # the corner is the field edge
    off = illumination(shape, OpticsParams(), centre=(0.0, 0.4))
    assert np.unravel_index(np.argmax(off), shape)[1] == pytest.approx(70, abs=1)


def _low_pass_correlation(osr: np.ndarray, sem: np.ndarray) -> float:
    """Correlation of the OSR with the SEM seen at the optical resolution (materials, not edges)."""
    smooth = cv2.GaussianBlur(sem, (0, 0), 4.0)
    return float(np.corrcoef(osr.ravel(), smooth.ravel())[0, 1])


def test_reversed_contrast_flips_the_sign_of_the_osr_sem_correlation():
    narrow = OpticsParams().reflectance
    normal = _low_pass_correlation(*_osr_sem(5, tone="lines"))
    flipped = _low_pass_correlation(*_osr_sem(5, tone="lines", reflectance=reversed_table(narrow)))
    assert normal > 0.5 and flipped < -0.5
    assert contrast_table(OpticsParams(reflectance=reversed_table(narrow)), SemParams()) == "reversed"


def test_native_pixel_size_keeps_the_features_physical_width():
    """Rendered at 7 or 15 nm per pixel (the design grid cell then holds 11 or 5 pixels, 77 or
    75 nm), resampled to 10 nm: the narrowest gaps are ~7.5 output pixels at both; rendered at
    10 nm directly the cell is 9 pixels (90 nm)."""
    widths = {}
    for native in (None, 7.0, 15.0):
        _, sem, meta = make_pair(6, size=256, misalign=False, native_pixel_nm=native,
                                 electrons_per_pixel=1e5, tone="lines")
        assert sem.shape == (256, 256) and meta["native_pixel_nm"] == pytest.approx(native or 10.0, rel=0.01)
        widths[native] = narrowest_width_px(~two_class_mask(sem))
    assert widths[None] == pytest.approx(9.0, abs=0.5)
    assert widths[7.0] == pytest.approx(7.5, abs=1.0) and widths[15.0] == pytest.approx(7.5, abs=1.0)


def test_misregistration_is_in_output_pixels_at_any_native_pixel_size():
    for native in (7.0, 14.0):
        kw = {"size": 256, "max_rotation_deg": 0.0, "max_scale": 0.0, "max_shift_px": 3.0,
              "native_pixel_nm": native, "full_well_e": 1e5}
        aligned, _, _ = make_pair(12, misalign=False, **kw)
        shifted, _, meta = make_pair(12, misalign=True, **kw)
        found = register(shifted, aligned, affine=False).shift  # maps the shifted one back
        record = meta["misregistration"]
        assert found[0] == pytest.approx(-record["dx_px"], abs=0.15)
        assert found[1] == pytest.approx(-record["dy_px"], abs=0.15)


def test_charging_leaves_a_tail_after_features_along_the_scan():
    material = np.zeros((64, 200), np.uint8)
    height = np.zeros((64, 200), np.float32)
    material[:, 80:120], height[:, 80:120] = METAL, 120.0
    layout = Layout(material, height, 10.0)
    quiet = dataclasses.replace(SemParams(), electrons_per_pixel=1e6, line_offset_std=0.0,
                                line_gain_std=0.0)
    for gain, expect_tail in ((0.0, False), (0.3, True)):
        sem = render_sem(layout, np.random.default_rng(0),
                         dataclasses.replace(quiet, charging_gain=gain))
        after, before = sem[:, 125:145].mean(), sem[:, 55:75].mean()
        assert (after - before > 0.02) == expect_tail


def test_draws_are_seeded_inside_their_ranges_and_reverse_some_tables():
    ranges = DomainRanges()
    draws = [draw(np.random.default_rng(s)) for s in range(200)]
    assert draws[0] == draw(np.random.default_rng(0)) and draws[0] != draws[1]
    fwhm = np.array([d.optics.fwhm_nm for d in draws])
    pixel = np.array([d.sampling.native_pixel_nm for d in draws])
    photons = np.array([d.optics.full_well_e for d in draws])
    assert ranges.fwhm_nm[0] <= fwhm.min() and fwhm.max() <= ranges.fwhm_nm[1]
    assert ranges.pixel_size_nm[0] <= pixel.min() and pixel.max() <= ranges.pixel_size_nm[1]
    assert ranges.full_well_e[0] <= photons.min() and photons.max() <= ranges.full_well_e[1]
    tables = [contrast_table(d.optics, d.sem) for d in draws]
    assert 0.2 < tables.count("reversed") / len(tables) < 0.4
    assert 0.2 < np.mean([d.sem.charging_gain > 0 for d in draws]) < 0.4


def test_randomized_pairs_record_each_pairs_draw(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["synth", "pairs", "--out", str(out), "--n", "2", "--size", "64",
                 "--domain", "randomized"]) == 0
    assert "randomized" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["domain"] == "randomized" and "params" not in meta and "ranges" in meta
    first, second = meta["pairs"]
    assert first["params"] != second["params"]
    expected = draw(pair_streams(pair_seed(0, 0))[-1])
    assert first["params"]["optics"]["resolution_nm"] == expected.optics.resolution_nm
    assert first["fwhm_nm"] == pytest.approx(expected.optics.fwhm_nm)
    narrow = json.loads((write_pairs(tmp_path / "n", n=1, size=32) / "meta.json").read_text())
    assert narrow["domain"] == "narrow" and "params" in narrow and "params" not in narrow["pairs"][0]


def test_unknown_domain_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="domain"):
        write_pairs(tmp_path / "x", n=1, size=32, domain="wide")


def test_holdout_domain_lies_outside_the_randomized_ranges_and_is_recorded_once(tmp_path):
    """The held-out domain stands for a microscope no training draw reaches: its departures from
    the narrow domain fall outside DomainRanges, and its material order is neither the narrow
    table's nor its mirror's."""
    ranges, held = DomainRanges(), holdout_params()
    assert held.optics.fwhm_nm > ranges.fwhm_nm[1]
    assert held.sampling.native_pixel_nm > ranges.pixel_size_nm[1]
    assert held.optics.falloff > ranges.falloff[1]
    assert held.misalign.max_field_offset > ranges.field_offset[1]
    assert held.optics.read_noise_e > ranges.read_noise_e[1]
    assert held.sem.edge_gain > ranges.edge_gain[1]
    narrow = OpticsParams().reflectance
    order = sorted(held.optics.reflectance, key=held.optics.reflectance.get)
    assert order not in (sorted(narrow, key=narrow.get), sorted(narrow, key=narrow.get)[::-1])
    meta = json.loads((write_pairs(tmp_path / "h", n=2, size=48, domain="holdout")
                       / "meta.json").read_text())
    assert meta["domain"] == "holdout" and "params" not in meta["pairs"][0]
    assert meta["params"]["optics"]["resolution_nm"] == held.optics.resolution_nm
    osr, _, record = make_pair(3, size=48, params=held)
    assert record["native_pixel_nm"] == 16.0 and osr.shape == (48, 48)
