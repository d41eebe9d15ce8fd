"""Calibration and hold-out data, prepared exactly as the daemon serves it.

Pairs come from a data folder (D/osr and D/sem, paired by name; user data or `ssum synth`).
A seeded shuffle puts `holdout` pairs aside for the quality gate; calibration patches come only
from the other OSR images: every image is preprocessed with the bundle's parameters and split by
the serving tiler (same patch size, overlap, reflect padding), patches that are nearly empty
(standard deviation below 0.02) are dropped, and `n` patches are drawn at random (seeded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle import Bundle
from edge.errors import UserError
from edge.imageio import list_images, read_image
from edge.preprocess import PreprocessParams, preprocess
from edge.tiling import Tiler

log = logging.getLogger(__name__)

MIN_PATCH_STD = 0.02


@dataclass
class CalibrationData:
    patches: np.ndarray  # [n, 1, P, P] float32, preprocessed
    calibration_names: list[str]
    holdout: list[tuple[str, np.ndarray, np.ndarray]]  # (name, preprocessed OSR, SEM)


def serving_tiler(bundle: Bundle, window: str = "hann") -> Tiler:
    io = bundle.io
    return Tiler(int(io["patch_size"]), int(io["overlap"]), int(io["spatial_multiple"]), window)


def load_calibration_data(bundle: Bundle, data_dir: Path, n_patches: int = 16, holdout: int = 8,
                          seed: int = 0) -> CalibrationData:
    data_dir = Path(data_dir)
    osr_dir, sem_dir = data_dir / "osr", data_dir / "sem"
    if not osr_dir.is_dir():
        raise UserError(f"{data_dir}: expected OSR images in {osr_dir}")
    sem_by_name = {p.stem: p for p in list_images(sem_dir)} if sem_dir.is_dir() else {}
    osr_paths = list_images(osr_dir)
    paired = [p for p in osr_paths if p.stem in sem_by_name]
    if len(paired) < holdout or holdout < 1:
        raise UserError(f"{data_dir}: the quality gate needs {holdout} OSR/SEM pairs paired by "
                        f"name, found {len(paired)}")
    rng = np.random.default_rng(seed)
    held = {p.stem for p in rng.permutation(np.array(paired, dtype=object))[:holdout]}
    calib_paths = [p for p in osr_paths if p.stem not in held]
    if not calib_paths:
        raise UserError(f"{data_dir}: no OSR images left for calibration after {holdout} for the gate")
    params = PreprocessParams.from_dict(bundle.preprocessing)
    tiler = serving_tiler(bundle)
    candidates = []
    for path in calib_paths:
        patches, _ = tiler.split(preprocess(read_image(path), params))
        candidates.append(patches[patches.std(axis=(1, 2, 3)) >= MIN_PATCH_STD])
    pool = np.concatenate(candidates)
    if len(pool) == 0:
        raise UserError(f"{data_dir}: every calibration patch is nearly empty")
    chosen = rng.choice(len(pool), size=min(n_patches, len(pool)), replace=False)
    holdout_pairs = [(p.stem, preprocess(read_image(p), params), read_image(sem_by_name[p.stem]))
                     for p in paired if p.stem in held]
    log.info("calibration: %d patches from %d images; %d pairs held out for the gate",
             len(chosen), len(calib_paths), len(holdout_pairs))
    return CalibrationData(pool[np.sort(chosen)], [p.stem for p in calib_paths], holdout_pairs)
