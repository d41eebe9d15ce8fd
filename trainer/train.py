"""The training loop: models, optimisers, schedules, validation, checkpoints, resume, DDP.

A run directory holds checkpoints/last.pt (written after every epoch), checkpoints/best.pt (best
validation score), tensorboard/ and metrics.jsonl. Resume restores everything that influences
the next step (weights, optimisers, schedulers, image pools, python/numpy/torch RNG states);
data order and augmentation derive from seed and epoch, so a resumed run is bit-identical to an
uninterrupted one on the same device and thread count.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from edge.errors import UserError
from trainer import distributed
from trainer.data import (
    AugmentedPairs,
    default_preprocessing,
    load_pairs,
    split_pairs,
    to_model_range,
    validation_images,
)
from trainer.evaluation.harness import evaluate_arrays
from trainer.losses import ImagePool
from trainer.models import build_discriminator, build_generator, init_weights
from trainer.presets import TrainConfig
from trainer.steps import cyclegan_step, pix2pix_step
from trainer.warm_start import load_initial_weights

log = logging.getLogger(__name__)


def build_networks(cfg: TrainConfig) -> dict[str, nn.Module]:
    torch.manual_seed(cfg.seed)
    if cfg.model == "cyclegan":
        nets = {"g_ab": build_generator(cfg), "g_ba": build_generator(cfg),
                "d_a": build_discriminator(cfg), "d_b": build_discriminator(cfg)}
    else:
        nets = {"g_ab": build_generator(cfg), "d_b": build_discriminator(cfg, in_channels=2)}
    for net in nets.values():
        init_weights(net)
    return nets


def linear_decay(cfg: TrainConfig) -> Any:
    """Constant learning rate, then linear decay towards 0 over the last decay_fraction epochs."""
    n_decay = round(cfg.epochs * cfg.decay_fraction)
    n_const = cfg.epochs - n_decay
    return lambda epoch: 1.0 - max(0, epoch + 1 - n_const) / float(n_decay + 1)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((pred.astype(np.float64) - ref) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


class Trainer:
    def __init__(self, cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path,
                 device: str = "cpu", register: bool = False, command: str = "",
                 init: str | Path | None = None) -> None:
        self.cfg, self.out = cfg.validated(), Path(out_dir)
        self.data_dir, self.command = Path(data_dir), command
        self.init_source = None if init is None else Path(init)
        self.init_record: dict[str, Any] = {}
        self.info = distributed.setup(device)
        if device == "cuda":
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        preprocess, self.preprocessing = default_preprocessing()
        train_pairs, self.val_pairs = split_pairs(
            load_pairs(self.data_dir, register, preprocess), cfg.val_fraction, cfg.seed)
        self.dataset = AugmentedPairs(train_pairs, cfg)
        self.sampler: DistributedSampler = DistributedSampler(self.dataset, self.info.world_size, self.info.rank,
                                          shuffle=True, seed=cfg.seed)
        self.loader = DataLoader(self.dataset, cfg.batch_size, sampler=self.sampler)
        self.raw = {k: v.to(self.info.device) for k, v in build_networks(cfg).items()}
        self.nets = {k: distributed.wrap(v, self.info) for k, v in self.raw.items()}
        gens = [v for k, v in self.raw.items() if k.startswith("g")]
        discs = [v for k, v in self.raw.items() if k.startswith("d")]
        betas = (cfg.beta1, 0.999)
        self.optims = {
            "g": torch.optim.Adam(itertools.chain(*[g.parameters() for g in gens]), cfg.lr, betas),
            "d": torch.optim.Adam(itertools.chain(*[d.parameters() for d in discs]), cfg.lr, betas),
        }
        self.scheds = {k: torch.optim.lr_scheduler.LambdaLR(o, linear_decay(cfg))
                       for k, o in self.optims.items()}
        pool_size = cfg.pool_size if cfg.model == "cyclegan" else 0
        self.pools = {k: ImagePool(pool_size, cfg.seed * 2 + i) for i, k in enumerate("ab")}
        self.step_fn = cyclegan_step if cfg.model == "cyclegan" else pix2pix_step
        self.epoch, self.step, self.best, self.duration_s = 0, 0, -float("inf"), 0.0
        self.evaluation: dict[str, Any] = {}
        self.writer: Any = None

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "ssum-train-checkpoint", "config": self.cfg.to_dict(),
            "epoch": self.epoch, "step": self.step, "best": self.best,
            "nets": {k: v.state_dict() for k, v in self.raw.items()},
            "optims": {k: v.state_dict() for k, v in self.optims.items()},
            "scheds": {k: v.state_dict() for k, v in self.scheds.items()},
            "pools": {k: v.state_dict() for k, v in self.pools.items()},
            "rng": _rng_state(), "world_size": self.info.world_size,
            "architecture": self.raw["g_ab"].describe(),  # type: ignore[operator]
            "preprocessing": self.preprocessing, "pixel_size_nm": self.cfg.pixel_size_nm,
            "evaluation": self.evaluation,
            "training": {"command": self.command, "data": str(self.data_dir),
                         "data_origin": data_origin(self.data_dir), "seed": self.cfg.seed,
                         "model": self.cfg.model,
                         "epochs": self.epoch, "steps": self.step,
                         "duration_s": round(self.duration_s, 1),
                         "train_pairs": len(self.dataset), "val_pairs": len(self.val_pairs.names),
                         "world_size": self.info.world_size, "init": self.init_record},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state["nets"].items():
            self.raw[k].load_state_dict(v)
        for group, objs in (("optims", self.optims), ("scheds", self.scheds)):
            for k, v in state[group].items():
                objs[k].load_state_dict(v)
        for k, v in state["pools"].items():
            self.pools[k].load_state_dict(v, self.info.device)
        self.epoch, self.step, self.best = state["epoch"], state["step"], state["best"]
        self.evaluation = state.get("evaluation", {})
        self.duration_s = float(state["training"]["duration_s"])
        self.init_record = state["training"].get("init", {})
        _set_rng_state(state["rng"])

    def save(self, name: str) -> Path:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        target = self.checkpoint_dir / name
        tmp = target.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(target)
        return target

    def resume(self) -> bool:
        path = self.checkpoint_dir / "last.pt"
        if not path.is_file():
            log.info("no checkpoint in %s: starting from scratch", self.checkpoint_dir)
            return False
        state = torch.load(path, map_location=self.info.device, weights_only=False)
        saved = TrainConfig.from_dict(state["config"])
        if saved != self.cfg:
            raise UserError(f"{path} was trained with other settings; resume with the same "
                            "options (see config.json in the run folder) or use a new --out")
        self.load_state_dict(state)
        log.info("resumed from %s at epoch %d", path, self.epoch)
        return True

    # -- loop ----------------------------------------------------------------------------------
    def initialize(self) -> None:
        """Load the initial weights (--init) into the networks, before the first epoch."""
        if self.init_source is not None:
            self.init_record = load_initial_weights(self.init_source, self.raw, self.cfg,
                                                    self.dataset.pairs.osr)

    def run(self, resume: bool = False, stop_after_epoch: int | None = None) -> dict[str, Any]:
        if not (resume and self.resume()):
            if (self.checkpoint_dir / "last.pt").exists():
                raise UserError(f"{self.out} already holds a run; pass --resume or choose a new --out")
            self.initialize()
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))
        last = self.cfg.epochs if stop_after_epoch is None else min(stop_after_epoch, self.cfg.epochs)
        try:
            while self.epoch < last:
                self._run_epoch()
        finally:
            if self.writer is not None:
                self.writer.close()
        return {"epoch": self.epoch, "step": self.step, "best": self.best,
                "evaluation": self.evaluation, "checkpoint": str(self.checkpoint_dir / "best.pt")}

    def _run_epoch(self) -> None:
        start = time.monotonic()
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        for net in self.nets.values():
            net.train()

        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", leave=False,
                   disable=not self.info.is_main or not sys.stderr.isatty())
        for batch in bar:
            batch = {k: v.to(self.info.device) for k, v in batch.items()}
            losses = self.step_fn(self.nets, self.optims, self.pools, batch, self.cfg)
            self.step += 1
            bar.set_postfix(g=f"{losses['g_total']:.3f}")
            self._log_scalars("train", losses)
        for sched in self.scheds.values():
            sched.step()  # after the epoch's optimizer steps
        distributed.average_buffers(list(self.raw.values()), self.info)
        self.epoch += 1
        self.duration_s += time.monotonic() - start
        self._end_of_epoch(losses)

    def _end_of_epoch(self, losses: dict[str, float]) -> None:
        validate = self.epoch % self.cfg.val_every == 0 or self.epoch == self.cfg.epochs
        if self.info.is_main:
            record: dict[str, Any] = {"epoch": self.epoch, "step": self.step,
                                      "lr": self.scheds["g"].get_last_lr()[0], **losses}
            if validate:
                metrics, score = self.validate()
                record.update({f"val_{k}": v for k, v in metrics.items()})
                if score > self.best or not (self.checkpoint_dir / "best.pt").exists():
                    self.best, self.evaluation = score, {"epoch": self.epoch, **metrics}
                    self.save("best.pt")
            self.save("last.pt")
            with open(self.out / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            log.info("epoch %d/%d: %s", self.epoch, self.cfg.epochs,
                     ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                               if isinstance(v, float)))
        distributed.barrier(self.info)

    def _log_scalars(self, prefix: str, values: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, self.step)

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """The OSR->SEM generator in eval mode on one [0, 1] image (sides multiples of 4)."""
        generator = self.raw["g_ab"].eval()
        out = generator(to_model_range(image).unsqueeze(0).to(self.info.device))
        return ((out[0, 0].float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)

    def validate(self) -> tuple[dict[str, float], float]:
        """Mean validation metrics over the held-out pairs, and the score that picks best.pt
        (the evaluation harness's PSNR)."""
        images = validation_images(self.val_pairs)
        if not images:
            return {}, -float(self.epoch)  # no held-out data: the latest epoch is "best"
        rows = []
        for i, (_, osr, sem) in enumerate(images):
            pred = self.predict(osr)
            row = {"psnr_db": _psnr(pred, sem), "psnr_input_db": _psnr(osr, sem)}
            extra = evaluate_arrays(pred, osr, sem, self.cfg.pixel_size_nm)
            row.update({f"h_{k}": float(v) for k, v in extra.items()
                        if isinstance(v, (int, float)) and np.isfinite(v)})
            rows.append(row)
            if i == 0 and self.writer is not None and self.epoch % self.cfg.sample_every == 0:
                self.writer.add_image("val/osr_pred_sem", np.concatenate([osr, pred, sem], 1),
                                      self.epoch, dataformats="HW")
        keys = set.intersection(*[set(r) for r in rows])
        metrics = {k: float(np.mean([r[k] for r in rows])) for k in sorted(keys)}
        self._log_scalars("val", metrics)
        score = metrics.get("h_psnr", metrics["psnr_db"])
        return metrics, score


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, device: str = "cpu",
          resume: bool = False, register: bool = False, command: str = "",
          stop_after_epoch: int | None = None, init: str | Path | None = None) -> dict[str, Any]:
    """Train and return a summary; stop_after_epoch ends the run early (as an interruption);
    init: a bundle or checkpoint to start from (trainer/warm_start.py)."""
    trainer = Trainer(cfg, data_dir, out_dir, device, register, command, init)
    try:
        return trainer.run(resume, stop_after_epoch)
    finally:
        distributed.teardown(trainer.info)


def data_origin(data_dir: Path) -> dict[str, Any]:
    """How simulated training data was made (seed, count, size), from its meta.json if any."""
    meta_path = Path(data_dir) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {"source": "user images"}
    keys = ("format", "seed", "n", "size", "pixel_size_nm", "misalign", "domain")
    return {"source": "ssum synth pairs", **{k: meta[k] for k in keys if k in meta}}
