"""Fourier ring correlation (NanoJ/NanoPyx style) and a SQUIRREL-style block FRC map.

FRC assumes the two images carry independent noise. In evaluation we correlate a prediction (or
the OSR input) with the SEM reference: the result is the "FRC resolution of agreement with the
SEM" -- the finer it is, the more of the SEM's detail the image reproduces. Two independent noisy
renderings of the same scene give the classical FRC resolution."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.signal.windows import tukey

Threshold = Literal["1/7", "half-bit"]
TUKEY_ALPHA = 0.25


def _windowed_square(img: np.ndarray, size: int) -> np.ndarray:
    """Tukey-windowed image, zero-padded (centred) to a size x size square."""
    h, w = img.shape
    x = img.astype(np.float64) - float(np.mean(img))
    x *= np.outer(tukey(h, TUKEY_ALPHA), tukey(w, TUKEY_ALPHA))
    out = np.zeros((size, size))
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = x
    return out


def frc_curve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FRC between two same-shaped 2-D images.

    Returns (ring frequency in cycles/pixel, FRC value, samples per ring) for rings r = 0 ..
    size/2 - 1, where size is the larger side rounded up to even. Each ring is sampled every
    1/r radians by bilinear interpolation of Re(F1 F2*), |F1|^2 and |F2|^2 (NanoJ's scheme);
    FRC(r) = sum Re(F1 F2*) / sqrt(sum |F1|^2 sum |F2|^2). Ring 0 is 1 by convention."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"FRC needs two 2-D images of the same shape, got {a.shape} and {b.shape}")
    size = max(a.shape) + max(a.shape) % 2
    fa = np.fft.fftshift(np.fft.fft2(_windowed_square(a, size)))
    fb = np.fft.fftshift(np.fft.fft2(_windowed_square(b, size)))
    planes = [np.real(fa * np.conj(fb)), np.abs(fa) ** 2, np.abs(fb) ** 2]
    centre, n_rings = size // 2, size // 2
    values, counts = np.ones(n_rings), np.ones(n_rings, dtype=int)
    for r in range(1, n_rings):
        angles = np.arange(0.0, 2 * np.pi, 1.0 / r)
        coords = np.vstack([centre + r * np.sin(angles), centre + r * np.cos(angles)])
        s = [ndimage.map_coordinates(p, coords, order=1, mode="nearest").sum() for p in planes]
        denom = np.sqrt(s[1] * s[2])
        values[r] = s[0] / denom if denom > 0 else 0.0
        counts[r] = angles.size
    return np.arange(n_rings) / size, values, counts


def frc_thresholds(n_pixels_per_ring: np.ndarray) -> dict[str, np.ndarray]:
    """Threshold curves: fixed 1/7, and half-bit T(n) = (0.2071 + 1.9102/sqrt(n)) /
    (1.2071 + 0.9102/sqrt(n)) with n the number of samples in the ring."""
    n = np.maximum(np.asarray(n_pixels_per_ring, dtype=np.float64), 1.0)
    half_bit = (0.2071 + 1.9102 / np.sqrt(n)) / (1.2071 + 0.9102 / np.sqrt(n))
    return {"1/7": np.full(n.shape, 1.0 / 7.0), "half-bit": half_bit}


def crossing_frequency(freqs: np.ndarray, values: np.ndarray, threshold: np.ndarray) -> float:
    """Frequency where the FRC first drops below the threshold (linear interpolation between
    rings, from ring 1 on). inf when already below at ring 1 (no agreement); NaN when it never
    drops below up to the last ring (agreement up to Nyquist: not measurable)."""
    diff = values[1:] - threshold[1:]
    if diff[0] < 0:
        return 0.0
    below = np.flatnonzero(diff < 0)
    if below.size == 0:
        return float("nan")
    i = below[0]
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    f0, f1 = freqs[1:][i - 1], freqs[1:][i]
    return float(f0 + t * (f1 - f0))


def _check_threshold(threshold: str) -> None:
    if threshold not in ("1/7", "half-bit"):
        raise ValueError(f"threshold must be '1/7' or 'half-bit', not {threshold!r}")


def frc_resolution(a: np.ndarray, b: np.ndarray, pixel_size_nm: float,
                   threshold: Threshold = "1/7") -> float:
    """FRC resolution in nm: pixel_size / crossing frequency (cycles/pixel). inf when the FRC is
    below the threshold from ring 1 on, NaN when it never drops below it (see crossing_frequency)."""
    _check_threshold(threshold)
    freqs, values, counts = frc_curve(a, b)
    f = crossing_frequency(freqs, values, frc_thresholds(counts)[threshold])
    if np.isnan(f):
        return float("nan")
    return float("inf") if f <= 0 else float(pixel_size_nm / f)


def block_frc_map(a: np.ndarray, b: np.ndarray, pixel_size_nm: float, blocks_per_axis: int = 10,
                  threshold: Threshold = "1/7") -> np.ndarray:
    """FRC resolution (nm) per block, NanoJ-SQUIRREL style: the images are cut into
    blocks_per_axis x blocks_per_axis non-overlapping blocks, FRC per block without smoothing;
    blocks without a finite resolution are filled from the nearest block that has one (all NaN
    when none has)."""
    _check_threshold(threshold)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    bh, bw = a.shape[0] // blocks_per_axis, a.shape[1] // blocks_per_axis
    if min(bh, bw) < 8:
        raise ValueError(f"{blocks_per_axis} blocks per axis leave blocks under 8 px for {a.shape}")
    out = np.full((blocks_per_axis, blocks_per_axis), np.nan)
    for i in range(blocks_per_axis):
        for j in range(blocks_per_axis):
            block = np.s_[i * bh : (i + 1) * bh, j * bw : (j + 1) * bw]
            out[i, j] = frc_resolution(a[block], b[block], pixel_size_nm, threshold)
    invalid = ~np.isfinite(out)
    if invalid.all() or not invalid.any():
        return out
    nearest = ndimage.distance_transform_edt(invalid, return_distances=False, return_indices=True)
    return out[tuple(nearest)]
