"""Structuring elements shared by the simulator's layouts and the inspection's difference."""

from __future__ import annotations

import cv2
import numpy as np


def disk(radius_px: int) -> np.ndarray:
    """A round structuring element of the given radius (1 + 2 * radius_px pixels across)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
