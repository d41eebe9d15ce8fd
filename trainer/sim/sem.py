"""SEM rendering of a layout: material yield, secondary-electron edge effect, probe blur,
charging streaks, shot noise and scan-line noise."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.signal import lfilter

from trainer.sim.layout import MATERIALS, Layout


@dataclass(frozen=True)
class SemParams:
    # secondary-electron yield per material, in output grey levels (0..1)
    material_yield: dict[str, float] = field(
        default_factory=lambda: {"oxide": 0.17, "metal": 0.44, "via": 0.50, "poly": 0.20}
    )
    edge_gain: float = 0.80  # extra yield at a raised edge
    edge_width_nm: float = 18.0  # decay length of the edge brightening into the raised feature
    edge_shadow: float = 0.08  # yield lost at the foot of a raised edge (electrons recaptured)
    probe_sigma_nm: float = 8.0  # Gaussian beam profile
    electrons_per_pixel: float = 600.0  # dose at yield 1: sets the shot noise
    line_offset_std: float = 0.01  # per-scan-line offset (beam/detector drift)
    line_gain_std: float = 0.01  # per-scan-line gain
    # charging: the signal lags along the fast scan (+x), leaving a tail behind every contrast
    # step; its strength varies from line to line
    charging_gain: float = 0.0  # tail height relative to the step (0: no charging)
    charging_length_nm: float = 300.0  # decay length of the tail along the scan line
    charging_line_std: float = 0.5  # relative line-to-line spread of the tail's strength


def yield_map(layout: Layout, params: SemParams) -> np.ndarray:
    """Noise-free, unblurred yield: material contrast plus, for every raised region, the bright
    rim inside its edges and the shadow at its foot."""
    lut = np.array([params.material_yield[name] for name in MATERIALS], np.float32)
    image = lut[layout.material]
    for raised in layout.raised_masks():
        image = image + _rim(raised.astype(np.uint8), layout.pixel_size_nm, params)
    return image.astype(np.float32)


def _rim(top: np.ndarray, pixel_size_nm: float, params: SemParams) -> np.ndarray:
    far = float(sum(top.shape))  # where there is no edge at all, OpenCV returns huge values
    inside_px = np.minimum(cv2.distanceTransform(top, cv2.DIST_L2, 5), far)
    outside_px = np.minimum(cv2.distanceTransform(1 - top, cv2.DIST_L2, 5), far)
    decay = lambda d: np.minimum(np.exp(-(d - 0.5) * pixel_size_nm / params.edge_width_nm), 1.0)
    return np.where(top > 0, params.edge_gain * decay(inside_px), -params.edge_shadow * decay(outside_px))


def render_clean(layout: Layout, params: SemParams | None = None) -> np.ndarray:
    p = params or SemParams()
    sigma_px = p.probe_sigma_nm / layout.pixel_size_nm
    image = yield_map(layout, p)
    if sigma_px > 0.05:
        image = cv2.GaussianBlur(image, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)
    return image


def add_sem_noise(clean: np.ndarray, rng: np.random.Generator, params: SemParams) -> np.ndarray:
    """Poisson shot noise at the given dose, then per-line gain and offset jitter."""
    dose = params.electrons_per_pixel
    noisy = rng.poisson(np.clip(clean, 0, None) * dose).astype(np.float32) / dose
    rows = clean.shape[0]
    gain = 1.0 + rng.normal(0.0, params.line_gain_std, (rows, 1)).astype(np.float32)
    offset = rng.normal(0.0, params.line_offset_std, (rows, 1)).astype(np.float32)
    return noisy * gain + offset


def charging_streaks(clean: np.ndarray, pixel_size_nm: float, rng: np.random.Generator,
                     params: SemParams) -> np.ndarray:
    """The charging tail: the signal low-pass filtered along each scan line (first-order lag of
    `charging_length_nm`) minus the signal, times `charging_gain` and a per-line factor. Bright
    after a bright feature, dark after a dark one, zero on flat areas."""
    a = float(np.exp(-pixel_size_nm / params.charging_length_nm))
    start = clean[:, :1].astype(np.float64) * a
    lagged, _ = lfilter([1.0 - a], [1.0, -a], clean.astype(np.float64), axis=1, zi=start)
    line = np.clip(1.0 + rng.normal(0.0, params.charging_line_std, (clean.shape[0], 1)), 0.0, None)
    return (params.charging_gain * line * (lagged - clean)).astype(np.float32)


def render_sem(
    layout: Layout, rng: np.random.Generator, params: SemParams | None = None
) -> np.ndarray:
    """A noisy SEM image of the layout, float32 in [0, 1]."""
    p = params or SemParams()
    clean = render_clean(layout, p)
    if p.charging_gain:
        clean = clean + charging_streaks(clean, layout.pixel_size_nm, rng, p)
    return np.clip(add_sem_noise(clean, rng, p), 0.0, 1.0).astype(np.float32)
