"""A controllable engine for pipeline and daemon tests: a grid tiler and a pixel-inverting
backend that can be slowed down or made to fail, written against the shared Engine contract.

Run as a script (`python tests/edge_standin.py edge run --config F`), it is `ssum` with the
daemon's engine replaced by the stand-in ($STANDIN_DELAY_S slows each inference call down), for
the subprocess test that needs a daemon slower than its stream.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge.imageio import to_float01
from edge.pipeline import Engine


class GridTiler:
    """Non-overlapping P x P patches, edge-padded; merge crops back."""

    def __init__(self, patch: int) -> None:
        self.patch = patch

    def split(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        p = self.patch
        h, w = image.shape
        rows, cols = -(-h // p), -(-w // p)
        padded = np.pad(image, ((0, rows * p - h), (0, cols * p - w)), mode="edge")
        patches = padded.reshape(rows, p, cols, p).transpose(0, 2, 1, 3).reshape(-1, 1, p, p)
        return patches.astype(np.float32), (h, w, rows, cols)

    def merge(self, outputs: np.ndarray, plan: tuple[int, int, int, int]) -> np.ndarray:
        h, w, rows, cols = plan
        p = self.patch
        grid = outputs.reshape(rows, cols, p, p).transpose(0, 2, 1, 3).reshape(rows * p, cols * p)
        return grid[:h, :w]


class InvertBackend:
    """out = 1 - in; optionally slow, or failing on patches whose mean is above `fail_above`."""

    def __init__(self, delay_s: float = 0.0, fail_above: float | None = None) -> None:
        self.name, self.precision, self.device = "standin", "fp32", "cpu"
        self.delay_s = delay_s
        self.fail_above = fail_above
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert batch.ndim == 4 and batch.shape[1] == 1 and batch.dtype == np.float32
        with self._lock:
            self.batch_sizes.append(len(batch))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_above is not None and batch.reshape(len(batch), -1).mean(1).max() > \
                self.fail_above:
            raise RuntimeError("stand-in failure")
        return 1.0 - batch

    def close(self) -> None:
        pass


def standin_engine(patch: int = 32, **backend_options: float) -> Engine:
    return Engine(InvertBackend(**backend_options), GridTiler(patch), to_float01, "standin@000000")


def standin_offline(raw: np.ndarray) -> np.ndarray:
    """What the stand-in engine must produce for a raw tile (float [0, 1])."""
    return 1.0 - to_float01(raw)


def main(argv: list[str]) -> int:
    import edge.daemon
    from edge.cli import main as cli_main

    delay_s = float(os.environ.get("STANDIN_DELAY_S", "0"))
    edge.daemon.build_engine = lambda config: (  # type: ignore[assignment]
        standin_engine(delay_s=delay_s),
        {"name": "standin", "sha256": "0" * 64, "backend": "standin", "precision": "fp32",
         "device": "cpu"},
    )
    return cli_main(argv)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv[1:]))
