"""`ssum eval`: metrics of predictions and baselines against SEM references, and a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.errors import UserError
from edge.inspection.settings import InspectionSettings
from trainer.evaluation.harness import evaluate_sets
from trainer.evaluation.report import format_table, summary_rows
from trainer.evaluation.robustness import FACTOR_NAMES, RobustnessSettings

DEFAULT_PIXEL_NM = 10.0
INSPECTION_SEEDS = "200-223"
STACK_SEEDS = "300-311"
ROBUSTNESS_SEEDS = ",".join(str(s) for s in RobustnessSettings().seeds)
ROBUSTNESS_SIZE = RobustnessSettings().size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="pairs folder: DATA/osr and DATA/sem (+ DATA/meta.json)")
    parser.add_argument("--input", type=Path, help="folder of OSR input images")
    parser.add_argument("--ref", type=Path, help="folder of SEM reference images (same file names)")
    parser.add_argument("--pred", type=Path, help="folder of converted images (method 'model')")
    parser.add_argument("--baselines", default="identity,affine,rl",
                        help="comma-separated: identity, affine (oracle), rl (Richardson-Lucy); "
                             "'none' for none (default identity,affine,rl)")
    parser.add_argument("--pixel-size", type=float,
                        help=f"nm per pixel (default: DATA/meta.json, else {DEFAULT_PIXEL_NM:g})")
    parser.add_argument("--out", type=Path, default=Path("eval"), help="output folder (default ./eval)")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N pairs")
    parser.add_argument("--register", action="store_true",
                        help="register each input to its reference first (one affine transform per "
                             "pair, applied to every method) and score in the reference's frame")
    group = parser.add_argument_group("inspection (--inspection: simulated defects, no --data)")
    group.add_argument("--inspection", action="store_true",
                       help="score defect inspection on simulated cases with injected defects: "
                            "raw OSR vs converted (alone and confirmed by the raw image) vs SEM "
                            "(writes OUT/inspection.json)")
    group.add_argument("--seeds", default=None,
                       help=f"case seeds, e.g. 200-223 or 200,205 (default {INSPECTION_SEEDS}, "
                            f"held out; with --robustness: pair seeds, default {ROBUSTNESS_SEEDS}; "
                            f"with --stacks: scene seeds, default {STACK_SEEDS})")
    group.add_argument("--bundle", type=Path, help="model bundle (default: models/default)")
    group.add_argument("--rates", default=f"{InspectionSettings().false_alarm_rate:g}",
                       help="comma-separated false-alarm rates to score (default: the "
                            "inspection default)")
    group.add_argument("--confirm-rate", type=float,
                       default=InspectionSettings().confirm_rate,
                       help="false-alarm rate of the raw difference that confirms converted "
                            "detections (default %(default)g)")
    group.add_argument("--modes", default="golden,database,cell",
                       help="reference modes to score (default golden,database,cell; cell is "
                            "scored on arrays: one unit repeated over the die)")
    stacks = parser.add_argument_group("z-stacks (--stacks: simulated multilayer stacks, no "
                                       "--data; takes --seeds, --bundle)")
    stacks.add_argument("--stacks", action="store_true",
                        help="score focus-stack fusion before conversion: best single plane vs "
                             "fused tile, converted, and the height map (writes OUT/stacks.json)")
    stacks.add_argument("--planes", type=int, default=7, help="planes per stack (default 7)")
    stacks.add_argument("--plane-bundle", type=Path, default=None,
                        help="convert the single planes with this bundle instead of --bundle "
                             "(each arm with the model trained on its kind of input)")
    tune = parser.add_argument_group(
        "fine-tuning (--finetune: training runs on a held-out simulated domain, no --data; "
        "takes --bundle, --seeds (evaluation pairs), --size)")
    tune.add_argument("--finetune", action="store_true",
                      help="train from the bundle and from scratch on N pairs of the held-out "
                           "domain, the same steps each, and score both on held-out pairs "
                           "(writes OUT/finetune.json, .md and .png; hours of CPU)")
    tune.add_argument("--counts", default=None, help="comma-separated training pair counts "
                                                     "(default 16,32,64,128)")
    tune.add_argument("--steps", type=int, default=None,
                      help="optimiser steps per run (default 160)")
    tune.add_argument("--starts", default=None,
                      help="bundle, scratch or both (default bundle,scratch)")
    tune.add_argument("--bundle-lr", type=float, default=None,
                      help="learning rate of the runs from the bundle (default 5e-5, the recipe's "
                           "for a microscope close to the simulator)")
    tune.add_argument("--train-model", default=None,
                      help="the trainer's --model for every run: cyclegan or pix2pix (default "
                           "cyclegan)")
    tune.add_argument("--rescore", type=Path, default=None, metavar="STUDY",
                      help="no training: score the runs of an earlier study (STUDY/finetune.json) "
                           "and the bundle on the evaluation pairs --seeds, into --out")
    tune.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    robust = parser.add_argument_group(
        "robustness (--robustness: simulated pairs over a grid of microscope conditions, no --data)")
    robust.add_argument("--robustness", action="store_true",
                        help="score the bundle (--bundle) on fresh simulated pairs (--seeds), one "
                             "factor varied at a time around the narrow domain (writes "
                             "OUT/robustness.json, .md and .png)")
    robust.add_argument("--size", type=int, default=None,
                        help=f"pair side in px (default {ROBUSTNESS_SIZE})")
    robust.add_argument("--trust", action="store_true",
                        help="also judge every grid tile with the bundle's trust score: AUROC "
                             "for tiles the model harmed vs helped (writes OUT/trust.json); "
                             "with --data instead of --robustness: the same on those pairs")
    robust.add_argument("--invert-input", action="store_true",
                        help="convert 1 - x, as for a microscope whose materials show in the "
                             "reverse order of brightness (docs/conversion.md#input-polarity)")
    robust.add_argument("--factors", default=None,
                        help=f"comma-separated subset of {','.join(FACTOR_NAMES)} (default all)")


def _pixel_size_from_meta(data: Path | None) -> float | None:
    meta = data / "meta.json" if data is not None else None
    if meta is None or not meta.is_file():
        return None
    try:
        return float(json.loads(meta.read_text())["pixel_size_nm"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{meta}: no readable pixel_size_nm ({exc})") from exc


def resolve_folders(args: argparse.Namespace) -> tuple[Path, Path]:
    inp = args.input or (args.data / "osr" if args.data else None)
    ref = args.ref or (args.data / "sem" if args.data else None)
    if inp is None or ref is None:
        raise UserError("give --data D (D/osr and D/sem) or both --input and --ref")
    for role, folder in (("input", inp), ("reference", ref), ("prediction", args.pred)):
        if folder is not None and not folder.is_dir():
            raise UserError(f"{role} folder {folder} does not exist")
    return inp, ref


def run(args: argparse.Namespace) -> int:
    if args.inspection and args.robustness:
        raise UserError("--inspection and --robustness are separate runs: give one")
    if args.inspection:
        from ssum.commands.eval_inspection import run_inspection

        return run_inspection(args, args.seeds or INSPECTION_SEEDS)
    if args.stacks:
        from ssum.commands.eval_stacks import run_stacks

        return run_stacks(args, args.seeds or STACK_SEEDS)
    if args.finetune:
        from ssum.commands.eval_finetune import run_finetune_eval

        return run_finetune_eval(args)
    if args.robustness:
        from ssum.commands.eval_robustness import run_robustness

        return run_robustness(args)
    if args.trust:
        from ssum.commands.eval_trust import run_trust

        return run_trust(args)
    inp, ref = resolve_folders(args)
    pixel = args.pixel_size or _pixel_size_from_meta(args.data) or DEFAULT_PIXEL_NM
    names = [] if args.baselines.strip() in ("", "none") else args.baselines.split(",")
    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images must be at least 1, not {args.max_images}")
    result = evaluate_sets(args.pred, inp, ref, pixel, [n.strip() for n in names], args.out,
                           args.max_images, register=args.register)
    frame = ", registered to the references" if args.register else ""
    print(f"{len(result['images'])} image(s), pixel size {pixel:g} nm{frame}; means:")
    print(format_table(summary_rows(result)))
    for name, method in result["methods"].items():
        if method["not_finite"]:
            left_out = ", ".join(f"{k} {n}" for k, n in method["not_finite"].items())
            print(f"{name}: images left out of the means (inf/NaN): {left_out}")
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'report' / 'index.html'}")
    return 0
