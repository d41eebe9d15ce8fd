"""Fine-tuning on a user's own pairs, measured (`ssum eval --finetune`).

Pairs of the held-out domain (trainer/sim/domain.py: a microscope and chip outside every
randomized range) stand for a user's instrument. For each number of training pairs, the
trainer runs the same number of optimiser steps (the same compute) twice: from the shipped
bundle (`--init`, the recipe's learning rate) and from scratch (the preset's), and each result
is scored on held-out pairs of that domain as `ssum eval --robustness` scores a level: PSNR gain
over the input and over the oracle affine remap, SSIM and the FRC agreement ratio, unregistered
and registered. The starting bundle itself is scored as the zero-pair point."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from trainer.evaluation.harness import write_metrics_json, write_report_files
from trainer.evaluation.robustness import Convert, score_pair, summarize_frames
from trainer.presets import MODELS, from_record
from trainer.sim.domain import holdout_params
from trainer.sim.pairs import make_pair, write_pairs

log = logging.getLogger(__name__)

FINETUNE_VERSION = 1
STARTS = ("bundle", "scratch")


@dataclass(frozen=True)
class FinetuneSettings:
    counts: tuple[int, ...] = (16, 32, 64, 128)  # training pairs per run
    starts: tuple[str, ...] = STARTS
    steps: int = 160  # optimiser steps per run (batch 4 of 128 px crops: the default preset)
    bundle_lr: float = 5e-5  # docs/training.md's fine-tuning recipe
    scratch_lr: float = 2e-4  # the default preset's
    train_seed: int = 71000  # write_pairs seed of the training pairs (nested: n pairs are the
    # first n of the largest set)
    eval_seeds: tuple[int, ...] = (900, 901, 902, 903, 904, 905, 906, 907)  # make_pair seeds
    size: int = 256  # pair side, px
    pixel_size_nm: float = 10.0
    threads: int = 0  # torch CPU threads (0: torch's default)
    preset: str = "default"  # the training preset (architecture of the bundle); tests: tiny
    model: str = "cyclegan"  # the trainer's --model for every run: cyclegan or pix2pix

    def validated(self) -> FinetuneSettings:
        if not self.counts or min(self.counts) < 4:
            raise UserError("--counts: at least one count, each of at least 4 pairs")
        if self.steps < 1:
            raise UserError(f"--steps must be at least 1, not {self.steps}")
        if not self.starts or set(self.starts) - set(STARTS):
            raise UserError(f"--starts: one or both of {', '.join(STARTS)}, not "
                            f"{','.join(self.starts) or '(none)'}")
        if min(self.bundle_lr, self.scratch_lr) <= 0:
            raise UserError("learning rates must be positive")
        if self.model not in MODELS:
            raise UserError(f"--train-model must be one of {', '.join(MODELS)}, not {self.model!r}")
        if not self.eval_seeds:
            raise UserError("fine-tuning needs at least one evaluation seed")
        return self


def eval_pairs(s: FinetuneSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    params = holdout_params()
    return [make_pair(seed, s.size, s.pixel_size_nm, params=params)[:2] for seed in s.eval_seeds]


def score(convert: Convert, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
          pixel_size_nm: float) -> dict[str, Any]:
    return summarize_frames([score_pair(convert, osr, sem, pixel_size_nm) for osr, sem in pairs])


def checkpoint_converter(checkpoint: Path) -> Convert:
    """Whole-image conversion by a checkpoint's OSR->SEM generator (as exported: BatchNorm
    folded, [0, 1] in and out)."""
    import torch

    from trainer.export import generator_from_checkpoint, unit_range_model

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = unit_range_model(generator_from_checkpoint(state))

    def convert(osr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(osr, np.float32))[None, None])
        return out[0, 0].numpy()

    return convert


def train_run(s: FinetuneSettings, data: Path, out: Path, start: str, n: int,
              bundle: Path) -> dict[str, Any]:
    """One training run of s.steps steps; its scores are added by the caller."""
    from trainer.presets import preset
    from trainer.train import train

    per_epoch = math.ceil(n / preset(s.preset).batch_size)
    epochs = max(1, round(s.steps / per_epoch))
    lr = s.bundle_lr if start == "bundle" else s.scratch_lr
    cfg = preset(s.preset, model=s.model, epochs=epochs, lr=lr, val_fraction=0.0, val_every=epochs,
                 sample_every=10**6, seed=n)
    wall, cpu = time.monotonic(), time.process_time()
    summary = train(cfg, data, out, "cpu", command=f"ssum eval --finetune ({start}, {n} pairs)",
                    init=bundle if start == "bundle" else None)
    return {"start": start, "model": s.model, "pairs": n, "epochs": epochs,
            "steps": summary["step"], "lr": lr, "wall_s": time.monotonic() - wall,
            "cpu_s": time.process_time() - cpu, "checkpoint": str(summary["checkpoint"])}


def run_finetune(bundle: Path, out_dir: Path, settings: FinetuneSettings | None = None,
                 bundle_convert: Convert | None = None) -> dict[str, Any]:
    """Every (start, count) run, scored; OUT/runs/<start>-<n>/ holds each run folder and
    OUT/data/n<N>/ the training pairs."""
    import torch

    s = (settings or FinetuneSettings()).validated()
    if s.threads:
        torch.set_num_threads(s.threads)
    out_dir = Path(out_dir)
    pairs = eval_pairs(s)
    report: dict[str, Any] = {"version": FINETUNE_VERSION, "settings": asdict(s),
                              "bundle": str(bundle), "domain": "holdout", "runs": []}
    if bundle_convert is not None:
        report["bundle_scores"] = score(bundle_convert, pairs, s.pixel_size_nm)
    for n in sorted(s.counts):
        data = write_pairs(out_dir / "data" / f"n{n}", n, s.train_seed, s.size, s.pixel_size_nm,
                           domain="holdout")
        for start in (x for x in STARTS if x in s.starts):
            run = train_run(s, data, out_dir / "runs" / f"{start}-{n}", start, n, bundle)
            run["scores"] = score(checkpoint_converter(Path(run["checkpoint"])), pairs,
                                  s.pixel_size_nm)
            log.info("%s, %d pairs: %.2f dB over affine, FRC ratio %.2f, %.0f s", start, n,
                     run["scores"]["unregistered"]["psnr_gain_over_affine"],
                     run["scores"]["unregistered"]["frc_ratio"], run["wall_s"])
            report["runs"].append(run)
            write_metrics_json(report, out_dir / "finetune.json")  # kept current run by run
    return report


def read_study(study: Path) -> dict[str, Any]:
    """STUDY/finetune.json of an earlier `ssum eval --finetune`."""
    import json

    path = Path(study) / "finetune.json"
    try:
        old = json.loads(path.read_text())
        if not isinstance(old["runs"], list) or not isinstance(old["bundle"], str):
            raise TypeError("runs or bundle of the wrong type")
        return old
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--rescore {study}: no readable fine-tuning study there ({exc})") from exc


def rescore(study: Path, eval_seeds: Sequence[int], bundle_convert: Convert | None = None,
            record: dict[str, Any] | None = None) -> dict[str, Any]:
    """A finished study scored again, run by run from each run's checkpoint, on other
    evaluation pairs of the held-out domain: a recipe chosen on one set of pairs is judged on
    pairs it was not chosen on. Training records are kept as they were. record: the study's
    finetune.json as read_study gave it, when already read."""
    old = read_study(study) if record is None else record
    runs = old["runs"]
    try:
        s = replace(from_record(FinetuneSettings, old["settings"]),
                    eval_seeds=tuple(eval_seeds)).validated()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"--rescore {study}: no readable fine-tuning study there ({exc})") from exc
    missing = [r["checkpoint"] for r in runs if not Path(r["checkpoint"]).is_file()]
    if missing:
        raise UserError(f"--rescore {study}: checkpoint(s) missing: {', '.join(missing)}")
    pairs = eval_pairs(s)
    report = {**old, "settings": asdict(s), "rescored_from": str(Path(study) / "finetune.json"),
              "trained_eval_seeds": old["settings"]["eval_seeds"]}
    report.pop("bundle_scores", None)
    if bundle_convert is not None:
        report["bundle_scores"] = score(bundle_convert, pairs, s.pixel_size_nm)
    report["runs"] = [{**run, "scores": score(checkpoint_converter(Path(run["checkpoint"])),
                                              pairs, s.pixel_size_nm)} for run in runs]
    return report


def _cell(summary: dict[str, Any]) -> str:
    return (f"{summary['psnr_gain']:+.2f} | {summary['psnr_gain_over_affine']:+.2f} | "
            f"{summary['ssim']:.3f} | {summary['frc_ratio']:.2f}")


TABLE_HEADER = ("| start | pairs | steps | lr | wall min | CPU min | gain dB | vs affine dB | SSIM "
                "| FRC ratio | gain dB, reg. | vs affine dB, reg. | SSIM reg. | FRC ratio, reg. |")


def format_table(report: dict[str, Any]) -> str:
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    if "bundle_scores" in report:
        b = report["bundle_scores"]
        lines.append(f"| the bundle, as shipped | 0 | 0 | | 0 | 0 | {_cell(b['unregistered'])} "
                     f"| {_cell(b['registered'])} |")
    for run in report["runs"]:
        sc = run["scores"]
        lines.append(f"| {run['start']} | {run['pairs']} | {run['steps']} | {run['lr']:g} "
                     f"| {run['wall_s'] / 60:.1f} "
                     f"| {run['cpu_s'] / 60:.1f} | {_cell(sc['unregistered'])} "
                     f"| {_cell(sc['registered'])} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path:
    """PSNR gain over the oracle affine remap and FRC ratio against pairs (unregistered: the
    edge-strength registration fails on some of this domain's pairs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for start, colour in zip(STARTS, ("tab:blue", "tab:orange"), strict=True):
        runs = sorted((r for r in report["runs"] if r["start"] == start), key=lambda r: r["pairs"])
        x = [r["pairs"] for r in runs]
        reg = [r["scores"]["unregistered"] for r in runs]
        left.plot(x, [v["psnr_gain_over_affine"] for v in reg], "-o", color=colour, label=start)
        right.plot(x, [v["frc_ratio"] for v in reg], "-o", color=colour, label=start)
    for ax, what in ((left, "PSNR over oracle affine, dB"), (right, "FRC ratio (model / input)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training pairs")
        ax.set_ylabel(what, fontsize=8)
        ax.legend(fontsize=7)
    left.axhline(0.0, color="black", linewidth=0.7)
    right.axhline(1.0, color="black", linewidth=0.7)
    fig.suptitle("held-out domain, unregistered, same steps per run", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_finetune(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """OUT/finetune.json, OUT/finetune.md (the table) and OUT/finetune.png."""
    s = report["settings"]
    text = (f"Held-out domain; {len(s['eval_seeds'])} evaluation pairs of {s['size']} px (seeds "
            f"{', '.join(map(str, s['eval_seeds']))}); {s['steps']} steps per run of "
            f"{s.get('model', 'cyclegan')} ({s['preset']} preset); from the bundle at lr "
            f"{s['bundle_lr']:g}, from scratch at {s['scratch_lr']:g}. Gains are PSNR over the "
            "input's and over the oracle affine remap's; FRC ratio = model FRC / input FRC "
            "against the SEM.\n\n"
            + format_table(report) + "\n")
    if "rescored_from" in report:
        text = (f"The runs of {report['rescored_from']} (chosen on evaluation seeds "
                f"{', '.join(map(str, report['trained_eval_seeds']))}), scored again. " + text)
    return write_report_files(report, out_dir, "finetune", text, plot if report["runs"] else None)
