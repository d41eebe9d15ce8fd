"""FRC: curve properties, an independent direct computation, NanoPyx reference figures, and the
SQUIRREL-style block map."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal.windows import tukey

from trainer.evaluation.frc import block_frc_map, frc_curve, frc_resolution, frc_thresholds

FIXTURES = Path(__file__).parent / "fixtures"
# NanoPyx smooths the curve (Savitzky-Golay), maps ring r to r/(N-4) instead of r/N cycles/px and
# takes the first crossing in either direction; our curve is unsmoothed (as NanoJ-SQUIRREL's
# block FRC). On these pairs the two agree within 5 %; 10 % leaves room for those differences.
NANOPYX_REL_TOL = 0.10


def _scene(seed: int, size: int = 128, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((size, size)), sigma, mode="wrap")
    return (img - img.min()) / (img.max() - img.min())


def _noisy_copies(clean: np.ndarray, seed: int, std: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return clean + rng.normal(0, std, clean.shape), clean + rng.normal(0, std, clean.shape)


def _direct_frc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain FRC: same Tukey window, every FFT pixel binned to its nearest integer radius."""
    w = np.outer(tukey(a.shape[0], 0.25), tukey(a.shape[1], 0.25))
    fa, fb = np.fft.fft2((a - a.mean()) * w), np.fft.fft2((b - b.mean()) * w)
    n = a.shape[0]
    f = np.fft.fftfreq(n) * n
    ring = np.rint(np.hypot(*np.meshgrid(f, f, indexing="ij"))).astype(int).ravel()
    num = np.bincount(ring, np.real(fa * np.conj(fb)).ravel())
    den = np.sqrt(np.bincount(ring, (np.abs(fa) ** 2).ravel()) * np.bincount(ring, (np.abs(fb) ** 2).ravel()))
    return (num / den)[: n // 2]


def test_identical_images_correlate_fully_and_have_no_crossing() -> None:
    img = _scene(0)
    freqs, values, _ = frc_curve(img, img)
    assert freqs[1] == pytest.approx(1 / 128) and freqs.size == 64
    np.testing.assert_allclose(values, 1.0, atol=1e-9)
    assert np.isnan(frc_resolution(img, img, 10.0))


def test_independent_noise_does_not_correlate() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((128, 128)), rng.random((128, 128))
    _, values, counts = frc_curve(a, b)
    # FRC of independent noise scatters around 0 with std about 1/sqrt(samples in the ring).
    assert np.all(np.abs(values[8:]) < 4 / np.sqrt(counts[8:]))
    assert frc_resolution(a, b, 10.0) == float("inf")


def test_curve_agrees_with_a_direct_pixel_binned_computation() -> None:
    a, b = _noisy_copies(_scene(2), 3, 0.05)
    _, values, _ = frc_curve(a, b)
    # Interpolated ring samples vs whole-pixel binning: the curves differ by ~0.01 on average.
    np.testing.assert_allclose(values[4:], _direct_frc(a, b)[4:], atol=0.06)


def test_stronger_blur_gives_a_coarser_resolution_at_both_thresholds() -> None:
    for threshold in ("1/7", "half-bit"):
        res = [frc_resolution(*_noisy_copies(_scene(4, sigma=s), 5, 0.05), 10.0, threshold)
               for s in (1.0, 2.0, 4.0)]
        assert all(np.isfinite(res)) and res == sorted(res), (threshold, res)


def test_resolution_scales_with_pixel_size() -> None:
    a, b = _noisy_copies(_scene(6), 7, 0.05)
    assert frc_resolution(a, b, 20.0) == pytest.approx(2 * frc_resolution(a, b, 10.0))


def test_thresholds() -> None:
    n = np.array([6.0, 60.0, 600.0, 1e12])
    t = frc_thresholds(n)
    np.testing.assert_allclose(t["1/7"], 1 / 7)
    assert np.all(np.diff(t["half-bit"]) < 0)
    assert t["half-bit"][-1] == pytest.approx(0.2071 / 1.2071, abs=1e-4)
    with pytest.raises(ValueError):
        frc_resolution(np.zeros((32, 32)), np.zeros((32, 32)), 10.0, "1/3")  # type: ignore[arg-type]


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_nanopyx_fixture", FIXTURES / "make_nanopyx_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agrees_with_nanopyx_fire(real_sem_dir: Path) -> None:
    fixture = json.loads((FIXTURES / "nanopyx_frc.json").read_text())
    maker = _fixture_module()
    assert len(fixture["pairs"]) >= 4
    for pair in fixture["pairs"]:
        a, b = maker.make_pair(pair, real_sem_dir)
        ours = frc_resolution(a, b, fixture["pixel_size_nm"], "1/7")
        assert ours == pytest.approx(pair["nanopyx_frc_nm"], rel=NANOPYX_REL_TOL), pair["name"]


def test_block_map_shape_and_nearest_fill() -> None:
    clean = _scene(8, size=160)
    a, b = _noisy_copies(clean, 9, 0.05)
    rng = np.random.default_rng(10)
    b[:, 80:] = rng.random((160, 80))  # right half: no agreement at all
    blocks = block_frc_map(a, b, 10.0, blocks_per_axis=4)
    assert blocks.shape == (4, 4)
    unfilled = np.array([[frc_resolution(a[i * 40:(i + 1) * 40, j * 40:(j + 1) * 40],
                                         b[i * 40:(i + 1) * 40, j * 40:(j + 1) * 40], 10.0)
                          for j in range(4)] for i in range(4)])
    assert np.all(np.isfinite(unfilled[:, :2])) and not np.any(np.isfinite(unfilled[:, 2:]))
    np.testing.assert_array_equal(blocks[:, :2], unfilled[:, :2])
    for col in (2, 3):
        np.testing.assert_array_equal(blocks[:, col], unfilled[:, 1])


def test_block_map_rejects_tiny_blocks() -> None:
    with pytest.raises(ValueError):
        block_frc_map(np.zeros((40, 40)), np.zeros((40, 40)), 10.0, blocks_per_axis=10)
