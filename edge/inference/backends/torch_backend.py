"""PyTorch backend: the bundle's torch.export program (no trainer import), CUDA when available."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.inference.backends.base import check_batch


class TorchBackend:
    name = "torch"

    def __init__(self, program_path: str | Path, device: str | None = None, fp16: bool = False,
                 threads: int | None = None) -> None:
        import torch  # only when this backend is chosen

        if threads:
            torch.set_num_threads(int(threads))
        if not device:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._torch = torch
        self.torch_device = torch.device(device)
        self.device = str(self.torch_device)
        self.fp16 = bool(fp16 and self.torch_device.type == "cuda")
        self.precision = "fp16" if self.fp16 else "fp32"
        self.module: Any = torch.export.load(str(program_path)).module().to(self.torch_device)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(check_batch(batch)).to(self.torch_device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(
                self.torch_device.type, dtype=torch.float16, enabled=self.fp16):
            y = self.module(x)
        return y.float().cpu().numpy()

    def close(self) -> None:
        self.module = None
