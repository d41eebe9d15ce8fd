"""Shared preprocessing: identity defaults, recorded parameters, each step's effect."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import UserError
from edge.imaging.resample import rescale_to_pixel_size, resize
from edge.inference.preprocess import PreprocessParams, preprocess


@pytest.fixture(scope="module")
def chip():
    from trainer.sim.pairs import make_pair

    return make_pair(4, size=128, misalign=False)[1]


def test_defaults_are_the_identity_and_record_as_empty(chip):
    params = PreprocessParams()
    assert params.to_dict() == {} and params.is_identity
    np.testing.assert_array_equal(preprocess(chip, params), chip)


def test_parameters_round_trip_and_bad_keys_are_named():
    params = PreprocessParams(denoise="gaussian", denoise_strength=1.5, unsharp_amount=0.5)
    assert PreprocessParams.from_dict(params.to_dict()) == params
    with pytest.raises(UserError, match="unknown preprocessing key.*sharpen"):
        PreprocessParams.from_dict({"sharpen": 1})
    with pytest.raises(UserError, match="denoise"):
        PreprocessParams.from_dict({"denoise": "wavelet"})
    with pytest.raises(UserError, match="clahe_clip"):
        PreprocessParams.from_dict({"clahe_clip": -1})


@pytest.mark.parametrize("denoise", ["gaussian", "bilateral", "nlmeans"])
def test_denoising_reduces_noise(chip, denoise):
    noisy = np.clip(chip + np.random.default_rng(0).normal(0, 0.05, chip.shape), 0, 1).astype(np.float32)
    strength = {"gaussian": 1.0, "bilateral": 10.0, "nlmeans": 10.0}[denoise]
    out = preprocess(noisy, PreprocessParams(denoise=denoise, denoise_strength=strength))
    assert out.dtype == np.float32 and out.shape == chip.shape
    assert np.mean((out - chip) ** 2) < np.mean((noisy - chip) ** 2)


def test_unsharp_and_clahe_raise_contrast_and_stay_in_range(chip):
    soft = 0.4 + 0.2 * chip
    sharp = preprocess(soft, PreprocessParams(unsharp_amount=1.0, unsharp_sigma=2.0))
    assert np.abs(np.diff(sharp, axis=1)).mean() > np.abs(np.diff(soft, axis=1)).mean()
    equalised = preprocess(soft, PreprocessParams(clahe_clip=2.0, clahe_grid=4))
    assert equalised.std() > soft.std()
    assert 0 <= sharp.min() and sharp.max() <= 1 and 0 <= equalised.min() and equalised.max() <= 1


def test_rescale_and_resize(chip):
    assert rescale_to_pixel_size(chip, 7.3, 10.0).shape == (93, 93)
    assert rescale_to_pixel_size(chip, 10.0, 5.0).shape == (256, 256)
    assert resize(chip, 64).shape == (64, 64) and resize(chip, (40, 80)).shape == (40, 80)
    flat = np.full((100, 100), 0.3, np.float32)
    np.testing.assert_allclose(resize(flat, 256), 0.3, atol=1e-6)
