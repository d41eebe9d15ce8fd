"""Defect records: positions in the image's pixels and on the stage (nm), size, polarity,
class, score, where it was seen (scan, tiles) and a thumbnail crop."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.imaging.imageio import to_uint8
from edge.inspection.classify import CLASSES, classify, patterns
from edge.inspection.components import Region


@dataclass
class Defect:
    """One defect. Pixel positions are in the frame whose pixel (0, 0) lies at stage position
    `origin_nm` (an image, a tile or a scan's mosaic); `mask` covers `bbox_px` (x0, y0, x1,
    y1, half-open); `thumbnail` (uint8) is centred on the defect, its pixel (0, 0) at
    `thumbnail_origin_px` in the same frame."""

    x_px: float
    y_px: float
    bbox_px: tuple[int, int, int, int]
    mask: np.ndarray
    polarity: str
    defect_class: str
    score: float
    pixel_size_nm: float
    origin_nm: tuple[float, float] = (0.0, 0.0)
    id: int = 0
    scan_id: str = ""
    tiles: list[int] = field(default_factory=list)
    thumbnail: np.ndarray | None = None
    thumbnail_origin_px: tuple[int, int] = (0, 0)

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())

    @property
    def area_nm2(self) -> float:
        return self.area_px * self.pixel_size_nm**2

    @property
    def x_nm(self) -> float:
        return self.origin_nm[0] + self.x_px * self.pixel_size_nm

    @property
    def y_nm(self) -> float:
        return self.origin_nm[1] + self.y_px * self.pixel_size_nm

    @property
    def bbox_nm(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.bbox_px
        ox, oy, p = self.origin_nm[0], self.origin_nm[1], self.pixel_size_nm
        return ox + x0 * p, oy + y0 * p, ox + x1 * p, oy + y1 * p

    @property
    def size_nm(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox_px
        return (x1 - x0) * self.pixel_size_nm, (y1 - y0) * self.pixel_size_nm

    @property
    def diameter_nm(self) -> float:
        """The diameter of the disk of the same area (KLARF's DSIZE)."""
        return 2 * math.sqrt(self.area_nm2 / math.pi)

    @property
    def class_number(self) -> int:
        return CLASSES.index(self.defect_class)

    def summary(self) -> dict[str, Any]:
        """The keys of `ssum inspect`'s <stem>.defects.json."""
        return {"id": self.id, "x_px": round(self.x_px, 2), "y_px": round(self.y_px, 2),
                "bbox_px": list(self.bbox_px), "x_nm": round(self.x_nm, 1),
                "y_nm": round(self.y_nm, 1), "area_nm2": round(self.area_nm2, 1),
                "polarity": self.polarity, "class": self.defect_class,
                "score": round(self.score, 3)}

    def record(self) -> dict[str, Any]:
        """Everything but the pixels: the defect message header and the KLARF's JSON."""
        return {**self.summary(), "scan_id": self.scan_id, "tiles": list(self.tiles),
                "bbox_nm": [round(v, 1) for v in self.bbox_nm],
                "size_nm": [round(v, 1) for v in self.size_nm],
                "diameter_nm": round(self.diameter_nm, 1), "class_number": self.class_number,
                "pixel_size_nm": self.pixel_size_nm,
                "origin_nm": [round(v, 3) for v in self.origin_nm]}


def from_record(record: dict[str, Any], pixel_size_nm: float,
                origin_nm: tuple[float, float]) -> Defect:
    """A defect message's record placed in a frame of `pixel_size_nm` whose pixel (0, 0) lies
    at stage `origin_nm` (e.g. a client's mosaic); its mask is its box."""
    ox, oy = origin_nm
    x0, y0, x1, y1 = (float(v) for v in record["bbox_nm"])
    box = (round((x0 - ox) / pixel_size_nm), round((y0 - oy) / pixel_size_nm),
           round((x1 - ox) / pixel_size_nm), round((y1 - oy) / pixel_size_nm))
    mask = np.ones((max(box[3] - box[1], 1), max(box[2] - box[0], 1)), bool)
    return Defect((float(record["x_nm"]) - ox) / pixel_size_nm,
                  (float(record["y_nm"]) - oy) / pixel_size_nm, box, mask,
                  str(record["polarity"]), str(record["class"]), float(record["score"]),
                  pixel_size_nm, origin_nm, id=int(record["id"]),
                  scan_id=str(record.get("scan_id", "")), tiles=list(record.get("tiles", [])))


def thumbnail(image: np.ndarray, x: float, y: float, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A side x side uint8 crop of `image` centred on (x, y), shifted inside the image (smaller
    only when the image is); and its top-left pixel."""
    h, w = image.shape
    x0 = int(min(max(round(x) - side // 2, 0), max(w - side, 0)))
    y0 = int(min(max(round(y) - side // 2, 0), max(h - side, 0)))
    return to_uint8(image[y0:y0 + side, x0:x0 + side]), (x0, y0)


def to_defects(regions: list[Region], image: np.ndarray, matched: tuple[np.ndarray, np.ndarray],
               valid: np.ndarray, pixel_size_nm: float, thumbnail_px: int,
               origin_nm: tuple[float, float] = (0.0, 0.0)) -> list[Defect]:
    """Records of one image's detections, numbered from 1, classified by comparing the
    patterns of the `matched` (image, reference) pair (smoothed, grey levels matched)."""
    found = patterns(matched[0], matched[1], valid)
    defects = []
    for number, region in enumerate(regions, 1):
        crop, corner = thumbnail(image, region.x, region.y, thumbnail_px)
        defect_class, polarity = (region.defect_class, region.polarity) if \
            region.defect_class else classify(region, found)
        defects.append(Defect(region.x, region.y, region.bbox, region.mask, polarity,
                              defect_class, region.score, pixel_size_nm, origin_nm, id=number,
                              thumbnail=crop, thumbnail_origin_px=corner))
    return defects
