"""The trust score of a converted tile (0..1, higher = more trustworthy) and its block map.

Two signals, each measured as a distance whose distribution over the training data is recorded
in the bundle (manifest `trust`, written at export or by `ssum bundle stats`):

- statistics: `input_statistics` of the measured input (intensity percentiles, noise, power
  spectrum) against the training tiles' range of each;
- cycle: when the bundle carries the SEM->OSR generator, the converted tile rendered back as
  OSR and compared with the input after an affine intensity fit (RMS residual).

The rule (docs/trust.md): a distance's excess is how far it lies beyond the training's 1st-99th
percentile range, in units of that range's half (from the median to the end it crosses); 0
inside. The statistics' excess is the largest over its figures, the cycle's is one-sided (only
large errors count). Each component is exp(-excess), and the score their product
exp(-(excess_statistics + excess_cycle)). The map applies the same rule to blocks of about
BLOCK_PX pixels against the training blocks' ranges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.statistics import (
    affine_intensity_fit,
    noise_std,
    radial_power_spectrum,
    spectrum_metrics,
)

FEATURES = ("p1", "p50", "p99", "log10_noise", "spectrum_slope", "spectrum_high_low_db")
PERCENTILES = (1.0, 50.0, 99.0)  # the range of a training distribution, and its middle
BLOCK_PX = 64  # the map's blocks: about this many pixels a side
MIN_SIDE = 32  # tiles (and blocks) smaller than this have no spectrum to speak of: no trust
INLIER_FACTOR = 2.0  # the cycle's intensity fit leaves out blocks this far above the median
STATISTICS_VERSION = 1
LOW_TRUST = 0.5  # tiles below it count as low-trust (consume's summary, the alert)
MODES = ("every", "nth", "off")
RENDER_SIGMA_PX = 2.5  # the optical blur (Gaussian sigma, px) that re-renders an output as OSR
HARM_FEATURES = (*(f"input_{f}" for f in FEATURES), *(f"excess_{f}" for f in FEATURES),
                 *(f"output_{f}" for f in FEATURES), "input_bright_fraction",
                 "output_bright_fraction", "render_correlation")
HARM_VERSION = 1

Render = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TrustSettings:
    """mode: judge every tile, every `every_n`-th (the 1st, the (n+1)-th, ...), or none;
    map: also the block map."""

    mode: str = "every"
    every_n: int = 10
    map: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"trust mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if isinstance(self.every_n, bool) or not isinstance(self.every_n, int) \
                or self.every_n < 1:
            raise UserError(f"trust every_n must be a positive integer, got {self.every_n!r}")

    def due(self, count: int) -> bool:
        """Whether the tile with `count` tiles converted before it is judged."""
        return self.mode == "every" or (self.mode == "nth" and count % self.every_n == 0)


def input_statistics(images: np.ndarray) -> np.ndarray:
    """THE statistics of the trust score, at export and in serving alike: for one image (H, W)
    or each of a stack (N, H, W) of float [0, 1] pixels as measured (before preprocessing), the
    FEATURES: the 1st, 50th and 99th intensity percentiles, log10 of the noise level (from the
    neighbour-difference residual), the power spectrum's log-log slope and its high-to-low
    frequency ratio in dB. Returns (len(FEATURES),) or (N, len(FEATURES))."""
    array = np.asarray(images, dtype=np.float64)
    stack = array.reshape((-1, *array.shape[-2:]))
    percentiles = np.percentile(stack.reshape(len(stack), -1), PERCENTILES, axis=1).T
    noise = np.log10(np.maximum(np.asarray(noise_std(stack)), 1e-6))
    spectrum = spectrum_metrics(*radial_power_spectrum(stack))
    out = np.column_stack([percentiles, noise, spectrum["spectrum_slope"],
                           spectrum["spectrum_high_low_db"]])
    return out[0] if array.ndim == 2 else out


def bright_fraction(image: np.ndarray) -> float:
    """The share of pixels nearer the 99th than the 1st intensity percentile: the area of the
    bright phase, which tells which material a tile shows bright."""
    low, high = np.percentile(image, (1.0, 99.0))
    return float((image > (low + high) / 2).mean())


def render_correlation(prepared: np.ndarray, converted: np.ndarray) -> float:
    """Pearson correlation of the converted tile blurred as the optics blur (RENDER_SIGMA_PX)
    with the input as the network saw it: a physical cycle, with no generator to fool. 0 when
    either is flat."""
    output = np.clip(np.asarray(converted, np.float32), 0.0, 1.0)
    blurred = cv2.GaussianBlur(output, (0, 0), RENDER_SIGMA_PX, borderType=cv2.BORDER_REFLECT)
    if blurred.shape != prepared.shape:
        blurred = cv2.resize(blurred, prepared.shape[::-1], interpolation=cv2.INTER_AREA)
    x, y = np.asarray(prepared, np.float64).ravel(), blurred.astype(np.float64).ravel()
    if x.std() < 1e-9 or y.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def block_grid(shape: tuple[int, ...], block_px: int = BLOCK_PX) -> tuple[int, int]:
    """(rows, cols) of the map of an image: blocks of about block_px a side, at least one."""
    return max(1, round(shape[0] / block_px)), max(1, round(shape[1] / block_px))


def cut_blocks(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(rows * cols, bh, bw): equal blocks (bh = H // rows) covering the image, row by row,
    their starts spread evenly (neighbours overlap by under a pixel per block)."""
    (height, width), (rows, cols) = image.shape, grid
    bh, bw = height // rows, width // cols
    tops = np.linspace(0, height - bh, rows).round().astype(int)
    lefts = np.linspace(0, width - bw, cols).round().astype(int)
    return np.stack([image[t:t + bh, left:left + bw] for t in tops for left in lefts])


@dataclass(frozen=True)
class Envelope:
    """A training distribution per figure: its 1st, 50th and 99th percentiles."""

    low: tuple[float, ...]
    middle: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def of(cls, samples: np.ndarray) -> Envelope:
        """The envelope of (N, F) samples (N >= 1)."""
        low, middle, high = np.percentile(np.asarray(samples, np.float64), PERCENTILES, axis=0)
        return cls(_rounded(low), _rounded(middle), _rounded(high))

    def excess(self, values: np.ndarray, upper_only: bool = False) -> np.ndarray:
        """How far each value (..., F) lies beyond the range, in half-ranges; 0 inside."""
        low, middle, high = (np.asarray(v) for v in (self.low, self.middle, self.high))
        tiny = 1e-9 * np.maximum(np.abs(middle), 1.0)
        above = (values - high) / np.maximum(high - middle, tiny)
        below = (low - values) / np.maximum(middle - low, tiny)
        worst = above if upper_only else np.maximum(above, below)
        return np.maximum(worst, 0.0)

    def to_dict(self) -> dict[str, list[float]]:
        return {"p1": list(self.low), "p50": list(self.middle), "p99": list(self.high)}

    @classmethod
    def from_dict(cls, data: Any, width: int, where: str) -> Envelope:
        ok = isinstance(data, dict) and all(
            isinstance(data.get(k), list) and len(data[k]) == width
            and all(isinstance(v, int | float) and math.isfinite(v) for v in data[k])
            for k in ("p1", "p50", "p99"))
        if not ok:
            raise UserError(f"{where} must hold p1, p50 and p99: lists of {width} numbers")
        return cls(tuple(data["p1"]), tuple(data["p50"]), tuple(data["p99"]))


def _rounded(values: np.ndarray) -> tuple[float, ...]:
    """Six significant digits: the manifest stays readable, the score does not notice."""
    return tuple(float(f"{v:.6g}") for v in values)


@dataclass(frozen=True)
class HarmModel:
    """P(the conversion harms a tile): a logistic model on HARM_FEATURES standardised by the
    fitting tiles' mean and scale (`ssum bundle harm`, trainer.evaluation.harm, fitted on pairs
    whose SEM tells harm from help)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def probability(self, features: np.ndarray) -> float:
        z = (np.asarray(features, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(np.clip(z, -50.0, 50.0) @ np.asarray(self.coef) + self.intercept)
        return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"version": HARM_VERSION, "features": list(HARM_FEATURES),
                "mean": list(_rounded(np.array(self.mean))),
                "scale": list(_rounded(np.array(self.scale))),
                "coef": list(_rounded(np.array(self.coef))),
                "intercept": float(f"{self.intercept:.6g}")}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> HarmModel:
        if not isinstance(data, dict) or data.get("version") != HARM_VERSION \
                or data.get("features") != list(HARM_FEATURES):
            raise UserError(f"{where}: not a harm model of version {HARM_VERSION} on this "
                            "version's features (fit it again: ssum bundle harm)")
        width = len(HARM_FEATURES)
        lists = [data.get(k) for k in ("mean", "scale", "coef")]
        ok = all(isinstance(v, list) and len(v) == width
                 and all(isinstance(x, int | float) and math.isfinite(x) for x in v)
                 for v in lists) and all(x > 0 for x in data["scale"]) \
            and isinstance(data.get("intercept"), int | float) \
            and math.isfinite(data["intercept"])
        if not ok:
            raise UserError(f"{where} must hold mean, scale (> 0) and coef: lists of {width} "
                            "numbers, and a finite intercept")
        mean, scale, coef = (tuple(float(x) for x in v) for v in lists if v is not None)
        return cls(mean, scale, coef, float(data["intercept"]))


@dataclass(frozen=True)
class Measurement:
    """What the judge measured on one tile: the statistics of the tile and of its blocks (None
    when not asked for), the cycle's RMS residual of the tile and of its blocks (None without a
    reverse generator)."""

    features: np.ndarray
    block_features: np.ndarray | None
    grid: tuple[int, int]
    cycle: float | None = None
    block_cycle: np.ndarray | None = None


@dataclass(frozen=True)
class TrainingStatistics:
    """The training data's envelopes (manifest `trust`): of the tile and block statistics and,
    when the bundle has a reverse generator, of the cycle residuals."""

    tile: Envelope
    block: Envelope
    cycle_tile: Envelope | None = None
    cycle_block: Envelope | None = None
    images: int = 0
    blocks: int = 0
    harm: HarmModel | None = None

    @classmethod
    def of(cls, measurements: Sequence[Measurement]) -> TrainingStatistics:
        """The envelopes of the measurements of the training tiles."""
        if not measurements:
            raise UserError("no training images to take trust statistics from")
        blocks = np.concatenate([m.block_features for m in measurements
                                 if m.block_features is not None])
        cycled = [m for m in measurements if m.cycle is not None and m.block_cycle is not None]
        cycle_tile = cycle_block = None
        if cycled:
            cycle_tile = Envelope.of(np.array([[m.cycle] for m in cycled]))
            cycle_block = Envelope.of(np.concatenate([m.block_cycle for m in cycled])[:, None])
        return cls(Envelope.of(np.stack([m.features for m in measurements])),
                   Envelope.of(blocks), cycle_tile, cycle_block, len(measurements), len(blocks))

    def to_manifest(self, source: dict[str, Any]) -> dict[str, Any]:
        """The manifest's `trust` object; `source` says where the images came from."""
        out: dict[str, Any] = {"version": STATISTICS_VERSION, "features": list(FEATURES),
                               "block_px": BLOCK_PX, "images": self.images,
                               "blocks": self.blocks, "tile": self.tile.to_dict(),
                               "block": self.block.to_dict()}
        if self.cycle_tile is not None and self.cycle_block is not None:
            out["cycle"] = {"tile": self.cycle_tile.to_dict(),
                            "block": self.cycle_block.to_dict()}
        return {**out, "source": source}

    @classmethod
    def from_manifest(cls, data: Any, where: str = "manifest trust") -> TrainingStatistics:
        if not isinstance(data, dict) or data.get("version") != STATISTICS_VERSION:
            raise UserError(f"{where}: not trust statistics of version {STATISTICS_VERSION} "
                            "(record them again: ssum bundle stats)")
        if data.get("features") != list(FEATURES) or data.get("block_px") != BLOCK_PX:
            raise UserError(f"{where}: recorded for other statistics than this version computes "
                            f"({data.get('features')}); record them again: ssum bundle stats")
        width = len(FEATURES)
        cycle = data.get("cycle")
        cycle_tile = cycle_block = None
        if cycle is not None:
            if not isinstance(cycle, dict):
                raise UserError(f"{where}.cycle must be an object")
            cycle_tile = Envelope.from_dict(cycle.get("tile"), 1, f"{where}.cycle.tile")
            cycle_block = Envelope.from_dict(cycle.get("block"), 1, f"{where}.cycle.block")
        harm = data.get("harm")
        return cls(Envelope.from_dict(data.get("tile"), width, f"{where}.tile"),
                   Envelope.from_dict(data.get("block"), width, f"{where}.block"),
                   cycle_tile, cycle_block, int(data.get("images", 0)),
                   int(data.get("blocks", 0)),
                   None if harm is None else HarmModel.from_dict(harm, f"{where}.harm"))


@dataclass(frozen=True)
class TrustResult:
    """score = product of the components; outlier: the input statistic farthest beyond the
    training range ("" when none is); map: (rows, cols) block scores, or None."""

    score: float
    components: dict[str, float]
    outlier: str
    map: np.ndarray | None = None

    def header(self) -> dict[str, Any]:
        """The converted tile's `trust` header field."""
        out: dict[str, Any] = {"score": round(self.score, 4),
                               "components": {k: round(v, 4) for k, v in self.components.items()},
                               "outlier": self.outlier or None}
        if self.map is not None:
            out["map"] = [int(self.map.shape[0]), int(self.map.shape[1])]
        return out


def cycle_residuals(prepared: np.ndarray, rendered: np.ndarray,
                    grid: tuple[int, int]) -> tuple[float, np.ndarray]:
    """RMS of prepared - (a * rendered + b) over the tile and per block. (a, b) is the
    least-squares intensity fit over the tile's blocks that agree (RMS residual of a first fit
    over all at most INLIER_FACTOR times the blocks' median), so that a wrong region does not
    spread its error over the rest; a negative gain (an inverted rendering) is not fitted away:
    a = 0, b = the mean."""
    prepared = np.asarray(prepared, np.float64)
    blocks_in, blocks_out = cut_blocks(prepared, grid), cut_blocks(rendered, grid)
    gain, offset = affine_intensity_fit(blocks_out, blocks_in)
    rms = np.sqrt(((blocks_in - (gain * blocks_out + offset)) ** 2).mean(axis=(1, 2)))
    agree = rms <= INLIER_FACTOR * np.median(rms)
    if not agree.all():
        gain, offset = affine_intensity_fit(blocks_out[agree], blocks_in[agree])
    if gain < 0:
        gain, offset = 0.0, float(prepared.mean())
    squared = (prepared - (gain * rendered + offset)) ** 2
    return float(np.sqrt(squared.mean())), np.sqrt(cut_blocks(squared, grid).mean(axis=(1, 2)))


class TrustJudge:
    """Measures tiles and scores them against a bundle's training statistics (None: measure
    only, to record them). `reverse` renders a converted tile back as OSR (the bundle's
    SEM->OSR generator), `close` releases it."""

    def __init__(self, statistics: TrainingStatistics | None, reverse: Render | None = None,
                 close: Callable[[], None] | None = None) -> None:
        self.statistics = statistics
        cycled = statistics is None or statistics.cycle_tile is not None
        self.reverse = reverse if cycled else None
        self._close = close

    def describe(self) -> str:
        """One line on what this judge scores with."""
        if self.statistics is None:
            return "no trust score: the bundle has no trust statistics (ssum bundle stats)"
        cycle = "and the cycle through the SEM->OSR generator" if self.cycles else \
            "(no cycle: the bundle has no SEM->OSR generator)"
        return f"trust score: statistics of {self.statistics.images} training images {cycle}"

    @property
    def cycles(self) -> bool:
        """Whether the cycle is measured (a reverse generator, and training figures for it)."""
        return self.reverse is not None

    def measure(self, measured: np.ndarray, prepared: np.ndarray,
                converted: np.ndarray | None, blocks: bool = True) -> Measurement:
        """measured: the input as float [0, 1]; prepared: as the network saw it; converted: the
        network's output (needed only when `cycles`); blocks: the blocks' statistics too."""
        grid = block_grid(measured.shape)
        features = input_statistics(measured)
        block_features = input_statistics(cut_blocks(measured, grid)) if blocks else None
        if self.reverse is None or converted is None:
            return Measurement(features, block_features, grid)
        rendered = self.reverse(np.clip(converted, 0.0, 1.0))
        cycle, block_cycle = cycle_residuals(prepared, rendered, grid)
        return Measurement(features, block_features, grid, cycle, block_cycle)

    def harm_features(self, measured: np.ndarray, prepared: np.ndarray, converted: np.ndarray,
                      features: np.ndarray | None = None) -> np.ndarray:
        """HARM_FEATURES of a tile: its statistics, their excess over the training range, the
        output's statistics, both bright-phase fractions and the optical re-rendering's
        correlation with the input. features: the input's statistics, when already measured."""
        if self.statistics is None:
            raise RuntimeError("no training statistics to measure the excess against")
        inputs = input_statistics(measured) if features is None else features
        output = np.clip(np.asarray(converted, np.float64), 0.0, 1.0)
        return np.concatenate([inputs, self.statistics.tile.excess(inputs),
                               input_statistics(output),
                               [bright_fraction(measured), bright_fraction(output),
                                render_correlation(prepared, converted)]])

    def judge(self, measured: np.ndarray, prepared: np.ndarray, converted: np.ndarray,
              with_map: bool = True) -> TrustResult:
        """The score: with a harm model, P(the conversion helps); else exp(-total excess)."""
        statistics = self.statistics
        if statistics is None:
            raise RuntimeError("no training statistics to judge against")
        m = self.measure(measured, prepared, converted, blocks=with_map)
        excess = statistics.tile.excess(m.features)
        worst = int(np.argmax(excess))
        total, components = float(excess[worst]), {"stats": math.exp(-float(excess[worst]))}
        blocks = None
        if m.block_features is not None:
            blocks = statistics.block.excess(m.block_features).max(axis=1)
        if m.cycle is not None and m.block_cycle is not None \
                and statistics.cycle_tile is not None and statistics.cycle_block is not None:
            cycle = float(statistics.cycle_tile.excess(np.array([m.cycle]), upper_only=True)[0])
            components["cycle"] = math.exp(-cycle)
            total += cycle
            if blocks is not None:
                blocks = blocks + statistics.cycle_block.excess(m.block_cycle[:, None],
                                                                upper_only=True)[:, 0]
        trust_map = None if blocks is None else np.exp(-blocks).astype(np.float32).reshape(m.grid)
        score = math.exp(-total)
        if statistics.harm is not None:
            features = self.harm_features(measured, prepared, converted, m.features)
            score = 1.0 - statistics.harm.probability(features)
            components["helpful"] = score
        return TrustResult(score, components,
                           FEATURES[worst] if excess[worst] > 0 else "", trust_map)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None
