"""The one preprocessing implementation, shared by training, evaluation and serving.

Its parameters travel in the model bundle (`preprocessing` in manifest.json), so the daemon
applies exactly what the model was trained with. Defaults are the identity. Every step works on
local neighbourhoods with fixed parameters, except CLAHE, which equalises per image region (per
tile in the daemon): enable it only if the training data went through it the same way.
No step normalises by the image's own statistics, so patches of one tile agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError

DENOISE = ("none", "gaussian", "bilateral", "nlmeans")


@dataclass(frozen=True)
class PreprocessParams:
    """denoise: none | gaussian | bilateral | nlmeans, with `denoise_strength` (gaussian sigma in
    px; bilateral intensity sigma in 0-1 units x 100; nlmeans h in 0-255 units);
    clahe_clip: CLAHE clip limit, 0 = off (per image, see module doc), clahe_grid: tiles per side;
    unsharp_amount: edge enhancement, 0 = off, unsharp_sigma: its blur sigma in px;
    clip: clip the result to [0, 1]."""

    denoise: str = "none"
    denoise_strength: float = 1.0
    clahe_clip: float = 0.0
    clahe_grid: int = 8
    unsharp_amount: float = 0.0
    unsharp_sigma: float = 1.0
    clip: bool = True

    def __post_init__(self) -> None:
        if self.denoise not in DENOISE:
            raise UserError(f"preprocessing.denoise must be one of {DENOISE}, got {self.denoise!r}")
        for name in ("denoise_strength", "clahe_clip", "unsharp_amount", "unsharp_sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise UserError(f"preprocessing.{name} must be a number >= 0, got {value!r}")
        if isinstance(self.clahe_grid, bool) or not isinstance(self.clahe_grid, int) or self.clahe_grid < 1:
            raise UserError(f"preprocessing.clahe_grid must be an integer >= 1, got {self.clahe_grid!r}")
        if not isinstance(self.clip, bool):
            raise UserError(f"preprocessing.clip must be true or false, got {self.clip!r}")

    def to_dict(self) -> dict[str, Any]:
        """Only the parameters that differ from the identity defaults ({} = no preprocessing)."""
        default = PreprocessParams()
        return {k: v for k, v in asdict(self).items() if v != getattr(default, k)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PreprocessParams:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown preprocessing key(s): {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(known))})")
        return cls(**data)

    @property
    def is_identity(self) -> bool:
        return not self.to_dict()


def preprocess(image: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """float32 [0, 1] 2-D in, float32 out: denoise -> contrast (CLAHE) -> unsharp -> clip."""
    out = np.asarray(image, dtype=np.float32)
    if out.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {out.shape}")
    if params.is_identity:
        return out
    out = _denoise(out, params)
    if params.clahe_clip > 0:
        clahe = cv2.createCLAHE(params.clahe_clip, (params.clahe_grid, params.clahe_grid))
        u16 = np.round(np.clip(out, 0, 1) * 65535).astype(np.uint16)
        out = (clahe.apply(u16) / 65535).astype(np.float32)
    if params.unsharp_amount > 0:
        blurred = cv2.GaussianBlur(out, (0, 0), params.unsharp_sigma, borderType=cv2.BORDER_REFLECT)
        out = out + params.unsharp_amount * (out - blurred)
    return np.clip(out, 0, 1) if params.clip else out


def reach(params: PreprocessParams) -> int | None:
    """How many px around a pixel `preprocess` reads to compute it (a safe bound), so that an
    image can be preprocessed in bands; None with CLAHE, whose regions span the whole image."""
    if params.is_identity:
        return 0
    if params.clahe_clip > 0:
        return None
    s = params.denoise_strength
    radius = {"none": 0, "gaussian": math.ceil(4 * s) + 1, "bilateral": 2,
              "nlmeans": 3 + 10}[params.denoise if s > 0 else "none"]  # OpenCV's window sizes
    if params.unsharp_amount > 0:
        radius += math.ceil(4 * params.unsharp_sigma) + 1
    return radius


def _denoise(image: np.ndarray, params: PreprocessParams) -> np.ndarray:
    s = params.denoise_strength
    if params.denoise == "none" or s == 0:
        return image
    if params.denoise == "gaussian":
        return cv2.GaussianBlur(image, (0, 0), s, borderType=cv2.BORDER_REFLECT)
    if params.denoise == "bilateral":
        return cv2.bilateralFilter(image, 5, s / 100, 2.0, borderType=cv2.BORDER_REFLECT)
    u8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return cv2.fastNlMeansDenoising(u8, None, h=float(s)).astype(np.float32) / 255
