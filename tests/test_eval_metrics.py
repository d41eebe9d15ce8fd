"""trainer.evaluation.metrics against independent references (scikit-image, OpenCV, numpy).

(Named test_eval_metrics.py: tests/test_metrics.py belongs to the daemon's Prometheus metrics.)"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from trainer.evaluation import metrics


def _scene(seed: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random(shape), 2.0)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def _noisy(img: np.ndarray, seed: int, std: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, std, img.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("seed,std", [(0, 0.02), (1, 0.1), (2, 0.3)])
def test_ssim_matches_skimage_gaussian_window(seed: int, std: float) -> None:
    ref = _scene(seed)
    pred = _noisy(ndimage.gaussian_filter(ref, 1.0), seed + 10, std)
    expected = structural_similarity(pred, ref, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1)
    assert metrics.ssim(pred, ref) == pytest.approx(expected, abs=1e-4)


def test_psnr_matches_skimage_and_is_inf_for_identical_images() -> None:
    ref = _scene(3)
    pred = _noisy(ref, 4)
    assert metrics.psnr(pred, ref) == pytest.approx(peak_signal_noise_ratio(ref, pred, data_range=1), abs=1e-6)
    assert metrics.psnr(ref, ref) == float("inf")


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        metrics.psnr(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32))


def test_epi_equals_correlation_of_opencv_laplacians() -> None:
    ref = _scene(5)
    pred = _noisy(ref, 6)

    def lap(x: np.ndarray) -> np.ndarray:
        return cv2.Laplacian(x.astype(np.float64), cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT)

    expected = np.corrcoef(lap(pred).ravel(), lap(ref).ravel())[0, 1]
    assert metrics.epi(pred, ref) == pytest.approx(expected, abs=1e-9)
    assert metrics.epi(ref, ref) == pytest.approx(1.0)


def test_epi_falls_as_edges_are_blurred_away() -> None:
    ref = _scene(7)
    values = [metrics.epi(ndimage.gaussian_filter(ref, s), ref) for s in (0.5, 1.0, 2.0, 4.0)]
    assert values == sorted(values, reverse=True)


def test_histogram_is_normalised_and_distance_is_the_mean_sorted_difference() -> None:
    a, b = _scene(8), _noisy(_scene(9), 10)
    centres, density = metrics.histogram(a, bins=64)
    assert centres.shape == density.shape == (64,)
    assert density.sum() == pytest.approx(1.0)
    # Wasserstein-1 between equal-sized samples is the mean gap between sorted values.
    expected = np.mean(np.abs(np.sort(a.ravel()).astype(np.float64) - np.sort(b.ravel())))
    assert metrics.histogram_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert metrics.histogram_distance(a, a) == 0.0
    assert metrics.histogram_distance(0.5 * a, 0.5 * a + 0.25) == pytest.approx(0.25)


def test_radial_power_spectrum_peaks_at_a_cosine_frequency() -> None:
    n, k = 128, 20
    yy, xx = np.mgrid[:n, :n]
    img = 0.5 + 0.4 * np.cos(2 * np.pi * k * (0.6 * xx + 0.8 * yy) / n)
    freqs, power = metrics.radial_power_spectrum(img.astype(np.float32))
    assert freqs[-1] == pytest.approx(0.5)
    assert freqs[np.argmax(power)] == pytest.approx(k / n)


def test_line_profile_samples_a_ramp_linearly() -> None:
    img = np.tile(np.linspace(0, 1, 50, dtype=np.float32), (20, 1))
    profile = metrics.line_profile(img, (10, 5), (10, 45))
    assert profile.size == 41
    np.testing.assert_allclose(profile, img[10, 5:46], atol=1e-6)
    assert metrics.line_profile(img, (2, 0), (2, 49), n=7).size == 7


def test_error_map_is_signed_pred_minus_ref() -> None:
    ref = _scene(11)
    err = metrics.error_map(ref + 0.1, ref)
    assert err.dtype == np.float32
    np.testing.assert_allclose(err, 0.1, atol=1e-6)


def test_affine_intensity_fit_recovers_a_known_map() -> None:
    x = _scene(12)
    a, b = metrics.affine_intensity_fit(x, 0.6 * x + 0.15)
    assert (a, b) == (pytest.approx(0.6, abs=1e-5), pytest.approx(0.15, abs=1e-5))
