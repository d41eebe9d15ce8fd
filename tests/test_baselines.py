"""Baseline converters: identity, the affine oracle, Richardson-Lucy with a matched PSF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import fftconvolve

from trainer.evaluation import baselines
from trainer.evaluation.metrics import psnr
from trainer.sim.optics import optical_psf


def _bars(size: int = 96) -> np.ndarray:
    img = np.full((size, size), 0.2, np.float32)
    for x in range(10, size - 10, 16):
        img[10:-10, x : x + 6] = 0.9
    return img


def test_registry_has_the_cli_names() -> None:
    assert set(baselines.BASELINES) == {"identity", "affine", "rl"}


def test_identity_returns_the_input() -> None:
    osr = _bars()
    np.testing.assert_array_equal(baselines.identity(osr, None), osr)


def test_affine_oracle_inverts_a_linear_map_and_clips() -> None:
    ref = _bars()
    osr = (ref - 0.1) * 0.5 + 0.3
    np.testing.assert_allclose(baselines.oracle_affine(osr, ref), ref, atol=1e-5)
    out = baselines.oracle_affine(osr, ref * 1.5)  # needs values > 1
    assert out.max() <= 1.0 and out.min() >= 0.0
    with pytest.raises(ValueError):
        baselines.oracle_affine(osr, None)


def test_matched_psf_is_the_simulators_normalised_optical_psf() -> None:
    psf, source = baselines.matched_psf(10.0)
    assert source == "trainer.sim.optics.optical_psf"
    np.testing.assert_array_equal(psf, optical_psf(10.0))
    assert psf.sum() == pytest.approx(1.0, abs=1e-5) and psf.shape[0] % 2 == 1


def test_richardson_lucy_sharpens_a_blurred_image() -> None:
    truth = _bars()
    psf, _ = baselines.matched_psf(10.0)
    blurred = fftconvolve(np.pad(truth, 20, mode="reflect"), psf, mode="same")[20:-20, 20:-20]
    restored = baselines.richardson_lucy(blurred.astype(np.float32), psf, iterations=30)
    assert restored.shape == truth.shape and restored.dtype == np.float32
    assert psnr(restored, truth) > psnr(blurred, truth) + 2.0
    assert np.abs(ndimage.sobel(restored, axis=1)).mean() > np.abs(ndimage.sobel(blurred, axis=1)).mean()


def test_rl_baseline_uses_the_uniform_signature() -> None:
    osr = ndimage.gaussian_filter(_bars(64), 3.0)
    out = baselines.BASELINES["rl"](osr, None, pixel_size_nm=10.0, iterations=5)
    assert out.shape == osr.shape and 0.0 <= out.min() and out.max() <= 1.0
