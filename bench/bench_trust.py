"""The price of the trust score, and what it says on the shipped model.

Price: ms per 512 px tile (simulated, held-out seeds), converting with `Converter.convert` and
judging with `Converter.trust`, in one process, the same converter settings:
  off            conversion only ([trust] mode = "off")
  stats          + the input statistics, the harm model and the map (what models/default has:
                 no reverse)
  stats, no map  + the tile's statistics only ([trust] map = false)
  stats + cycle  + the cycle through a SEM->OSR generator: a copy of the bundle whose reverse is
                 a stand-in with the forward generator's architecture and cost (its statistics
                 recorded from a few pairs, which drops the harm model), since
                 models/default has no checkpoint left to export the real one from
Values: the trust of models/default (its recorded training statistics) on in-domain tiles
(training size 256 px and serving size 512 px, held-out seeds) and on out-of-domain versions
of the 512 px ones (blurred, noisy, contrast-inverted, low contrast, brighter, an SEM image).
Separation (a first look; the robustness grid gives the real one): trainer.evaluation.trust on
16 held-out simulated pairs, blurred, noisy and inverted versions of 8 of them (their SEM
references unchanged) and the real SEM images degraded by the optical model (when present):
which conversions are harmful, and how well the score tells them.
Writes bench/results/trust_cpu.json with the machine described.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import write_report
from run import relative

from edge.imaging.imageio import to_uint16
from edge.inference.bundle import default_bundle_path, load_bundle, model_entry, write_manifest
from edge.inference.converter import Converter, ConverterSettings
from trainer.data import load_pairs
from trainer.evaluation.trust import evaluate_trust
from trainer.export import record_statistics
from trainer.sim.compare import DEFAULT_REAL_DIR, MATCHED_PIXEL_SIZE_NM
from trainer.sim.pairs import make_pair, write_degraded_pairs, write_pairs

TILE, SEEDS = 512, (4100, 4101, 4102, 4103, 4104)
SMALL_SEEDS = tuple(range(4200, 4216))  # 256 px, the training size
PAIR_SEEDS = tuple(range(7700, 7716))  # the separation's simulated pairs, 256 px, registered


def timed(converter: Converter, tiles: list[np.ndarray], judge: bool, with_map: bool,
          repeats: int = 3) -> dict[str, Any]:
    """ms per tile of converting and of judging (the fastest of `repeats` judgements of each
    tile), after one warm-up tile: the median over the tiles and, less sensitive to other work
    on the machine, the minimum."""
    convert_ms, trust_ms = [], []
    for i, raw in enumerate([tiles[0], *tiles]):
        start = time.perf_counter()
        out = converter.convert(raw)
        convert = (time.perf_counter() - start) * 1e3
        judged = []
        for _ in range(repeats if judge else 0):
            start = time.perf_counter()
            assert converter.trust(raw, out, with_map) is not None
            judged.append((time.perf_counter() - start) * 1e3)
        if i:
            convert_ms.append(convert)
            trust_ms.append(min(judged, default=0.0))
    return {"convert_ms": round(statistics.median(convert_ms), 1),
            "trust_ms": round(statistics.median(trust_ms), 1),
            "total_ms": round(statistics.median(convert_ms) + statistics.median(trust_ms), 1),
            "convert_ms_min": round(min(convert_ms), 1), "trust_ms_min": round(min(trust_ms), 1),
            "tiles": len(convert_ms)}


def with_stand_in_reverse(bundle: Path, work: Path, threads: int) -> Path:
    """A copy of the bundle whose reverse generator is its forward one (same cost), with trust
    statistics, cycle included, of 6 simulated pairs."""
    copy = Path(shutil.copytree(bundle, work / "bundle"))
    shutil.copy(copy / "generator.onnx", copy / "reverse.onnx")
    manifest = dict(load_bundle(copy).manifest)
    manifest["reverse"] = model_entry(copy / "reverse.onnx", "fp32", "onnx",
                                      direction="stand-in: the forward generator")
    write_manifest(copy, manifest)
    pairs = write_pairs(work / "pairs", 6, 4300, 256)
    record_statistics(copy, pairs, ConverterSettings(threads=threads))
    return copy


def out_of_domain(tile: np.ndarray, sem: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mean = float(tile.mean())
    return {
        "blur sigma 1 px": cv2.GaussianBlur(tile, (0, 0), 1.0),
        "blur sigma 2 px": cv2.GaussianBlur(tile, (0, 0), 2.0),
        "noise +0.02": np.clip(tile + rng.normal(0, 0.02, tile.shape), 0, 1),
        "noise +0.05": np.clip(tile + rng.normal(0, 0.05, tile.shape), 0, 1),
        "contrast inverted (1 - x)": 1.0 - tile,
        "contrast halved": mean + 0.5 * (tile - mean),
        "brighter (+0.1)": np.clip(tile + 0.1, 0, 1),
        "an SEM image": sem,
    }


def judged(converter: Converter, tile: np.ndarray) -> dict[str, Any]:
    result = converter.trust(tile, converter.convert(tile))
    assert result is not None and result.map is not None
    return {**result.header(), "map_mean": round(float(result.map.mean()), 4),
            "map_min": round(float(result.map.min()), 4)}


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [r["score"] for r in records]
    outliers = sorted({r["outlier"] for r in records if r["outlier"]})
    return {"n": len(scores), "mean": round(float(np.mean(scores)), 4),
            "min": round(min(scores), 4), "max": round(max(scores), 4),
            "below_0.5": sum(s < 0.5 for s in scores), "outliers": outliers,
            "scores": scores}


def separation(bundle: Path, threads: int, work: Path) -> dict[str, Any]:
    """evaluate_trust on clean, degraded and real-degraded pairs: per kind, the scores and
    harmful counts; over all, AUROC and Spearman."""
    rng = np.random.default_rng(1)
    clean = [make_pair(seed, 256, misalign=False)[:2] for seed in PAIR_SEEDS]
    pairs = {f"simulated {i}": pair for i, pair in enumerate(clean)}
    for i, (osr, sem) in enumerate(clean[:8]):
        noisy = np.clip(osr + rng.normal(0, 0.03, osr.shape), 0, 1).astype(np.float32)
        pairs.update({f"blur sigma 1.5 px {i}": (cv2.GaussianBlur(osr, (0, 0), 1.5), sem),
                      f"noise +0.03 {i}": (noisy, sem), f"inverted {i}": (1.0 - osr, sem)})
    if DEFAULT_REAL_DIR.is_dir():
        real = load_pairs(write_degraded_pairs(DEFAULT_REAL_DIR, work / "real",
                                                    MATCHED_PIXEL_SIZE_NM))
        pairs.update({f"real SEM degraded {n}": (o, s)
                      for n, o, s in zip(real.names, real.osr, real.sem, strict=True)})
    result = evaluate_trust(bundle, list(pairs.values()), settings=ConverterSettings(
        threads=threads), names=list(pairs))
    kinds: dict[str, list[Any]] = {}
    for tile in result.tiles:
        kinds.setdefault(tile.name.rsplit(" ", 1)[0], []).append(tile)
    return {"auroc": round(result.auroc, 3), "spearman": round(result.spearman, 3),
            "n": len(result.tiles), "harmful": result.harmful,
            "kinds": {kind: {"n": len(tiles), "harmful": sum(t.harmful for t in tiles),
                             "score_mean": round(float(np.mean([t.score for t in tiles])), 3),
                             "low_trust": sum(t.score < 0.5 for t in tiles),
                             "harmful_trusted": sum(t.harmful and t.score >= 0.5
                                                    for t in tiles),
                             "psnr_gain_mean": round(float(np.mean([t.psnr_gain for t in tiles
                                                                    if np.isfinite(t.psnr_gain)]
                                                                   or [np.nan])), 2)}
                      for kind, tiles in kinds.items()},
            "tiles": result.to_dict()["tiles"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=default_bundle_path())
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/trust_cpu.json")
    args = parser.parse_args(argv)
    pairs = [make_pair(seed, TILE) for seed in SEEDS]
    tiles = [to_uint16(osr) for osr, _, _ in pairs]
    settings = ConverterSettings(threads=args.threads, trust=True)
    price: dict[str, Any] = {}
    with Converter.from_bundle(args.bundle, ConverterSettings(threads=args.threads)) as converter:
        price["off"] = timed(converter, tiles, judge=False, with_map=False)
    with Converter.from_bundle(args.bundle, settings) as converter:
        price["stats"] = timed(converter, tiles, judge=True, with_map=True)
        price["stats, no map"] = timed(converter, tiles, judge=True, with_map=False)
        small = [make_pair(seed, 256)[0] for seed in SMALL_SEEDS]
        values = {"in-domain 256 px (training size)": summary([judged(converter, t)
                                                                for t in small]),
                  "in-domain 512 px": summary([judged(converter, osr) for osr, _, _ in pairs])}
        odd: dict[str, list[dict[str, Any]]] = {}
        for osr, sem, _ in pairs[:3]:
            for name, image in out_of_domain(osr, sem).items():
                odd.setdefault(name, []).append(judged(converter, image.astype(np.float32)))
        values.update({name: summary(records) for name, records in odd.items()})
    with tempfile.TemporaryDirectory() as work:
        separated = separation(args.bundle, args.threads, Path(work))
        stand_in = with_stand_in_reverse(args.bundle, Path(work), args.threads)
        with Converter.from_bundle(stand_in, settings) as converter:
            price["stats + cycle"] = timed(converter, tiles, judge=True, with_map=True)
    for record in price.values():  # the trust's own time against the same run's conversion
        record["added_ratio"] = round(record["trust_ms"] / record["convert_ms"], 3)
    for name, record in price.items():
        print(f"{name:14s} {record['total_ms']:8.1f} ms/tile (convert {record['convert_ms']:.1f}"
              f", trust {record['trust_ms']:.1f})")
    for name, record in values.items():
        print(f"{name:34s} trust mean {record['mean']:.3f} min {record['min']:.3f} "
              f"max {record['max']:.3f} {record['outliers']}")
    for name, record in separated["kinds"].items():
        print(f"{name:34s} harmful {record['harmful']}/{record['n']}, low trust "
              f"{record['low_trust']}, harmful but trusted {record['harmful_trusted']}")
    print(f"AUROC {separated['auroc']}, Spearman {separated['spearman']}")
    write_report(args.out, "trust_cpu", argv, {
        "bundle": relative(args.bundle), "tile_px": TILE, "seeds": list(SEEDS),
        "threads": args.threads, "backend": "onnxruntime fp32",
        "note": "medians over the tiles after one warm-up (each judgement the fastest of 3), "
                "and minima; added_ratio: the trust's time over the same run's conversion "
                "time. The machine's 2 cores were shared with other work while this ran: "
                "conversion times vary by tens of %, the minima are the steadier figures",
        "price": price, "values": values, "separation": separated})
    return 0


if __name__ == "__main__":
    sys.exit(main())
