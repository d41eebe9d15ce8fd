"""Start a training run from earlier weights (`ssum train --init BUNDLE|CHECKPOINT`).

A training checkpoint gives every network it holds (both generators and discriminators; only
the OSR->SEM generator when it was trained as the other model kind). A bundle gives the OSR->SEM
generator only: its generator.pt2 is the exported, BatchNorm-folded network, unfolded into the
trainable one with BatchNorm statistics measured on the run's own training images
(`trainer.models.unfold_batchnorm`). Optimisers, schedules and the epoch count start afresh."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge.errors import UserError
from edge.inference.bundle import MANIFEST, load_bundle
from trainer.augment import center_crop
from trainer.data import to_model_range
from trainer.models import unfold_batchnorm
from trainer.presets import PRESETS, TrainConfig

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 16  # training images whose central crops set an unfolded BatchNorm
CALIBRATION_CROP = 256


def calibration_batch(images: list[np.ndarray], count: int = CALIBRATION_IMAGES,
                      crop: int = CALIBRATION_CROP) -> torch.Tensor:
    """Central crops of the first `count` images, all of one size (multiple of 4, at most
    `crop`), as an (N, 1, H, W) tensor in model range."""
    chosen = images[:count]
    side = min(crop, *(min(img.shape) for img in chosen)) // 4 * 4
    return torch.stack([to_model_range(center_crop(img, 4, side).astype(np.float32))
                        for img in chosen])


def _presets_with(maps: Any, blocks: Any) -> str:
    names = [n for n, p in PRESETS.items() if (p.gen_maps, p.gen_blocks) == (maps, blocks)]
    return f" (preset {' or '.join(names)})" if names else ""


def _architecture_error(source: Path, maps: Any, blocks: Any, cfg: TrainConfig) -> UserError:
    return UserError(
        f"--init {source}: its generator has {maps} maps and {blocks} residual blocks"
        f"{_presets_with(maps, blocks)}, this run's has {cfg.gen_maps} and {cfg.gen_blocks}; "
        "train with the settings the weights were trained with")


def _load_net(net: nn.Module, state: dict[str, torch.Tensor], source: Path, name: str) -> None:
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    if own != theirs:
        raise UserError(f"--init {source}: its {name} has another architecture than this run's "
                        f"({len(own.keys() ^ theirs.keys())} tensors differ in name, "
                        f"{sum(own[k] != theirs[k] for k in own.keys() & theirs.keys())} in shape)")
    net.load_state_dict(state)


def init_from_checkpoint(source: Path, nets: dict[str, nn.Module], cfg: TrainConfig) -> dict[str, Any]:
    state = torch.load(source, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != "ssum-train-checkpoint":
        raise UserError(f"--init {source}: not an ssum training checkpoint or model bundle")
    saved = TrainConfig.from_dict(state["config"])
    if (saved.gen_maps, saved.gen_blocks) != (cfg.gen_maps, cfg.gen_blocks):
        raise _architecture_error(source, saved.gen_maps, saved.gen_blocks, cfg)
    names = [n for n in nets if n in state["nets"] and (saved.model == cfg.model or n == "g_ab")]
    for name in names:
        _load_net(nets[name], state["nets"][name], source, name)
    return {"source": str(source), "kind": "checkpoint", "model": saved.model,
            "epoch": state["epoch"], "loaded": names}


def init_from_bundle(source: Path, generator: nn.Module, cfg: TrainConfig,
                     calibration: torch.Tensor) -> dict[str, Any]:
    bundle = load_bundle(source)
    arch = bundle.manifest.get("architecture") or {}
    if "maps" in arch and (arch["maps"], arch.get("blocks")) != (cfg.gen_maps, cfg.gen_blocks):
        raise _architecture_error(source, arch["maps"], arch.get("blocks"), cfg)
    model = bundle.model("torch_export")
    program = torch.export.load(str(model.path))
    folded = {k.removeprefix("net."): v for k, v in program.state_dict.items()}
    try:
        unfold_batchnorm(generator, folded, calibration)
    except ValueError as exc:
        raise UserError(f"--init {source}: {exc}") from exc
    if bundle.manifest.get("pixel_size_nm") not in (None, cfg.pixel_size_nm):
        log.warning("--init %s was trained at %s nm per pixel, this run's data is at %s nm",
                    source, bundle.manifest["pixel_size_nm"], cfg.pixel_size_nm)
    return {"source": str(source), "kind": "bundle", "bundle": bundle.label(),
            "loaded": ["g_ab"], "calibration_images": int(calibration.shape[0])}


def load_initial_weights(source: str | Path, nets: dict[str, nn.Module], cfg: TrainConfig,
                         osr_images: list[np.ndarray]) -> dict[str, Any]:
    """Load `source` (a bundle folder or a training checkpoint) into `nets`; returns the
    record kept in the run's checkpoints (and so in the bundle exported from it)."""
    path = Path(source)
    if (path / MANIFEST).is_file():
        record = init_from_bundle(path, nets["g_ab"], cfg, calibration_batch(osr_images))
    elif path.is_file():
        record = init_from_checkpoint(path, nets, cfg)
    else:
        raise UserError(f"--init {path}: no such bundle folder or checkpoint file")
    log.info("initial weights from %s %s: %s", record["kind"], path, ", ".join(record["loaded"]))
    return record
