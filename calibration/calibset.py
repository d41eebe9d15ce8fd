"""Calibration and hold-out data, prepared exactly as the daemon serves it.

Pairs come from a data folder (D/osr and D/sem, paired by name; user data or `ssum synth`).
A seeded shuffle puts `holdout` pairs aside for the quality gate; calibration patches come only
from the other OSR images: every image is preprocessed and split by the serving converter (the
bundle's preprocessing, patch size, overlap, reflect padding), patches that are nearly empty
(standard deviation below 0.02) are dropped, and `n` patches are drawn at random (seeded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import list_images, read_image
from edge.inference.converter import Converter

log = logging.getLogger(__name__)

MIN_PATCH_STD = 0.02


@dataclass
class CalibrationData:
    patches: np.ndarray  # [n, 1, P, P] float32, preprocessed
    calibration_names: list[str]
    holdout: list[tuple[str, np.ndarray, np.ndarray]]  # (name, OSR, SEM) as read

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[-1])


def load_calibration_data(converter: Converter, data_dir: Path, n_patches: int = 16,
                          holdout: int = 8, seed: int = 0) -> CalibrationData:
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
    candidates = []
    for path in calib_paths:
        patches, _ = converter.tiler.split(converter.prepare(read_image(path)))
        candidates.append(patches[patches.std(axis=(1, 2, 3)) >= MIN_PATCH_STD])
    pool = np.concatenate(candidates)
    if len(pool) == 0:
        raise UserError(f"{data_dir}: every calibration patch is nearly empty")
    chosen = rng.choice(len(pool), size=min(n_patches, len(pool)), replace=False)
    holdout_pairs = [(p.stem, read_image(p), read_image(sem_by_name[p.stem]))
                     for p in paired if p.stem in held]
    log.info("calibration: %d patches from %d images; %d pairs held out for the gate",
             len(chosen), len(calib_paths), len(holdout_pairs))
    return CalibrationData(pool[np.sort(chosen)], [p.stem for p in calib_paths], holdout_pairs)
