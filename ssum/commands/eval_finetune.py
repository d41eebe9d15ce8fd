"""`ssum eval --finetune`: fine-tuning from a bundle against training from scratch on pairs of
a held-out simulated domain (trainer/evaluation/finetune.py); argument parsing lives with
`ssum eval`'s."""

from __future__ import annotations

import argparse

from edge.errors import UserError
from edge.inference.bundle import default_bundle_path, load_bundle
from edge.inference.converter import Converter, ConverterSettings
from ssum.commands.eval_inspection import parse_seeds
from trainer.evaluation.finetune import (
    FinetuneSettings,
    format_table,
    read_study,
    rescore,
    run_finetune,
    write_finetune,
)

DEFAULTS = FinetuneSettings()


def settings_from(args: argparse.Namespace, pixel_size_nm: float) -> FinetuneSettings:
    try:
        counts = tuple(int(c) for c in args.counts.split(",")) if args.counts else DEFAULTS.counts
    except ValueError as exc:
        raise UserError(f"--counts must be comma-separated integers, not {args.counts!r}") from exc
    starts = tuple(x.strip() for x in args.starts.split(",")) if args.starts else DEFAULTS.starts
    return FinetuneSettings(
        counts=counts, starts=starts, steps=args.steps or DEFAULTS.steps,
        bundle_lr=args.bundle_lr or DEFAULTS.bundle_lr,
        eval_seeds=tuple(parse_seeds(args.seeds)) if args.seeds else DEFAULTS.eval_seeds,
        size=args.size or DEFAULTS.size, pixel_size_nm=pixel_size_nm,
        model=args.train_model or DEFAULTS.model, threads=args.threads or 0).validated()


def run_finetune_eval(args: argparse.Namespace) -> int:
    if args.rescore is not None and not args.seeds:
        raise UserError("--rescore needs --seeds: the evaluation pairs to score the runs on")
    study = read_study(args.rescore) if args.rescore is not None else None
    path = args.bundle or (study["bundle"] if study else None) or default_bundle_path()
    bundle = load_bundle(path)
    pixel = float(bundle.manifest.get("pixel_size_nm") or DEFAULTS.pixel_size_nm)
    settings = None if args.rescore is not None else settings_from(args, pixel)
    with Converter.from_bundle(bundle, ConverterSettings()) as conv:
        if settings is None:
            report = rescore(args.rescore, parse_seeds(args.seeds), conv.convert, study)
        else:
            report = run_finetune(path, args.out, settings, conv.convert)
    paths = write_finetune(report, args.out)
    print(format_table(report))
    print(f"wrote {paths['json']}, {paths['table']} and {paths['plot']}")
    return 0
