"""Image-quality metrics on float32 [0, 1] 2-D images (data range 1)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

# shared with the edge (the trust score's cycle fit), re-exported for the trainer
from edge.imaging.statistics import affine_intensity_fit  # noqa: F401

SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_TRUNCATE = 0.01, 0.03, 1.5, 3.5


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(f"need two 2-D images of the same shape, got {pred.shape} and {ref.shape}")
    return pred.astype(np.float64), ref.astype(np.float64)


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for data range 1 (inf for identical images)."""
    p, r = _check_pair(pred, ref)
    mse = float(np.mean((p - r) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def ssim(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5), population
    covariances, reflected borders, and the window-radius border excluded from the mean."""
    p, r = _check_pair(pred, ref)
    c1, c2 = SSIM_K1**2, SSIM_K2**2

    def smooth(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, SSIM_SIGMA, mode="reflect", truncate=SSIM_TRUNCATE)

    mp, mr = smooth(p), smooth(r)
    vp = smooth(p * p) - mp * mp
    vr = smooth(r * r) - mr * mr
    cov = smooth(p * r) - mp * mr
    s = ((2 * mp * mr + c1) * (2 * cov + c2)) / ((mp**2 + mr**2 + c1) * (vp + vr + c2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    return float(s[pad:-pad, pad:-pad].mean())


def epi(pred: np.ndarray, ref: np.ndarray) -> float:
    """Edge preservation index (Sattar et al. 1997): correlation of the Laplacians of the two
    images. 1 = edges preserved exactly; NaN when either image has no edges at all."""
    p, r = _check_pair(pred, ref)
    dp, dr = ndimage.laplace(p, mode="reflect"), ndimage.laplace(r, mode="reflect")
    dp -= dp.mean()
    dr -= dr.mean()
    denom = np.sqrt(np.sum(dp * dp) * np.sum(dr * dr))
    return float(np.sum(dp * dr) / denom) if denom > 0 else float("nan")


def histogram(img: np.ndarray, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Normalised intensity histogram on [0, 1]: (bin_centres, density summing to 1)."""
    counts, edges = np.histogram(np.clip(img, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return (edges[:-1] + edges[1:]) / 2, counts / max(counts.sum(), 1)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's (Wasserstein-1) distance between the two images' intensity distributions,
    in intensity units (0 = same histogram, 1 = all black vs all white)."""
    return float(stats.wasserstein_distance(np.ravel(a), np.ravel(b)))


def radial_power_spectrum(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the mean-subtracted image:
    (frequency in cycles/pixel at 1/min(shape) spacing, mean |FFT|^2 per ring), up to Nyquist."""
    x = img.astype(np.float64) - float(np.mean(img))
    power = np.abs(np.fft.fft2(x)) ** 2 / x.size
    fy, fx = np.meshgrid(np.fft.fftfreq(x.shape[0]), np.fft.fftfreq(x.shape[1]), indexing="ij")
    step = 1.0 / min(x.shape)
    ring = np.rint(np.hypot(fy, fx) / step).astype(int).ravel()
    n_rings = min(x.shape) // 2 + 1
    keep = ring < n_rings
    sums = np.bincount(ring[keep], weights=power.ravel()[keep], minlength=n_rings)
    counts = np.bincount(ring[keep], minlength=n_rings)
    return np.arange(n_rings) * step, sums / np.maximum(counts, 1)


def line_profile(img: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
                 n: int | None = None) -> np.ndarray:
    """Bilinearly sampled intensities along the segment p0 -> p1 ((row, col) pixel coordinates);
    `n` samples (default: one per pixel of length, ends included)."""
    (r0, c0), (r1, c1) = p0, p1
    if n is None:
        n = int(np.ceil(np.hypot(r1 - r0, c1 - c0))) + 1
    coords = np.vstack([np.linspace(r0, r1, n), np.linspace(c0, c1, n)])
    return ndimage.map_coordinates(img.astype(np.float64), coords, order=1, mode="nearest")


def error_map(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Signed per-pixel error pred - ref (float32)."""
    p, r = _check_pair(pred, ref)
    return (p - r).astype(np.float32)
