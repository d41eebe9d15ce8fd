"""`ssum eval --inspection`: inspection scored on simulated defects (trainer/evaluation/
inspection.py); argument parsing lives with `ssum eval`'s."""

from __future__ import annotations

import argparse
import json

import numpy as np

from edge.errors import UserError
from edge.inference.bundle import default_bundle_path
from edge.inference.converter import Converter, ConverterSettings
from edge.inspection.settings import InspectionSettings
from trainer.evaluation.inspection import EVAL_MODES, evaluate_inspection, format_table


def parse_seeds(text: str) -> list[int]:
    """'200-223' or '200,205,210' (or both, comma-separated)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError as exc:
        raise UserError(f"--seeds {text!r}: use a range like 200-223 or a list like 1,2") from exc
    if not seeds:
        raise UserError("--seeds names no seed")
    return seeds


def run_inspection(args: argparse.Namespace, seeds_text: str) -> int:
    seeds = parse_seeds(seeds_text)
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError as exc:
        raise UserError(f"--rates {args.rates!r}: comma-separated numbers") from exc
    modes = [m.strip() for m in args.modes.split(",")]
    if not modes or not set(modes) <= set(EVAL_MODES):
        raise UserError(f"--modes: one or more of {', '.join(EVAL_MODES)}")
    with Converter.from_bundle(args.bundle or default_bundle_path(), ConverterSettings()) as conv:
        report = evaluate_inspection(seeds, lambda image: np.clip(conv.convert(image), 0, 1),
                                     rates, modes,
                                     settings=InspectionSettings(confirm_rate=args.confirm_rate))
        report["bundle"] = conv.label
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inspection.json").write_text(json.dumps(report, indent=1))
    for rate in rates:
        print(f"{len(seeds)} tiles of 512 px at 10 nm, seeds {seeds_text}, false-alarm rate {rate:g}:")
        print(format_table(report, rate))
    print(f"wrote {args.out / 'inspection.json'}")
    return 0
