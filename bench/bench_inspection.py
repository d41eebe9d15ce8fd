"""The price of inspecting a tile, and of confirming its detections by the raw image.

ms per 512 px tile (simulated inspection cases, held-out seeds, converted with the shipped
bundle beforehand: conversion is not timed), golden and database modes on the random layouts,
cell mode on the array cases of the same seeds (pitch detected in each tile):
  converted   `Inspector.inspect` on the converted tile (reference registration included)
  confirmed   `ConfirmedInspector.inspect`: the same, then the raw tile inspected against the
              raw reference when the converted one has detections (what `[inspection] confirm`
              adds to the daemon's publish stage)
Each figure is the fastest of `--repeats` runs per tile; medians over the tiles and minima.
Writes bench/results/inspection_cpu.json with the machine described.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import write_report
from run import relative

from edge.inference.bundle import default_bundle_path
from edge.inference.converter import Converter, ConverterSettings
from edge.inspection.confirm import ConfirmedInspector
from edge.inspection.database import LayoutRaster
from edge.inspection.inspector import Inspector
from trainer.sim.inspection import InspectionCase, make_case

SEEDS = tuple(range(300, 306))
TILE = 512


def fastest_ms(call: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def inspectors(mode: str, case: InspectionCase, converted_reference: np.ndarray | None,
               ) -> tuple[Inspector, Inspector]:
    """(converted, optical) inspectors of `mode` for one case."""
    if mode == "golden":
        return (Inspector(mode, reference=converted_reference),
                Inspector(mode, reference=case.reference["osr"]))
    if mode == "cell":
        return Inspector(mode), Inspector(mode)
    assert case.layout_mask is not None
    layout = LayoutRaster(case.layout_mask, case.pixel_size_nm)
    return Inspector(mode, layout=layout), Inspector(mode, layout=layout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=default_bundle_path())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/inspection_cpu.json")
    args = parser.parse_args(argv)
    cases = {array: [make_case(seed, TILE, array=array) for seed in SEEDS]
             for array in (False, True)}
    with Converter.from_bundle(args.bundle, ConverterSettings()) as converter:
        convert = lambda image: np.clip(converter.convert(image), 0, 1)
        converted = {array: [(convert(c.inspected["osr"]),  # cell mode needs no reference
                              None if array else convert(c.reference["osr"])) for c in chosen]
                     for array, chosen in cases.items()}
    results: dict[str, Any] = {}
    for mode in ("golden", "database", "cell"):
        times: dict[str, list[float]] = {"converted": [], "confirmed": []}
        array = mode == "cell"
        for case, (image, reference) in zip(cases[array], converted[array]):
            alone, optical = inspectors(mode, case, reference)
            both = ConfirmedInspector(alone, optical)
            pixel = case.pixel_size_nm
            times["converted"].append(fastest_ms(partial(alone.inspect, image, pixel),
                                                 args.repeats))
            times["confirmed"].append(fastest_ms(
                partial(both.inspect, image, case.inspected["osr"], pixel), args.repeats))
        results[mode] = {name: {"median_ms": round(statistics.median(t), 1),
                                "min_ms": round(min(t), 1)} for name, t in times.items()}
        print(f"{mode:9s} converted {results[mode]['converted']['median_ms']:7.1f} ms/tile, "
              f"confirmed {results[mode]['confirmed']['median_ms']:7.1f} ms/tile")
    write_report(args.out, "inspection_cpu", argv, {
        "bundle": relative(args.bundle), "tile_px": TILE, "seeds": list(SEEDS),
        "repeats": args.repeats,
        "note": "per 512 px tile, conversion not timed; each figure the fastest of the repeats, "
                "then the median and minimum over the tiles",
        "ms_per_tile": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
