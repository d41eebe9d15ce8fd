"""Registration: known shifts, rotation and scale recovered across the OSR/SEM contrast gap."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from edge.imaging.imageio import read_image
from edge.imaging.registration import align_pair, phase_shift, register


@pytest.fixture(scope="module")
def sem():
    from trainer.sim.pairs import make_pair

    return make_pair(21, size=256, misalign=False)[1]


def _transform(image, dx, dy, angle=0.0, scale=1.0):
    centre = (image.shape[1] / 2, image.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(image, matrix, image.shape[::-1], flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT), matrix


def _optical(image, seed=0):
    """Blurred, lower-contrast, noisy: an OSR-like rendering of a sharp image."""
    blurred = 0.3 + 0.4 * cv2.GaussianBlur(image, (0, 0), 3.0)
    return (blurred + np.random.default_rng(seed).normal(0, 0.02, image.shape)).astype(np.float32)


@pytest.mark.parametrize("dx,dy", [(3.4, -7.25), (-1.6, 0.3)])
def test_sub_pixel_shifts_are_recovered_within_a_tenth_of_a_pixel(sem, dx, dy):
    fixed, _ = _transform(sem, dx, dy)
    coarse = phase_shift(sem, fixed)
    assert abs(coarse[0] - dx) < 0.5 and abs(coarse[1] - dy) < 0.5 and coarse[2] > 0.1
    result = register(_optical(sem), fixed, affine=False)
    assert result.converged
    assert result.shift == pytest.approx((dx, dy), abs=0.1)


def test_rotation_and_scale_are_recovered_by_the_affine_step(sem):
    fixed, truth = _transform(sem, 2.0, 1.5, angle=0.5, scale=1.01)
    result = register(_optical(sem), fixed)
    assert result.converged and result.correlation > 0.8
    assert result.features == "intensity"  # one contrast: intensities are the more precise
    np.testing.assert_allclose(result.matrix[:, :2], truth[:, :2], atol=2e-3)
    np.testing.assert_allclose(result.matrix[:, 2], truth[:, 2], atol=0.3)
    aligned = result.warp(_optical(sem, seed=1), fixed.shape)
    mask = result.valid_mask(sem.shape, fixed.shape)
    assert np.corrcoef(aligned[mask], cv2.GaussianBlur(fixed, (0, 0), 3.0)[mask])[0, 1] > 0.95
    assert result.residual < register(_optical(sem), fixed, iterations=0).residual


def test_align_pair_returns_a_registered_crop(sem):
    fixed, _ = _transform(sem, 4.0, -3.0, angle=0.3)
    osr, ref, _ = align_pair(_optical(sem), fixed)
    assert osr.shape == ref.shape and min(osr.shape) > 200
    assert np.corrcoef(osr.ravel(), cv2.GaussianBlur(ref, (0, 0), 3.0).ravel())[0, 1] > 0.95
    with pytest.raises(UserError):
        register(sem, sem[:100])


def _template_match_shift(moving, fixed, margin=50):
    """Integer (dx, dy) by exhaustive normalised cross-correlation: an independent estimate."""
    template = moving[margin:-margin, margin:-margin]
    scores = cv2.matchTemplate(fixed, template, cv2.TM_CCOEFF_NORMED)
    _, _, _, (x, y) = cv2.minMaxLoc(scores)
    return x - margin, y - margin


@pytest.mark.parametrize("case", [1, 3])
def test_real_sem_reference_and_inspected_images_register_consistently(real_sem_dir, case):
    ref = read_image(real_sem_dir / f"case{case}_reference_image.tif")
    inspected = read_image(real_sem_dir / f"case{case}_inspected_image.tif")
    forward = register(inspected, ref, affine=False)
    backward = register(ref, inspected, affine=False)
    # The images overlap only partly (case 1 also has a defect), yet the aligned overlap agrees.
    assert forward.correlation > 0.9 and backward.correlation > 0.9
    assert forward.shift == pytest.approx((-backward.shift[0], -backward.shift[1]), abs=0.5)
    assert forward.shift == pytest.approx(_template_match_shift(inspected, ref), abs=1.0)
    assert 1 < np.hypot(*forward.shift) < min(ref.shape) / 4


def test_blurred_noisy_real_sem_registers_to_the_sharp_original(real_sem_dir):
    """Case 3's real SEM image as the sharp reference, an OSR-like rendering of it as moving."""
    sharp = read_image(real_sem_dir / "case3_reference_image.tif")
    fixed, truth = _transform(sharp, -5.3, 2.7, angle=-0.4, scale=0.995)
    moving = _optical(sharp, seed=3)
    h, w = sharp.shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T

    def corner_error(result):
        return np.abs(result.matrix @ corners - truth @ corners).max()

    result = register(moving, fixed)
    translation_only = register(moving, fixed, affine=False)
    # Reflected borders in `fixed` (where the transform moved content out) bias the fit a little.
    assert result.converged and corner_error(result) < 1.5
    assert corner_error(result) < corner_error(translation_only) / 2


def test_simulated_osr_registers_to_its_sem_across_the_contrast_gap():
    """OSR and SEM grey levels do not correspond; edge strength still aligns them."""
    from trainer.sim.pairs import make_pair, pair_seed

    errors = []
    for i in range(4):
        osr, sem, meta = make_pair(pair_seed(31, i), size=256)
        truth = cv2.invertAffineTransform(np.array(meta["misregistration"]["matrix"]))  # OSR -> SEM
        result = register(osr, sem)
        assert result.features == "edges"
        corners = np.array([[0, 0, 1], [255, 0, 1], [0, 255, 1], [255, 255, 1]], float).T
        errors.append(np.abs(result.matrix @ corners - truth @ corners).max())
    assert max(errors) < 0.75, errors
