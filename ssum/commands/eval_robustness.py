"""`ssum eval --robustness`: a bundle scored over a grid of simulated microscope conditions
(trainer/evaluation/robustness.py); argument parsing lives with `ssum eval`'s."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.inference.bundle import Bundle, default_bundle_path, load_bundle
from edge.inference.converter import Converter, ConverterSettings
from ssum.commands.eval_inspection import parse_seeds
from ssum.commands.eval_trust import write_trust
from trainer.evaluation.robustness import (
    FACTOR_NAMES,
    RobustnessSettings,
    evaluate_robustness,
    format_table,
    grid_pairs,
    write_robustness,
)
from trainer.evaluation.trust import evaluate_trust

DEFAULTS = RobustnessSettings()


def settings_from(seeds: str | None, size: int | None, factors: str | None,
                  pixel_size_nm: float) -> RobustnessSettings:
    """The run's settings: the options given, the defaults of RobustnessSettings otherwise."""
    chosen = tuple(f.strip() for f in factors.split(",")) if factors else FACTOR_NAMES
    return RobustnessSettings(
        seeds=tuple(parse_seeds(seeds)) if seeds else DEFAULTS.seeds,
        size=DEFAULTS.size if size is None else size,
        pixel_size_nm=pixel_size_nm, factors=chosen).validated()


def run_robustness(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle or default_bundle_path())
    pixel = float(bundle.manifest.get("pixel_size_nm") or DEFAULTS.pixel_size_nm)
    if args.pixel_size is not None and args.pixel_size != pixel:
        raise UserError(f"--pixel-size {args.pixel_size:g}: the bundle converts at {pixel:g} "
                        "nm per pixel; robustness pairs are made at the bundle's pixel size")
    settings = settings_from(args.seeds, args.size, args.factors, pixel)
    outputs: list[np.ndarray] = []  # in grid order, for --trust to judge without converting again
    serving = ConverterSettings(invert_input=args.invert_input)
    with Converter.from_bundle(bundle, serving) as conv:
        def convert(osr: np.ndarray) -> np.ndarray:
            output = conv.convert(osr)
            if args.trust:
                outputs.append(output)
            return output

        report = evaluate_robustness(convert, settings)
        report["bundle"] = conv.label
        report["invert_input"] = serving.invert_input
    paths = write_robustness(report, args.out)
    print(f"{len(settings.seeds)} pairs per level, {settings.size} px at {pixel:g} nm, bundle "
          f"{report['bundle']}{', input inverted (1 - x)' if serving.invert_input else ''}; "
          "* the grid centre (the narrow domain):")
    print(format_table(report))
    print(f"wrote {paths['json']}, {paths['table']} and {paths['plot']}")
    if args.trust:
        judge_grid(bundle, settings, args.out, outputs, serving)
    return 0


def judge_grid(bundle: Bundle, settings: RobustnessSettings, out_dir: Path,
               outputs: list[np.ndarray] | None = None,
               serving: ConverterSettings | None = None) -> None:
    """The trust score of every grid tile against whether the model helped it (registered
    scoring: harm is PSNR gain < 0 or an FRC ratio > 1): AUROC and Spearman. outputs: the
    bundle's conversions of the grid's pairs in grid order (else converted here), made with
    `serving`."""
    grid = grid_pairs(settings)
    if outputs is not None and len(outputs) != len(grid):
        raise RuntimeError(f"{len(outputs)} conversions recorded for {len(grid)} grid pairs")
    result = evaluate_trust(bundle, [(osr, sem) for _, osr, sem in grid],
                            settings=serving, register=True, names=[name for name, _, _ in grid],
                            outputs=outputs)
    write_trust(result, out_dir, "the grid")
