"""Registration of an OSR image to its SEM image: phase correlation, then affine refinement.

The two modalities differ in contrast (optical reflectance vs secondary electrons), so both steps
work on smoothed images and on correlation measures that ignore gain and offset: phase
correlation (whitened spectrum) for the translation, OpenCV's ECC (enhanced correlation
coefficient) for the affine refinement. The residual is reported with the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.resample import rescale_to_pixel_size

SMOOTH_SIGMA_PX = 1.5
GRADIENT_SIGMA_PX = 1.5
# roughly aligned pairs keep most of their area when registered; less is a wrong lock (onto
# another period of a repeating pattern, or onto nothing)
MIN_REGISTERED_SHARE = 0.5


@dataclass
class Registration:
    """matrix: 2x3 affine that maps moving-image pixel coordinates (x, y) to fixed-image ones;
    shift: its translation part (dx, dy); residual: RMS difference of the standardised images
    after alignment (0 = identical up to gain and offset); correlation: ECC correlation
    coefficient of the registered representation (or the phase-correlation response when
    refinement did not run or converge); converged: whether the affine refinement converged;
    features: "edges" or "intensity", the representation that was registered; edge_agreement:
    correlation of the aligned images' edge strength over their overlap (for reports)."""

    matrix: np.ndarray
    shift: tuple[float, float]
    residual: float
    correlation: float
    converged: bool
    features: str = "edges"
    edge_agreement: float = float("nan")

    def warp(self, moving: np.ndarray, shape: tuple[int, ...] | None = None,
             border_value: float = 0.0) -> np.ndarray:
        """The moving image resampled into the fixed image's frame (`shape`, default its own)."""
        h, w = (shape or moving.shape)[:2]
        return cv2.warpAffine(np.asarray(moving, np.float32), self.matrix.astype(np.float64),
                              (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=border_value)

    def valid_mask(self, moving_shape: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
        """True where the warped image has real (not border) pixels."""
        ones = np.ones(moving_shape[:2], np.float32)
        return self.warp(ones, shape) > 0.999


def _smooth(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(np.asarray(image, np.float32), (0, 0), SMOOTH_SIGMA_PX)


def edge_strength(image: np.ndarray, sigma: float = GRADIENT_SIGMA_PX) -> np.ndarray:
    """Gradient magnitude of the Gaussian-smoothed image: what OSR and SEM images share.

    Their grey levels do not correspond (optical reflectance vs secondary-electron yield, with
    bright SEM edge rims, even inverted contrast), but both have their edges at the pattern's
    edges, so registering edge strength works where registering intensities fails."""
    smooth = cv2.GaussianBlur(np.asarray(image, np.float32), (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
    return cv2.magnitude(gx, gy)


def phase_shift(moving: np.ndarray, fixed: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, response): `fixed` is `moving` displaced by (dx, dy) px (sub-pixel)."""
    if moving.shape != fixed.shape:
        raise ValueError(f"phase correlation needs equal shapes, got {moving.shape} and {fixed.shape}")
    window = cv2.createHanningWindow((moving.shape[1], moving.shape[0]), cv2.CV_32F)
    a, b = _smooth(moving), _smooth(fixed)
    (dx, dy), response = cv2.phaseCorrelate(a - a.mean(), b - b.mean(), window)
    return float(dx), float(dy), float(response)


def _residual(warped: np.ndarray, fixed: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 16:
        return float("nan")
    a, b = warped[mask], fixed[mask]
    a = (a - a.mean()) / (a.std() + 1e-12)
    b = (b - b.mean()) / (b.std() + 1e-12)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def register(moving: np.ndarray, fixed: np.ndarray, affine: bool = True,
             iterations: int = 200, max_shift_px: float | None = None) -> Registration:
    """Align `moving` (e.g. OSR) onto `fixed` (e.g. SEM) of the same shape.

    Phase correlation gives the translation; ECC then refines an affine transform (affine=True)
    or the translation alone (affine=False) to sub-pixel accuracy. Both are run twice, on edge
    strength (which OSR and SEM share, see `edge_strength`) and on smoothed intensities (more
    precise when the two images have the same contrast). The intensity result is used only when
    its correlation coefficient beats the edge result's: true for images of one contrast (then
    above ~0.93), false across the OSR/SEM contrast gap, where intensity correlation stays lower
    and its optimum lies pixels off. `Registration.features` says which was used.
    `max_shift_px`: the images are known to lie within that of each other (a stage position);
    a phase-correlation lock farther off (onto another period of a repeating pattern) is
    replaced by ECC started from no shift."""
    moving = np.asarray(moving, np.float32)
    fixed = np.asarray(fixed, np.float32)
    if moving.ndim != 2 or moving.shape != fixed.shape:
        raise UserError(f"registration needs two 2-D images of one shape, got {moving.shape} "
                        f"and {fixed.shape}")
    fixed_edges = edge_strength(fixed)
    pairs = {"edges": (edge_strength(moving), fixed_edges),
             "intensity": (_smooth(moving), _smooth(fixed))}
    candidates = [_align(*pair, affine, iterations, name) for name, pair in pairs.items()]
    if max_shift_px is not None:
        candidates = [c if np.hypot(*c.shift) <= max_shift_px else
                      _align(*pairs[c.features], affine, iterations, c.features, phase=False)
                      for c in candidates]
    for candidate in candidates:
        mask = candidate.valid_mask(moving.shape, fixed.shape)
        warped_edges = edge_strength(candidate.warp(moving, fixed.shape))
        candidate.edge_agreement = _correlation(warped_edges, fixed_edges, mask)
        candidate.residual = _residual(candidate.warp(moving, fixed.shape), fixed, mask)
    return max(candidates, key=lambda c: (c.converged, c.correlation))


def _align(moving: np.ndarray, fixed: np.ndarray, affine: bool, iterations: int,
           features: str, phase: bool = True) -> Registration:
    dx, dy, response = phase_shift(moving, fixed) if phase else (0.0, 0.0, 0.0)
    # ECC's warp maps fixed (template) coordinates to moving (input) coordinates.
    warp = np.array([[1, 0, -dx], [0, 1, -dy]], np.float32)
    converged, correlation = False, response
    if iterations > 0:
        motion = cv2.MOTION_AFFINE if affine else cv2.MOTION_TRANSLATION
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6)
        try:
            correlation, warp = cv2.findTransformECC(fixed, moving, warp.copy(), motion, criteria,
                                                     None, 5)  # type: ignore[call-overload]
            converged = True
        except cv2.error:
            warp = np.array([[1, 0, -dx], [0, 1, -dy]], np.float32)
    matrix = cv2.invertAffineTransform(warp.astype(np.float64))
    return Registration(matrix, (float(matrix[0, 2]), float(matrix[1, 2])), 0.0,
                        float(correlation), converged, features)


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 16:
        return -1.0
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def valid_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), half-open: a large axis-aligned rectangle inside `mask`."""
    top, bottom, left, right = 0, mask.shape[0], 0, mask.shape[1]
    while top < bottom and left < right:
        box = mask[top:bottom, left:right]
        if box.all():
            return top, bottom, left, right
        bad = {"top": (~box[0]).sum(), "bottom": (~box[-1]).sum(),
               "left": (~box[:, 0]).sum(), "right": (~box[:, -1]).sum()}
        side = max(bad, key=lambda k: bad[k])
        if side == "top":
            top += 1
        elif side == "bottom":
            bottom -= 1
        elif side == "left":
            left += 1
        else:
            right -= 1
    return 0, 0, 0, 0


def align_pair(osr: np.ndarray, sem: np.ndarray, osr_pixel_nm: float | None = None,
               sem_pixel_nm: float | None = None) -> tuple[np.ndarray, np.ndarray, Registration]:
    """Rescale the OSR image to the SEM's pixel size, register it, warp it onto the SEM image and
    crop both to the rectangle where the warped OSR image has real pixels."""
    osr = np.asarray(osr, np.float32)
    sem = np.asarray(sem, np.float32)
    if osr_pixel_nm and sem_pixel_nm:
        osr = rescale_to_pixel_size(osr, osr_pixel_nm, sem_pixel_nm)
    h, w = sem.shape
    moving = np.zeros_like(sem)
    moving[: min(h, osr.shape[0]), : min(w, osr.shape[1])] = osr[:h, :w]
    reg = register(moving, sem)
    mask = reg.valid_mask(osr[:h, :w].shape, sem.shape)
    top, bottom, left, right = valid_rectangle(mask)
    if bottom - top < 16 or right - left < 16:
        raise UserError(f"registered pair overlaps by only {bottom - top}x{right - left} px")
    warped = reg.warp(moving, sem.shape)
    return warped[top:bottom, left:right], sem[top:bottom, left:right], reg
