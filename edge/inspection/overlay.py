"""The picture of an inspection: the image with a numbered box around each defect (red: extra
material, blue: missing) and the inspected region outlined (green)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import to_uint8
from edge.inspection.records import Defect

COLOURS = {"extra": (40, 40, 255), "missing": (255, 120, 40)}  # BGR
REGION_COLOUR = (60, 200, 60)
MIN_SIDE = 768
MAX_SIDE = 2048
MARGIN_PX = 4


def draw_overlay(image: np.ndarray, defects: list[Defect],
                 region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A BGR picture; `defects` are in the image's pixel frame, `region` (x0, y0, x1, y1)."""
    scale = min(MAX_SIDE / max(image.shape), max(1.0, MIN_SIDE / max(image.shape)))
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    picture = cv2.cvtColor(cv2.resize(to_uint8(image), size, interpolation=method),
                           cv2.COLOR_GRAY2BGR)
    if region is not None:
        x0, y0, x1, y1 = (round(v * scale) for v in region)
        cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), REGION_COLOUR, 1)
    for defect in defects:
        x0, y0, x1, y1 = defect.bbox_px
        a = (round(x0 * scale) - MARGIN_PX, round(y0 * scale) - MARGIN_PX)
        b = (round(x1 * scale) + MARGIN_PX, round(y1 * scale) + MARGIN_PX)
        colour = COLOURS.get(defect.polarity, (0, 255, 255))
        cv2.rectangle(picture, a, b, colour, 2)
        cv2.putText(picture, str(defect.id), (a[0], max(12, a[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, colour, 1, cv2.LINE_AA)
    return picture


def write_overlay(path: str | Path, image: np.ndarray, defects: list[Defect],
                  region: tuple[int, int, int, int] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), draw_overlay(image, defects, region)):
        raise UserError(f"{path}: cannot write PNG")
    return path
