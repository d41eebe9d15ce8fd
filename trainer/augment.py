"""The paper's augmentation: flips, rotations (30/45/60/90 deg) cropped to the valid region,
scaling. One random draw is applied identically to both images of a pair."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Transform:
    flip_h: bool
    flip_v: bool
    angle_deg: float
    scale: float
    center_frac: tuple[float, float]  # where the crop centre lies within its allowed range


def draw_transform(rng: np.random.Generator, rotations: tuple[float, ...],
                   scale_range: tuple[float, float]) -> Transform:
    lo, hi = scale_range
    scale = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return Transform(bool(rng.integers(2)), bool(rng.integers(2)),
                     float(rotations[rng.integers(len(rotations))]), scale,
                     (float(rng.random()), float(rng.random())))


def apply_transform(image: np.ndarray, t: Transform, crop: int) -> np.ndarray:
    """A crop x crop patch of the flipped, rotated and scaled image, sampling only real pixels.

    The source footprint of the output patch is a rotated square; its centre is placed where the
    whole footprint lies inside the image. When the image is too small for the drawn scale, the
    scale is raised (zoom in) until the footprint fits.
    """
    if t.flip_h:
        image = image[:, ::-1]
    if t.flip_v:
        image = image[::-1, :]
    h, w = image.shape
    theta = math.radians(t.angle_deg)
    spread = abs(math.cos(theta)) + abs(math.sin(theta))
    needed = (crop - 1) * spread  # source extent of the footprint at scale 1
    scale = max(t.scale, needed / max(min(h, w) - 2, 1))
    half = needed / scale / 2
    cy = half + t.center_frac[0] * max(h - 1 - 2 * half, 0.0)
    cx = half + t.center_frac[1] * max(w - 1 - 2 * half, 0.0)
    cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
    c = (crop - 1) / 2
    # maps output (x, y) to source (x, y): rotate and scale about the patch centre
    matrix = np.array([[cos, -sin, cx - cos * c + sin * c],
                       [sin, cos, cy - sin * c - cos * c]], dtype=np.float64)
    return cv2.warpAffine(np.ascontiguousarray(image, dtype=np.float32), matrix, (crop, crop),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def center_crop(image: np.ndarray, multiple: int = 4, size: int | None = None) -> np.ndarray:
    """Central crop to `size` (or the largest size) whose sides are multiples of `multiple`."""
    h, w = image.shape
    th = min(h, size or h) // multiple * multiple
    tw = min(w, size or w) // multiple * multiple
    y0, x0 = (h - th) // 2, (w - tw) // 2
    return image[y0:y0 + th, x0:x0 + tw]
