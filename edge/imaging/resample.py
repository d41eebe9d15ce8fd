"""Resampling images between pixel sizes."""

from __future__ import annotations

import cv2
import numpy as np

from edge.errors import UserError


def rescale_to_pixel_size(image: np.ndarray, from_nm: float, to_nm: float) -> np.ndarray:
    """Resample from one pixel size to another (area averaging down, cubic up)."""
    if from_nm <= 0 or to_nm <= 0:
        raise UserError(f"pixel sizes must be positive, got {from_nm} and {to_nm}")
    factor = from_nm / to_nm
    if abs(factor - 1) < 1e-9:
        return np.asarray(image, dtype=np.float32)
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return resize(image, (size[1], size[0]))


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize to size (square side, or (height, width)): area when shrinking, cubic when growing."""
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise UserError(f"resize target must be positive, got {height}x{width}")
    image = np.asarray(image, dtype=np.float32)
    shrink = height * width < image.shape[0] * image.shape[1]
    method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = cv2.resize(image, (width, height), interpolation=method)
    return np.clip(out, 0, 1) if not shrink else out
