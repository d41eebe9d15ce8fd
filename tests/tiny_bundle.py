"""A small real model bundle for tests: the project's generator with 8 maps and one residual
block, non-trivial BatchNorm statistics, exported by the trainer's own export (ONNX + torch.export)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_CACHE: dict[int, Path] = {}
PATCH_SIZE = 128


def _build(seed: int, out_dir: Path) -> Path:
    import torch

    from trainer.export import export_bundle
    from trainer.models import Generator

    torch.manual_seed(seed)
    generator = Generator(maps=8, blocks=1)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return export_bundle(generator.eval(), out_dir, f"tiny-{seed}", pixel_size_nm=10.0,
                         preprocessing={}, patch_size=PATCH_SIZE)


def make_tiny_bundle(out_dir: Path, seed: int = 0) -> Path:
    """Copy of a cached tiny bundle in out_dir (built once per process and seed)."""
    if seed not in _CACHE:
        _CACHE[seed] = _build(seed, Path(tempfile.mkdtemp(prefix=f"ssum-tiny-{seed}-")) / "bundle")
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(_CACHE[seed], out_dir)
    return out_dir
