"""The one small interface every inference backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """Runs the generator: float32 [N, 1, H, W] in [0, 1] -> the same shape.

    name: "onnxruntime" | "torch" | "tensorrt"; precision: "fp32" | "fp16" | "int8";
    device: where it runs ("cpu", "cuda:0", ...)."""

    name: str
    precision: str
    device: str

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def check_batch(batch: np.ndarray, multiple: int = 4) -> np.ndarray:
    """The batch as contiguous float32 NCHW with one channel and H, W multiples of `multiple`."""
    array = np.asarray(batch)
    if array.ndim != 4 or array.shape[1] != 1 or array.shape[0] < 1:
        raise ValueError(f"expected a batch of shape [N, 1, H, W], got {array.shape}")
    if array.shape[2] % multiple or array.shape[3] % multiple:
        raise ValueError(f"patch height and width must be multiples of {multiple}, "
                         f"got {array.shape[2]}x{array.shape[3]}")
    return np.ascontiguousarray(array, dtype=np.float32)
