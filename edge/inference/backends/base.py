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


class BoundedBackend:
    """A backend whose calls hold at most `max_pixels` input pixels (at least one patch):
    larger batches run as several calls. The runtime's working memory grows with the pixels of
    one call (ONNX Runtime on the CPU: 0.8 to 1.3 GB per megapixel for the shipped model), and
    the daemon batches by count, so this bounds it whatever the patch size."""

    def __init__(self, inner: Backend, max_pixels: int) -> None:
        self.inner, self.max_pixels = inner, max_pixels
        self.name, self.precision, self.device = inner.name, inner.precision, inner.device

    def infer(self, batch: np.ndarray) -> np.ndarray:
        per_call = max(1, self.max_pixels // max(1, batch.shape[-1] * batch.shape[-2]))
        if len(batch) <= per_call:
            return self.inner.infer(batch)
        return np.concatenate([self.inner.infer(batch[i : i + per_call])
                               for i in range(0, len(batch), per_call)])

    def close(self) -> None:
        self.inner.close()
