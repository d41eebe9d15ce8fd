"""Defects of a scan's tiles merged once in mosaic coordinates: a defect seen by two
overlapping tiles, or cut by a tile border, becomes one record."""

from __future__ import annotations

import numpy as np

from edge.inspection.records import Defect


def boxes_near(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    """Whether two (x0, y0, x1, y1) boxes lie within `gap` of each other (or overlap)."""
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def _groups(defects: list[Defect], gap_nm: float) -> list[list[int]]:
    """Indices of defects whose boxes lie within `gap_nm` of each other, transitively."""
    parent = list(range(len(defects)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes = [d.bbox_nm for d in defects]
    for i in range(len(defects)):
        for j in range(i + 1, len(defects)):
            if boxes_near(boxes[i], boxes[j], gap_nm):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(defects)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _union(parts: list[Defect], pixel_size_nm: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The parts' masks on the mosaic grid (pixel (0, 0) at stage (0, 0)), and its corner."""
    corners = [(round(d.bbox_nm[0] / pixel_size_nm), round(d.bbox_nm[1] / pixel_size_nm))
               for d in parts]
    x0, y0 = min(c[0] for c in corners), min(c[1] for c in corners)
    x1 = max(c[0] + d.mask.shape[1] for c, d in zip(corners, parts))
    y1 = max(c[1] + d.mask.shape[0] for c, d in zip(corners, parts))
    union = np.zeros((y1 - y0, x1 - x0), bool)
    for (cx, cy), d in zip(corners, parts):
        union[cy - y0:cy - y0 + d.mask.shape[0], cx - x0:cx - x0 + d.mask.shape[1]] |= d.mask
    return union, (x0, y0)


def _merged(parts: list[Defect]) -> Defect:
    pixel = parts[0].pixel_size_nm
    union, (x0, y0) = _union(parts, pixel)
    ys, xs = np.nonzero(union)
    strongest = max(parts, key=lambda d: d.score)
    largest = max(parts, key=lambda d: d.area_px)
    tx = largest.origin_nm[0] / pixel + largest.thumbnail_origin_px[0]
    ty = largest.origin_nm[1] / pixel + largest.thumbnail_origin_px[1]
    return Defect(x0 + float(xs.mean()), y0 + float(ys.mean()),
                  (x0, y0, x0 + union.shape[1], y0 + union.shape[0]), union,
                  strongest.polarity, largest.defect_class, strongest.score, pixel, (0.0, 0.0),
                  scan_id=parts[0].scan_id,
                  tiles=sorted({t for d in parts for t in d.tiles}),
                  thumbnail=largest.thumbnail, thumbnail_origin_px=(round(tx), round(ty)))


def merge(defects: list[Defect], gap_nm: float) -> list[Defect]:
    """One defect per group of nearby detections, in mosaic coordinates, numbered from 1 in
    order of position (rows, then columns)."""
    if not defects:
        return []
    merged = [_merged([defects[i] for i in group]) for group in _groups(defects, gap_nm)]
    merged.sort(key=lambda d: (round(d.y_nm), round(d.x_nm)))
    for number, defect in enumerate(merged, 1):
        defect.id = number
    return merged


def covered_area(boxes: list[tuple[float, float, float, float]]) -> float:
    """The area of the union of boxes (x0, y0, x1, y1): overlapping tiles count once."""
    if not boxes:
        return 0.0
    xs = sorted({b[0] for b in boxes} | {b[2] for b in boxes})
    ys = sorted({b[1] for b in boxes} | {b[3] for b in boxes})
    covered = np.zeros((len(ys) - 1, len(xs) - 1), bool)
    for x0, y0, x1, y1 in boxes:
        covered[ys.index(y0):ys.index(y1), xs.index(x0):xs.index(x1)] = True
    widths, heights = np.diff(xs), np.diff(ys)
    return float((covered * np.outer(heights, widths)).sum())
