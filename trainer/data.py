"""Paired OSR/SEM image folders as training data: loading, optional registration, shared
preprocessing, a seeded train/validation split, and seeded per-epoch augmentation."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edge.errors import UserError
from edge.imaging.focus import fuse_file
from edge.imaging.imageio import is_stack, list_images, read_image
from edge.imaging.registration import MIN_REGISTERED_SHARE, align_pair
from edge.inference.preprocess import PreprocessParams, preprocess
from trainer.augment import apply_transform, center_crop, draw_transform

log = logging.getLogger(__name__)


@dataclass
class PairSet:
    names: list[str]
    osr: list[np.ndarray]
    sem: list[np.ndarray]

    def subset(self, indices: list[int]) -> PairSet:
        return PairSet([self.names[i] for i in indices], [self.osr[i] for i in indices],
                       [self.sem[i] for i in indices])


def default_preprocessing() -> tuple[Any, dict[str, Any]]:
    """The shared preprocessing function and its (identity) parameters as a dict."""
    params = PreprocessParams()
    return (lambda image: preprocess(image, params)), params.to_dict()


def _pair_paths(data_dir: Path) -> list[tuple[str, Path, Path]]:
    osr_dir, sem_dir = data_dir / "osr", data_dir / "sem"
    if not osr_dir.is_dir() or not sem_dir.is_dir():
        raise UserError(f"{data_dir}: expected the folders osr/ and sem/ with images paired by name")
    sem_by_stem = {p.stem: p for p in list_images(sem_dir)}
    inputs = _osr_inputs(osr_dir)
    pairs = [(p.stem, p, sem_by_stem[p.stem]) for p in inputs if p.stem in sem_by_stem]
    if not pairs:
        raise UserError(f"{data_dir}: no OSR/SEM pairs with the same file name in osr/ and sem/")
    unpaired = len(inputs) - len(pairs)
    if unpaired:
        log.warning("%d images in %s have no SEM partner and are skipped", unpaired, osr_dir)
    return sorted(pairs)


def _osr_inputs(osr_dir: Path) -> list[Path]:
    """The OSR images, and the z-stacks (folders of planes) beside them."""
    return list_images(osr_dir) + sorted(p for p in osr_dir.iterdir() if p.is_dir())


def read_osr(path: Path) -> np.ndarray:
    """An OSR input: an image, or a z-stack (a multi-page TIFF or a folder of planes) fused
    into one all-in-focus image by the daemon's own fusion."""
    return fuse_file(path).image if is_stack(path) else read_image(path)


def load_pairs(data_dir: str | Path, register: bool = False, preprocess: Any = None) -> PairSet:
    """Read every pair (fusing z-stacks); with register, align each OSR image to its SEM image
    first. A registration that keeps less than MIN_REGISTERED_SHARE of the SEM image has locked
    onto a wrong period of a repeating pattern (or onto nothing): that pair is skipped with a
    warning, not trained on shifted by a period."""
    names, osr_list, sem_list = [], [], []
    skipped = []
    for name, osr_path, sem_path in _pair_paths(Path(data_dir)):
        osr, sem = read_osr(osr_path), read_image(sem_path)
        if register:
            full = sem.size
            osr, sem, _ = align_pair(osr, sem)
            if sem.size < MIN_REGISTERED_SHARE * full:
                log.warning("pair %s: registration kept %.0f %% of the image (a wrong lock): "
                            "skipped", name, 100 * sem.size / full)
                skipped.append(name)
                continue
        if osr.shape != sem.shape:
            raise UserError(f"pair {name}: OSR {osr.shape} and SEM {sem.shape} differ in size "
                            "(use --register to align and crop them)")
        if preprocess is not None:
            osr, sem = preprocess(osr), preprocess(sem)
        names.append(name)
        osr_list.append(np.asarray(osr, np.float32))
        sem_list.append(np.asarray(sem, np.float32))
    if not names:
        raise UserError(f"{data_dir}: no pair could be registered ({len(skipped)} tried); "
                        "train without --register")
    return PairSet(names, osr_list, sem_list)


def split_pairs(pairs: PairSet, val_fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    """Seeded split; at least one training pair, and one validation pair when there are two."""
    n = len(pairs.names)
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_val = min(max(round(n * val_fraction), 1 if n > 1 and val_fraction > 0 else 0), n - 1)
    return pairs.subset(sorted(order[n_val:].tolist())), pairs.subset(sorted(order[:n_val].tolist()))


def data_pixel_size(data_dir: str | Path) -> float | None:
    """pixel_size_nm from a JSON file at the top of the data folder, if one records it."""
    for path in sorted(Path(data_dir).glob("*.json")):
        try:
            value = json.loads(path.read_text()).get("pixel_size_nm")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, (int, float)):
            return float(value)
    return None


def to_model_range(image: np.ndarray) -> torch.Tensor:
    """[0, 1] numpy image -> [-1, 1] tensor of shape (1, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(image) * 2.0 - 1.0).unsqueeze(0)


class AugmentedPairs(Dataset):
    """Item i: OSR image i and its SEM partner (same transform), plus an unpaired SEM image.

    Everything random derives from (seed, epoch, index): data order and augmentation are the
    same however the run is interrupted, resumed, or spread over workers and ranks.
    """

    def __init__(self, pairs: PairSet, cfg: Any) -> None:
        for name, image in zip(pairs.names, pairs.osr):
            if min(image.shape) < cfg.crop:
                raise UserError(f"pair {name}: {image.shape} is smaller than --crop {cfg.crop}")
        self.pairs, self.cfg, self.epoch = pairs, cfg, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs.names)

    def _augment(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        t = draw_transform(rng, self.cfg.rotations, self.cfg.scale_range)
        return to_model_range(apply_transform(image, t, self.cfg.crop))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        seed = [self.cfg.seed, self.epoch, index]
        other = int(np.random.default_rng(seed + [1]).integers(len(self)))
        transform = draw_transform(np.random.default_rng(seed + [0]), self.cfg.rotations,
                                   self.cfg.scale_range)
        return {
            "osr": to_model_range(apply_transform(self.pairs.osr[index], transform, self.cfg.crop)),
            "sem_paired": to_model_range(apply_transform(self.pairs.sem[index], transform,
                                                         self.cfg.crop)),
            "sem": self._augment(self.pairs.sem[other], np.random.default_rng(seed + [2])),
        }


def validation_images(pairs: PairSet, max_size: int = 512) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Central crops (multiples of 4, at most max_size) of each validation pair."""
    return [(n, center_crop(o, 4, max_size), center_crop(s, 4, max_size))
            for n, o, s in zip(pairs.names, pairs.osr, pairs.sem)]
