"""Image statistics shared by the simulator's comparison with real images, the evaluation and
the trust score and inspection: the radial power spectrum and its slope, a robust spread and a
robust noise estimate, an affine intensity fit.

The spectrum and noise functions take one image (H, W) or a stack of equal-sized images
(N, H, W) and give a figure per image: the trust score computes them on every block of a tile
at once.
"""

from __future__ import annotations

import numpy as np

SPECTRUM_BINS = 16
SLOPE_BAND = (0.03, 0.25)  # cycles/px, the log-log fit of the spectrum
LOW_BAND, HIGH_CUT = (0.03, 0.1), 0.4  # the high-to-low power ratio


def radial_power_spectrum(image: np.ndarray, bins: int = SPECTRUM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the Hann-windowed, standardised image.

    Returns (bin-centre frequencies in cycles/pixel up to 0.5, mean power per bin); for a stack
    (N, H, W) the power is (N, bins)."""
    img = np.asarray(image, dtype=np.float64)
    stack = img.reshape((-1, *img.shape[-2:]))
    mean = stack.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(stack.std(axis=(1, 2), keepdims=True), 1e-12)
    height, width = stack.shape[1:]
    window = np.outer(np.hanning(height), np.hanning(width))
    power = np.abs(np.fft.fft2((stack - mean) / std * window)) ** 2 / window.sum() ** 2 \
        * (height * width)
    radius = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]).ravel()
    edges = np.linspace(0.0, 0.5, bins + 1)
    which = np.digitize(radius, edges) - 1
    valid = (which >= 0) & (which < bins) & (radius > 0)
    count = np.maximum(np.bincount(which[valid], minlength=bins), 1)
    flat = power.reshape(len(stack), -1)[:, valid]
    offsets = (which[valid][None, :] + bins * np.arange(len(stack))[:, None]).ravel()
    total = np.bincount(offsets, flat.ravel(), bins * len(stack)).reshape(len(stack), bins)
    spectrum = total / count
    return (edges[:-1] + edges[1:]) / 2.0, spectrum[0] if img.ndim == 2 else spectrum


def spectrum_metrics(freqs: np.ndarray, power: np.ndarray) -> dict[str, float]:
    """Log-log slope over 0.03-0.25 cycles/px and high-to-low frequency power ratio in dB (for
    a (N, bins) power: arrays of N figures)."""
    band = (freqs > SLOPE_BAND[0]) & (freqs < SLOPE_BAND[1])
    logs = np.log10(np.maximum(np.asarray(power, np.float64), 1e-300))
    slope = np.polyfit(np.log10(freqs[band]), logs[..., band].T, 1)[0]
    high = power[..., freqs > HIGH_CUT].mean(axis=-1)
    low = power[..., (freqs > LOW_BAND[0]) & (freqs < LOW_BAND[1])].mean(axis=-1)
    ratio_db = 10 * np.log10(np.maximum(high, 1e-300) / np.maximum(low, 1e-300))
    if np.ndim(power) == 1:
        return {"spectrum_slope": float(slope), "spectrum_high_low_db": float(ratio_db)}
    return {"spectrum_slope": slope, "spectrum_high_low_db": ratio_db}


def robust_std(values: np.ndarray) -> float:
    """The standard deviation of a Gaussian with the values' median absolute deviation
    (1.4826 x MAD): their spread, unmoved by a minority of outliers."""
    values = np.asarray(values)
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def noise_std(image: np.ndarray) -> float | np.ndarray:
    """Robust noise estimate from horizontal neighbour differences, the image's finest
    high-frequency residual (MAD: edges are outliers); one figure per image of a stack."""
    img = np.asarray(image, dtype=np.float64)
    diff = np.diff(img, axis=-1).reshape((-1, img.shape[-2] * (img.shape[-1] - 1)))
    mad = np.median(np.abs(diff - np.median(diff, axis=1, keepdims=True)), axis=1)
    sigma = 1.4826 * mad / np.sqrt(2.0)
    return float(sigma[0]) if img.ndim == 2 else sigma


def affine_intensity_fit(x: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Least-squares (a, b) minimising sum (a x + b - ref)^2 over all pixels (of two images, or
    any two arrays of one shape)."""
    if x.shape != ref.shape or x.size == 0:
        raise ValueError(f"need two images of the same shape, got {x.shape} and {ref.shape}")
    xs, rs = x.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    design = np.column_stack([xs, np.ones(xs.size)])
    (a, b), *_ = np.linalg.lstsq(design, rs, rcond=None)
    return float(a), float(b)
