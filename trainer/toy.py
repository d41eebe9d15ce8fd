"""Toy OSR/SEM pairs (rectangles; OSR = blurred, noisy SEM) for tests and smoke runs.

Not a simulator: trainer.sim makes realistic pairs. This only gives the trainer something
learnable in seconds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.imaging.imageio import write_tiff16


def toy_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    sem = np.full((size, size), 0.2, np.float32)
    for _ in range(6):
        y, x = rng.integers(0, size - 4, 2)
        h, w = rng.integers(3, max(size // 3, 4), 2)
        sem[y:y + h, x:x + w] = 0.8
    osr = cv2.GaussianBlur(sem, (0, 0), 2.0) + rng.normal(0, 0.02, sem.shape).astype(np.float32)
    return np.clip(osr, 0.0, 1.0), sem


def write_toy_pairs(out: str | Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """n pairs as 16-bit TIFFs in out/osr and out/sem, same file names."""
    out, rng = Path(out), np.random.default_rng(seed)
    for sub in ("osr", "sem"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        osr, sem = toy_pair(rng, size)
        write_tiff16(out / "osr" / f"pair_{i:03d}.tif", osr)
        write_tiff16(out / "sem" / f"pair_{i:03d}.tif", sem)
    return out
