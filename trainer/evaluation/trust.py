"""Does the trust score tell harmful conversions from helpful ones? For any list of (OSR, SEM)
pairs: per tile its trust score, the PSNR gain of the conversion over the input and the FRC
ratio (resolution of agreement with the SEM, output over input; above 1 the output agrees worse
than the input did); the AUROC of the score separating harmful tiles (PSNR gain < 0 or FRC
ratio > 1) from helpful ones, and the Spearman correlation of the score with the PSNR gain.

    from trainer.data import load_pairs
    pairs = load_pairs("runs/data/test")
    result = evaluate_trust("models/default", zip(pairs.osr, pairs.sem), names=pairs.names)
    print(result.auroc, result.spearman)

docs/trust.md, "Is the score right?".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from edge.errors import UserError
from edge.imaging.imageio import to_float01
from edge.inference.bundle import Bundle, load_bundle
from edge.inference.converter import Converter, ConverterSettings
from trainer.evaluation.frc import frc_resolution
from trainer.evaluation.harness import align_to_reference
from trainer.evaluation.metrics import psnr


@dataclass(frozen=True)
class TileTrust:
    """One pair: its trust score and components, the PSNR gain (dB) and the FRC ratio (1/7
    threshold; inf when the output has no agreement, NaN when either never drops below it)."""

    name: str
    score: float
    components: dict[str, float]
    psnr_gain: float
    frc_ratio: float

    @property
    def harmful(self) -> bool:
        """The conversion made the tile worse: less PSNR, or coarser agreement with the SEM."""
        return self.psnr_gain < 0 or self.frc_ratio > 1


@dataclass(frozen=True)
class TrustEvaluation:
    """Per tile figures; AUROC of the score for helpful (positive) vs harmful tiles (NaN without
    both kinds); Spearman of score and PSNR gain (NaN under 3 tiles or a constant)."""

    tiles: tuple[TileTrust, ...]
    auroc: float
    spearman: float

    @property
    def harmful(self) -> int:
        return sum(tile.harmful for tile in self.tiles)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers as None)."""
        def safe(value: Any) -> Any:
            return None if isinstance(value, float) and not math.isfinite(value) else value

        tiles = [{k: safe(v) for k, v in {**asdict(t), "harmful": t.harmful}.items()}
                 for t in self.tiles]
        return {"tiles": tiles, "n": len(self.tiles), "harmful": self.harmful,
                "auroc": safe(self.auroc), "spearman": safe(self.spearman)}


def auroc(scores: Sequence[float], harmful: Sequence[bool]) -> float:
    """P(score of a helpful tile > score of a harmful one), ties counted half (Mann-Whitney);
    NaN when either kind is missing."""
    values, bad = np.asarray(scores, np.float64), np.asarray(harmful, bool)
    good = ~bad
    if not good.any() or not bad.any():
        return float("nan")
    ranks = stats.rankdata(values)
    n_good, n_bad = int(good.sum()), int(bad.sum())
    return float((ranks[good].sum() - n_good * (n_good + 1) / 2) / (n_good * n_bad))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation over the pairs where both are finite (NaN under 3 such, or
    when either is constant)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(stats.spearmanr(x[keep], y[keep]).statistic)


def evaluate_trust(bundle: Bundle | str | Path, pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                   pixel_size_nm: float | None = None, settings: ConverterSettings | None = None,
                   register: bool = False, names: Sequence[str] | None = None,
                   outputs: Sequence[np.ndarray] | None = None) -> TrustEvaluation:
    """Convert each OSR image of `pairs` (raw or float [0, 1], with its SEM reference of the same
    size) with the bundle as the daemon does, judge it, and score the conversion against the
    SEM. register: bring input and output into the SEM's frame first (one transform per pair,
    docs/evaluation.md); pixel_size_nm: for FRC (default: the bundle's); outputs: the bundle's
    conversions of the pairs, already made (they are judged instead of converting again)."""
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    pixel_nm = float(pixel_size_nm or loaded.manifest.get("pixel_size_nm", 10.0))
    serving = replace(settings or ConverterSettings(), trust=True)
    tiles = []
    with Converter.from_bundle(loaded, serving) as converter:
        if converter.judge is None or converter.judge.statistics is None:
            raise UserError(f"bundle {loaded.path} has no trust statistics: record them first "
                            "(ssum bundle stats)")
        for i, (osr, sem) in enumerate(pairs):
            name = names[i] if names is not None else f"{i:04d}"
            output = converter.convert(osr) if outputs is None else outputs[i]
            trust = converter.trust(osr, output, with_map=False)
            if trust is None:
                raise UserError(f"pair {name}: too small to judge ({np.shape(osr)})")
            tiles.append(score_tile(name, trust.score, trust.components, to_float01(osr),
                                    output, to_float01(sem), pixel_nm, register))
    return TrustEvaluation(tuple(tiles), auroc([t.score for t in tiles],
                                               [t.harmful for t in tiles]),
                           spearman([t.score for t in tiles], [t.psnr_gain for t in tiles]))


def score_tile(name: str, score: float, components: dict[str, float], inp: np.ndarray,
               pred: np.ndarray, ref: np.ndarray, pixel_nm: float, register: bool) -> TileTrust:
    """One pair's figures: the PSNR gain and FRC ratio of `pred` over `inp` against `ref`."""
    if inp.shape != ref.shape:
        raise UserError(f"pair {name}: OSR {inp.shape} and SEM {ref.shape} differ in size")
    pred = np.clip(pred, 0.0, 1.0)
    if register:
        aligned, _ = align_to_reference({"input": inp, "ref": ref, "pred": pred})
        inp, ref, pred = aligned["input"], aligned["ref"], aligned["pred"]
    gain = psnr(pred, ref) - psnr(inp, ref)
    frc_out = frc_resolution(pred, ref, pixel_nm)
    frc_in = frc_resolution(inp, ref, pixel_nm)
    ratio = frc_out / frc_in if math.isfinite(frc_in) and frc_in > 0 else float("nan")
    return TileTrust(name, score, dict(components), gain, ratio)
