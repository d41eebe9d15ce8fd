"""The trust score's harm model: which tiles does this bundle make worse?

Unfamiliar is not the same as wrong (docs/trust.md): a model trained on one microscope converts
many unfamiliar tiles well and some familiar-looking ones badly (a material order reversed
against the SEM's). So the score can be learned where the truth is known: pairs with their SEM,
from microscopes other than the training one (the randomized simulator, a user's own pairs).
Each pair is converted as the daemon converts it, measured with the judge's HARM_FEATURES and
labelled harmful as the evaluation labels it (registered PSNR gain < 0 or FRC ratio > 1); an
L2-regularised logistic regression on the standardised features gives P(harm), recorded in the
manifest (`trust.harm`) with the data it was fitted on. The score is then P(the conversion
helps).

    ssum bundle harm models/default --data runs/data/harm-rand --data runs/data/harm-narrow
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import to_float01
from edge.inference.bundle import Bundle, load_bundle, write_manifest
from edge.inference.converter import Converter, ConverterSettings
from edge.inference.trust import HarmModel
from trainer.evaluation.trust import auroc, score_tile

log = logging.getLogger(__name__)
L2 = 1.0  # the ridge on the standardised coefficients: a few hundred tiles, 23 features
MIN_PER_CLASS = 5  # fewer harmful (or helpful) tiles than this say nothing about the boundary


@dataclass(frozen=True)
class HarmData:
    """The fitting tiles: features (N, len(HARM_FEATURES)), harmful (N,), their names."""

    features: np.ndarray
    harmful: np.ndarray
    names: tuple[str, ...]


def measure_harm(bundle: Bundle, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
                 settings: ConverterSettings | None = None) -> HarmData:
    """Convert each (name, OSR, SEM) pair with the bundle (its harm model, if any, ignored),
    measure its HARM_FEATURES and label it (registered scoring)."""
    pixel_nm = float(bundle.manifest.get("pixel_size_nm", 10.0))
    trust = dict(bundle.manifest.get("trust") or {})
    if not trust:
        raise UserError(f"bundle {bundle.path} has no trust statistics: record them first "
                        "(ssum bundle stats)")
    trust.pop("harm", None)
    unfitted = Bundle(bundle.path, {**bundle.manifest, "trust": trust})
    rows, labels = [], []
    with Converter.from_bundle(unfitted, replace(settings or ConverterSettings(),
                                                 trust=True)) as converter:
        assert converter.judge is not None
        for name, osr, sem in pairs:
            if np.shape(osr) != np.shape(sem):
                raise UserError(f"pair {name}: OSR {np.shape(osr)} and SEM {np.shape(sem)} "
                                "differ in size")
            raw = to_float01(np.asarray(osr))
            output = converter.convert(osr)
            rows.append(converter.judge.harm_features(raw, converter.prepare(osr), output))
            tile = score_tile(name, 0.0, {}, raw, output, to_float01(np.asarray(sem)), pixel_nm,
                              register=True)
            labels.append(tile.harmful)
    return HarmData(np.array(rows), np.array(labels, bool), tuple(name for name, _, _ in pairs))


def fit_logistic(features: np.ndarray, harmful: np.ndarray, l2: float = L2) -> HarmModel:
    """Ridge logistic regression by Newton's method on features standardised by their mean and
    standard deviation (the intercept unpenalised)."""
    x, y = np.asarray(features, np.float64), np.asarray(harmful, np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    design = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    penalty = np.diag([l2] * x.shape[1] + [0.0])
    weights = np.zeros(design.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ weights, -50, 50)))
        gradient = design.T @ (p - y) + penalty @ weights
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    return HarmModel(tuple(mean), tuple(scale), tuple(weights[:-1]), float(weights[-1]))


def cross_validated_auroc(data: HarmData, folds: int = 5, l2: float = L2,
                          seed: int = 0) -> float:
    """AUROC of P(helpful) for tiles scored by models fitted without them (k folds)."""
    order = np.random.default_rng(seed).permutation(len(data.harmful))
    helpful = np.zeros(len(order))
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        model = fit_logistic(data.features[train], data.harmful[train], l2)
        helpful[fold] = [1.0 - model.probability(row) for row in data.features[fold]]
    return auroc(helpful.tolist(), data.harmful.tolist())


def fit_harm_model(bundle_dir: Path, data_dirs: Sequence[Path],
                   settings: ConverterSettings | None = None, l2: float = L2) -> dict[str, Any]:
    """Fit the bundle's harm model on the pairs folders (osr/, sem/) and record it in its
    manifest (`trust.harm`; a signed bundle loses its signature). Returns `trust.harm`."""
    from trainer.data import load_pairs
    from trainer.train import data_origin

    loaded = load_bundle(bundle_dir)
    start = time.monotonic()
    pairs = []
    for folder in data_dirs:
        loaded_pairs = load_pairs(folder)
        pairs += [(f"{Path(folder).name}/{name}", osr, sem) for name, osr, sem
                  in zip(loaded_pairs.names, loaded_pairs.osr, loaded_pairs.sem, strict=True)]
    data = measure_harm(loaded, pairs, settings)
    harmful = int(data.harmful.sum())
    if min(harmful, len(pairs) - harmful) < MIN_PER_CLASS:
        raise UserError(f"{harmful} of {len(pairs)} pairs are harmed by the model: a harm model "
                        f"needs at least {MIN_PER_CLASS} harmed and {MIN_PER_CLASS} helped; give "
                        "pairs from more varied microscopes (ssum synth pairs --domain randomized)")
    model = fit_logistic(data.features, data.harmful, l2)
    harm = {**model.to_dict(), "source": {
        "data": [str(d) for d in data_dirs],
        "data_origin": [data_origin(Path(d)) for d in data_dirs], "pairs": len(pairs), "harmful": harmful,
        "l2": l2, "cross_validated_auroc": round(cross_validated_auroc(data, l2=l2), 4),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - start, 1)}}
    write_manifest(loaded.path, {**loaded.manifest,
                                 "trust": {**loaded.manifest["trust"], "harm": harm}})
    log.info("bundle %s: harm model fitted on %d pairs (%d harmed)", loaded.path, len(pairs),
             harmful)
    return harm


