"""`ssum eval --stacks`: focus-stack fusion before conversion scored on simulated multilayer
z-stacks (trainer/evaluation/stacks.py); argument parsing lives with `ssum eval`'s."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np

from edge.errors import UserError
from edge.inference.bundle import default_bundle_path
from edge.inference.converter import Converter, ConverterSettings
from ssum.commands.eval_inspection import parse_seeds
from trainer.evaluation.stacks import (
    StackEvalSettings,
    evaluate_stacks,
    format_table,
    scene_for,
    write_figure,
)
from trainer.sim.zstack import StackParams


def _cached(conv: Converter) -> Callable[[np.ndarray], np.ndarray]:
    """conv.convert, remembered by the image's bytes: the figure redraws the first scene."""
    converted: dict[bytes, np.ndarray] = {}

    def convert(image: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(np.ascontiguousarray(image, np.float32).tobytes()).digest()
        if key not in converted:
            converted[key] = np.clip(conv.convert(image), 0, 1)
        return converted[key]

    return convert


def run_stacks(args: argparse.Namespace, seed_text: str) -> int:
    seeds = parse_seeds(seed_text)
    if args.planes < 2:
        raise UserError(f"--planes must be at least 2, not {args.planes}")
    settings = StackEvalSettings(stack=StackParams(planes=args.planes))
    bundle = args.bundle or default_bundle_path()
    with ExitStack() as models:
        conv = models.enter_context(Converter.from_bundle(bundle, ConverterSettings()))
        plane_conv = conv if args.plane_bundle is None else models.enter_context(
            Converter.from_bundle(args.plane_bundle, ConverterSettings()))
        convert, convert_planes = _cached(conv), _cached(plane_conv)
        report = evaluate_stacks(seeds, convert, settings, convert_planes)
        report["bundle"], report["plane_bundle"] = conv.label, plane_conv.label
        args.out.mkdir(parents=True, exist_ok=True)
        figure = write_figure(scene_for(seeds[0], settings), convert,
                              args.out / "stack_example.png", settings, convert_planes)
    (args.out / "stacks.json").write_text(json.dumps(report, indent=1))
    models_used = (f"planes converted by {plane_conv.label}, fused tiles by {conv.label}"
                   if plane_conv is not conv else f"converted by {conv.label}")
    print(f"{len(seeds)} multilayer positions of {settings.size} px at "
          f"{settings.pixel_size_nm:g} nm, {args.planes} planes each, seeds {seed_text}, "
          f"registered to the SEM, {models_used}:")
    print(format_table(report))
    print(f"wrote {args.out / 'stacks.json'} and {figure}")
    return 0
