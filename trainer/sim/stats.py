"""Image statistics for comparing simulated SEM images with real ones: grey-level histogram,
noise, edge profile, radial power spectrum and narrowest line width."""

from __future__ import annotations

import cv2
import numpy as np

from edge.imaging.statistics import noise_std, radial_power_spectrum, spectrum_metrics

EDGE_HALF_WINDOW = 12


def two_class_mask(image: np.ndarray) -> np.ndarray:
    """Bright (True) vs dark pattern, by Otsu's threshold on a median-filtered copy."""
    smooth = cv2.medianBlur(np.round(image * 255).astype(np.uint8), 5)
    _, mask = cv2.threshold(smooth, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return mask.astype(bool)


def _runs(mask_rows: np.ndarray) -> np.ndarray:
    """Lengths of True runs along each row that touch neither end of the row."""
    padded = np.pad(mask_rows.astype(np.int8), ((0, 0), (1, 1)))
    d = np.diff(padded, axis=1)
    lengths = []
    for row_d in d:
        starts, ends = np.flatnonzero(row_d == 1), np.flatnonzero(row_d == -1)
        keep = (starts > 0) & (ends < mask_rows.shape[1])
        lengths.append(ends[keep] - starts[keep])
    return np.concatenate(lengths) if lengths else np.zeros(0, int)


def narrowest_width_px(mask: np.ndarray, percentile: float = 10.0) -> float:
    """A low percentile of the run lengths of `mask` along rows and columns."""
    runs = np.concatenate([_runs(mask), _runs(mask.T)])
    return float(np.percentile(runs, percentile)) if runs.size else float("nan")


def edge_profile(image: np.ndarray, mask: np.ndarray, half: int = EDGE_HALF_WINDOW) -> np.ndarray:
    """Mean grey-level profile across dark-to-bright edges (along rows and columns, oriented so
    the dark side comes first), centred on the mask transition."""
    profiles = []
    for img, m in ((image, mask), (image.T, mask.T)):
        for flip in (False, True):
            a, mm = (img[:, ::-1], m[:, ::-1]) if flip else (img, m)
            ys, xs = np.nonzero(~mm[:, :-1] & mm[:, 1:])
            ok = (xs >= half) & (xs + half + 1 < a.shape[1])
            ys, xs = ys[ok], xs[ok]
            # only clean edges: the mask is constant over the window on each side
            idx = xs[:, None] + np.arange(-half + 1, half + 1)[None, :]
            side = mm[ys[:, None], idx]
            clean = (~side[:, :half]).all(1) & side[:, half:].all(1)
            if clean.any():
                profiles.append(a[ys[clean][:, None], idx[clean]])
    if not profiles:
        return np.full(2 * half, np.nan)
    return np.concatenate(profiles).astype(np.float64).mean(axis=0)


def edge_metrics(profile: np.ndarray) -> dict[str, float]:
    """Rim height (relative to the step), rim FWHM and 10-90 % rise width, in pixels."""
    half = len(profile) // 2
    dark = float(np.median(profile[:4]))
    bright = float(np.median(profile[-4:]))
    peak_i = int(np.argmax(profile))
    peak = float(profile[peak_i])
    step = max(bright - dark, 1e-6)
    rise = profile[: peak_i + 1]
    lo, hi = dark + 0.1 * (peak - dark), dark + 0.9 * (peak - dark)
    rise_px = float(np.interp(hi, rise, np.arange(len(rise))) - np.interp(lo, rise, np.arange(len(rise))))
    level = (peak + bright) / 2.0
    above = np.flatnonzero(profile >= level)
    fwhm = float(above.max() - above.min() + 1) if above.size else 0.0
    return {
        "edge_rim_height": (peak - bright) / step,
        "edge_rim_fwhm_px": fwhm,
        "edge_rise_10_90_px": rise_px,
        "edge_peak_offset_px": float(peak_i - half),
    }


def image_stats(image: np.ndarray) -> dict[str, float]:
    """All comparison figures for one float image in [0, 1]."""
    mask = two_class_mask(image)
    p1, p50, p99 = np.percentile(image, [1, 50, 99])
    stats = {
        "p1": float(p1),
        "p50": float(p50),
        "p99": float(p99),
        "dark_level": float(np.median(image[~mask])) if (~mask).any() else float("nan"),
        "bright_level": float(np.median(image[mask])) if mask.any() else float("nan"),
        "dark_fraction": float((~mask).mean()),
        "noise_std": float(noise_std(image)),
        "narrowest_dark_px": narrowest_width_px(~mask),
        "narrowest_bright_px": narrowest_width_px(mask),
    }
    stats.update(edge_metrics(edge_profile(image, mask)))
    stats.update(spectrum_metrics(*radial_power_spectrum(image)))
    return stats
