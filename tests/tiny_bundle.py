"""A small real model bundle for tests: the project's generator with 8 maps and one residual
block, non-trivial BatchNorm statistics, exported by the trainer's own export (ONNX + torch.export).
The trusted variant also carries a reverse (SEM->OSR) generator of the same kind and the trust
statistics of simulated pairs (TRUST_PAIRS of TRUST_SIZE px, seeds from TRUST_SEED)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_CACHE: dict[tuple[int, bool], Path] = {}
PATCH_SIZE = 128
TRUST_PAIRS, TRUST_SIZE, TRUST_SEED = 24, 128, 900


def _generator(seed: int):
    import torch

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
    return generator.eval()


def _build(seed: int, out_dir: Path, trusted: bool) -> Path:
    from trainer.export import export_bundle, record_statistics
    from trainer.sim.pairs import write_pairs

    name = f"tiny-{seed}" + ("-trusted" if trusted else "")
    bundle = export_bundle(_generator(seed), out_dir, name, pixel_size_nm=10.0,
                           preprocessing={}, patch_size=PATCH_SIZE,
                           reverse=_generator(seed + 1000) if trusted else None)
    if trusted:
        pairs = write_pairs(out_dir.parent / "pairs", TRUST_PAIRS, TRUST_SEED, TRUST_SIZE)
        record_statistics(bundle, pairs)
    return bundle


def make_tiny_bundle(out_dir: Path, seed: int = 0, trusted: bool = False) -> Path:
    """Copy of a cached tiny bundle in out_dir (built once per process, seed and variant)."""
    key = (seed, trusted)
    if key not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix=f"ssum-tiny-{seed}-"))
        _CACHE[key] = _build(seed, root / "bundle", trusted)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(_CACHE[key], out_dir)
    return out_dir
