"""Reference converters the model is compared with: `(osr, ref, **params) -> image`.

`ref` is used only by the oracle (`affine`), which needs the SEM image to fit its map: it is an
upper bound for any purely global intensity mapping, not a deployable method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.signal import fftconvolve

from trainer.evaluation.metrics import affine_intensity_fit
from trainer.sim.optics import optical_psf


def identity(osr: np.ndarray, ref: np.ndarray | None = None, **params: Any) -> np.ndarray:
    """The OSR input unchanged."""
    return osr.astype(np.float32)


def oracle_affine(osr: np.ndarray, ref: np.ndarray | None = None, **params: Any) -> np.ndarray:
    """The input's least-squares linear intensity map a*osr + b onto the reference (fitted per
    image), clipped to [0, 1]."""
    if ref is None:
        raise ValueError("the affine oracle needs the reference image")
    a, b = affine_intensity_fit(osr, ref)
    return np.clip(a * osr.astype(np.float32) + b, 0.0, 1.0).astype(np.float32)


def matched_psf(pixel_size_nm: float) -> tuple[np.ndarray, str]:
    """The simulator's optical PSF (the blur the test pairs were made with) and its name."""
    return optical_psf(pixel_size_nm), "trainer.sim.optics.optical_psf"


def richardson_lucy(osr: np.ndarray, psf: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Richardson-Lucy deconvolution (reflect-padded by the PSF size), clipped to [0, 1]."""
    pad = max(psf.shape)
    observed = np.pad(osr.astype(np.float64), pad, mode="reflect") + 1e-6
    flipped = psf[::-1, ::-1]
    estimate = np.full_like(observed, observed.mean())
    for _ in range(iterations):
        blurred = fftconvolve(estimate, psf, mode="same")
        estimate *= fftconvolve(observed / np.maximum(blurred, 1e-12), flipped, mode="same")
    return np.clip(estimate[pad:-pad, pad:-pad], 0.0, 1.0).astype(np.float32)


def rl_baseline(osr: np.ndarray, ref: np.ndarray | None = None, pixel_size_nm: float = 10.0,
                iterations: int = 30, **params: Any) -> np.ndarray:
    """Richardson-Lucy with the matched PSF (see matched_psf)."""
    psf, _ = matched_psf(pixel_size_nm)
    return richardson_lucy(osr, psf, iterations)


Baseline = Callable[..., np.ndarray]
BASELINES: dict[str, Baseline] = {"identity": identity, "affine": oracle_affine, "rl": rl_baseline}
