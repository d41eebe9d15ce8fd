"""How well inspection finds simulated defects: precision, recall and false alarms per tile,
by defect size and kind, on the raw SSUM image, the converted image, the converted image with
each detection confirmed by the raw one (edge.inspection.confirm) and the SEM image (the upper
bound), each compared with a reference of its own kind (`ssum eval --inspection`). Golden and
database modes are scored on the simulator's random layouts; cell-to-cell on arrays (one unit
repeated over the die, trainer.sim.inspection), its pitch detected in each image as the daemon
does when none is configured.

A detection matches an injected defect when either one's centroid lies within the other's box
grown by MATCH_TOLERANCE_PX; each is matched at most once (nearest first); detections left
over are false alarms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.inspection.confirm import confirmed
from edge.inspection.database import LayoutRaster
from edge.inspection.inspector import Inspector
from edge.inspection.records import Defect
from edge.inspection.settings import InspectionSettings
from trainer.sim.defects import DEFECT_KINDS, DefectParams, InjectedDefect
from trainer.sim.inspection import InspectionCase, make_case

log = logging.getLogger(__name__)

INPUTS = ("osr", "converted", "confirmed", "sem")
EVAL_MODES = ("golden", "database", "cell")
SIZE_BINS = ((20.0, 50.0), (50.0, 100.0), (100.0, 301.0))
MATCH_TOLERANCE_PX = 3
EXPECTED_CLASS = {"particle": "particle", "bridge": "bridge", "open": "open",
                  "missing_contact": "missing_contact", "extra_contact": "extra_contact"}


def expected_class(truth: InjectedDefect) -> str:
    """The rough class an injected defect should get (a bump on an edge is a blob on it, a
    bite into one is unclassified)."""
    if truth.kind == "edge_excursion":
        return "particle" if truth.polarity == "extra" else "unclassified"
    return EXPECTED_CLASS[truth.kind]


def _inside(x: float, y: float, box: Sequence[float], grow: float) -> bool:
    return box[0] - grow <= x <= box[2] + grow and box[1] - grow <= y <= box[3] + grow


def match(found: list[Defect], truth: list[InjectedDefect]) -> dict[int, Defect]:
    """Injected defect id -> the detection matched to it."""
    pairs = []
    for t in truth:
        for i, d in enumerate(found):
            if _inside(t.x_px, t.y_px, d.bbox_px, MATCH_TOLERANCE_PX) or \
                    _inside(d.x_px, d.y_px, t.bbox_px, MATCH_TOLERANCE_PX):
                pairs.append((float(np.hypot(t.x_px - d.x_px, t.y_px - d.y_px)), t.id, i))
    matched: dict[int, Defect] = {}
    used: set[int] = set()
    for _, tid, i in sorted(pairs):
        if tid not in matched and i not in used:
            matched[tid] = found[i]
            used.add(i)
    return matched


@dataclass
class Tally:
    """Counts over tiles for one (mode, input, rate)."""

    tiles: int = 0
    detections: int = 0
    false_alarms: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    class_right: int = 0

    def add(self, truth: list[InjectedDefect], found: list[Defect]) -> None:
        hits = match(found, truth)
        self.tiles += 1
        self.detections += len(found)
        self.false_alarms += len(found) - len(hits)
        for t in truth:
            for key in (_size_key(t.size_nm), f"kind:{t.kind}", "all",
                        "ge50" if t.size_nm >= 50 else "lt50"):
                self.injected[key] = self.injected.get(key, 0) + 1
                self.found[key] = self.found.get(key, 0) + (t.id in hits)
            self.class_right += t.id in hits and hits[t.id].defect_class == expected_class(t)

    def summary(self) -> dict[str, Any]:
        injected, found = self.injected, self.found
        recall = {k: found[k] / n for k, n in injected.items() if n}
        true = found.get("all", 0)
        return {"tiles": self.tiles, "detections": self.detections,
                "false_alarms": self.false_alarms,
                "false_alarms_per_tile": self.false_alarms / max(self.tiles, 1),
                "precision": true / self.detections if self.detections else float("nan"),
                "recall": recall, "injected": injected,
                "class_accuracy": self.class_right / true if true else float("nan")}


def _size_key(size_nm: float) -> str:
    for lo, hi in SIZE_BINS:
        if lo <= size_nm < hi:
            return f"size:{lo:g}-{min(hi, 300):g}"
    return "size:other"


def _images(case: InspectionCase, convert: Callable[[np.ndarray], np.ndarray], golden: bool,
            ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """(inspected, golden reference when `golden`) per input that is inspected on its own."""
    if not golden:
        return {"osr": (case.inspected["osr"], None),
                "converted": (convert(case.inspected["osr"]), None),
                "sem": (case.inspected["sem"], None)}
    return {"osr": (case.inspected["osr"], case.reference["osr"]),
            "converted": (convert(case.inspected["osr"]), convert(case.reference["osr"])),
            "sem": (case.inspected["sem"], case.reference["sem"])}


def _found(case: InspectionCase, mode: str, image: np.ndarray, golden: np.ndarray | None,
           settings: InspectionSettings, rates: Sequence[float]) -> dict[float, list[Defect]]:
    """The detections of one input at each rate, the reference registered once (none, logged,
    when cell-to-cell finds no repeat in the image)."""
    try:
        reference = _inspector(mode, settings, golden, case).reference_for(
            image, case.pixel_size_nm)
    except UserError as exc:
        log.warning("seed %d, %s: %s", case.seed, mode, exc)
        return {rate: [] for rate in rates}
    return {rate: _inspector(mode, replace(settings, false_alarm_rate=rate), golden, case)
            .inspect(image, case.pixel_size_nm, reference=reference).defects for rate in rates}


def _cases(seed: int, size: int, defects: DefectParams | None, modes: Sequence[str],
           ) -> list[tuple[InspectionCase, list[str]]]:
    """The case of `seed` for golden and database, its array case for cell, each with the
    modes scored on it."""
    random = [m for m in modes if m != "cell"]
    return [(make_case(seed, size, defects=defects, array=array), chosen)
            for array, chosen in ((False, random), (True, [m for m in modes if m == "cell"]))
            if chosen]


def _score(case: InspectionCase, modes: Sequence[str],
           convert: Callable[[np.ndarray], np.ndarray], rates: Sequence[float],
           base: InspectionSettings, tallies: dict[tuple[str, str, float], Tally]) -> None:
    """One case's detections per mode, input and rate added to `tallies`."""
    images = _images(case, convert, golden="golden" in modes)
    for mode in modes:
        found = {name: _found(case, mode, image, golden, base,  # osr: the evidence too
                              [*rates, base.confirm_rate] if name == "osr" else rates)
                 for name, (image, golden) in images.items()}
        evidence = found["osr"][base.confirm_rate]
        found["confirmed"] = {rate: confirmed(found["converted"][rate], evidence,
                                              base.confirm_distance_nm) for rate in rates}
        for name in INPUTS:
            for rate in rates:
                tallies.setdefault((mode, name, rate), Tally()).add(case.truth, found[name][rate])


def evaluate_inspection(seeds: Sequence[int], convert: Callable[[np.ndarray], np.ndarray],
                        rates: Sequence[float], modes: Sequence[str] = EVAL_MODES,
                        size: int = 512, defects: DefectParams | None = None,
                        settings: InspectionSettings | None = None) -> dict[str, Any]:
    """Tallies per mode, input and false-alarm rate over the cases of `seeds`; `convert` maps
    an OSR image to the converted one (float [0, 1]). The confirmed input is the converted one
    at each rate, confirmed by the raw image at the settings' confirm_rate."""
    base = settings or InspectionSettings()
    tallies: dict[tuple[str, str, float], Tally] = {}
    for seed in seeds:
        for case, case_modes in _cases(seed, size, defects, modes):
            _score(case, case_modes, convert, rates, base, tallies)
            log.info("seed %d%s: %d defects injected", seed, " (array)" if case.pitch_px else "",
                     len(case.truth))
    return {"seeds": list(seeds), "size_px": size, "pixel_size_nm": 10.0,
            "rates": list(rates), "modes": list(modes), "inputs": list(INPUTS),
            "kinds": list(DEFECT_KINDS), "match_tolerance_px": MATCH_TOLERANCE_PX,
            "confirm_rate": base.confirm_rate, "confirm_distance_nm": base.confirm_distance_nm,
            "results": [{"mode": m, "input": i, "rate": r, **t.summary()}
                        for (m, i, r), t in tallies.items()]}


def _inspector(mode: str, settings: InspectionSettings, golden: np.ndarray | None,
               case: InspectionCase) -> Inspector:
    if mode == "golden":
        return Inspector(mode, settings, reference=golden)
    if mode == "cell":
        return Inspector(mode, settings)
    assert case.layout_mask is not None
    return Inspector(mode, settings, layout=LayoutRaster(case.layout_mask, case.pixel_size_nm))


def format_table(report: dict[str, Any], rate: float) -> str:
    """Markdown: per mode and input at `rate`, recall by size and overall, precision, false
    alarms per tile and class accuracy."""
    head = ["mode", "input", "recall 20-50 nm", "recall 50-100 nm", "recall 100-300 nm",
            "recall >= 50 nm", "precision", "false alarms / tile", "class accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["results"]:
        if row["rate"] != rate:
            continue
        r = row["recall"]
        cells = [row["mode"], row["input"], *(f"{r.get(k, float('nan')):.2f}" for k in
                 ("size:20-50", "size:50-100", "size:100-300", "ge50")),
                 f"{row['precision']:.2f}", f"{row['false_alarms_per_tile']:.2f}",
                 f"{row['class_accuracy']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
