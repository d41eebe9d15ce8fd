"""The trust score's harm model: the ridge logistic fit on known cases, its manifest record
(round trip, validation), `ssum bundle harm` fitting it onto a bundle from pairs folders (and
refusing data without both kinds of tile), and the judge scoring with it."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from tiny_bundle import TRUST_SIZE

from edge.errors import UserError
from edge.imaging.imageio import write_tiff16
from edge.inference.bundle import load_bundle
from edge.inference.converter import Converter, ConverterSettings
from edge.inference.trust import HARM_FEATURES, HarmModel, TrainingStatistics, render_correlation
from ssum.cli import main
from trainer.evaluation.harm import HarmData, cross_validated_auroc, fit_logistic
from trainer.evaluation.trust import auroc
from trainer.sim.pairs import make_pair


def _linear_case(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features whose first column alone decides harm (with some label noise), the rest noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(HARM_FEATURES))) * rng.uniform(0.1, 10, len(HARM_FEATURES))
    x[:, 0] = rng.normal(size=n)
    harmful = x[:, 0] + rng.normal(0, 0.3, n) > 0.2
    return x, harmful


def test_the_fit_finds_the_one_informative_feature():
    x, harmful = _linear_case()
    model = fit_logistic(x, harmful)
    assert np.argmax(np.abs(model.coef)) == 0 and model.coef[0] > 0
    held_out, truth = _linear_case(seed=1)
    helpful = [1.0 - model.probability(row) for row in held_out]
    assert auroc(helpful, truth) > 0.95
    assert cross_validated_auroc(HarmData(x, harmful, ()), folds=5) > 0.95
    shuffled = HarmData(x, np.random.default_rng(2).permutation(harmful), ())
    assert cross_validated_auroc(shuffled, folds=5) < 0.7  # nothing to learn: near chance


def test_a_stronger_ridge_shrinks_the_coefficients():
    x, harmful = _linear_case()
    weak, strong = fit_logistic(x, harmful, l2=0.01), fit_logistic(x, harmful, l2=100.0)
    assert np.abs(strong.coef).sum() < np.abs(weak.coef).sum()


def test_the_harm_model_round_trips_through_the_manifest_and_is_validated():
    x, harmful = _linear_case()
    model = fit_logistic(x, harmful)
    record = json.loads(json.dumps(model.to_dict()))
    again = HarmModel.from_dict(record, "trust.harm")
    assert again.probability(x[3]) == pytest.approx(model.probability(x[3]), rel=1e-6)
    with pytest.raises(UserError, match="trust.harm"):
        HarmModel.from_dict({**record, "features": record["features"][:-1]}, "trust.harm")
    with pytest.raises(UserError, match="trust.harm"):
        HarmModel.from_dict({**record, "coef": record["coef"][:-1]}, "trust.harm")
    with pytest.raises(UserError, match="trust.harm"):
        HarmModel.from_dict({**record, "version": 99}, "trust.harm")


def test_render_correlation_tells_a_consistent_output_from_an_inverted_one():
    sem = make_pair(5, 128)[1]
    prepared = cv2.GaussianBlur(sem, (0, 0), 2.5)
    assert render_correlation(prepared, sem) > 0.9
    assert render_correlation(prepared, 1.0 - sem) < -0.9
    assert render_correlation(prepared, np.full_like(sem, 0.5)) == 0.0


def _write_pairs(folder, pairs) -> None:
    for i, (osr, sem) in enumerate(pairs):
        write_tiff16(folder / "osr" / f"{i:04d}.tif", osr)
        write_tiff16(folder / "sem" / f"{i:04d}.tif", sem)


def _helped_and_harmed(bundle, n: int) -> tuple[list, list]:
    """Helped: in-domain tiles whose SEM is (near) what the model makes; harmed: odd tiles
    (blurred, inverted, noisy) whose SEM is the input itself, as test_trust_eval builds them."""
    rng = np.random.default_rng(0)
    tiles = [make_pair(seed, TRUST_SIZE)[0] for seed in range(6100, 6100 + n)]
    with Converter.from_bundle(bundle, ConverterSettings(threads=1, trust=False)) as converter:
        made = [converter.convert(x) for x in tiles]
    helped = [(x, np.clip(y + rng.normal(0, 0.02, y.shape), 0, 1).astype(np.float32))
              for x, y in zip(tiles, made, strict=True)]
    odd = [cv2.GaussianBlur(x, (0, 0), 2.0) if i % 3 == 0 else 1.0 - x if i % 3 == 1 else
           np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
           for i, x in enumerate(tiles)]
    return helped, [(x, x) for x in odd]


def test_bundle_harm_fits_the_model_and_the_judge_scores_with_it(trusted_bundle, tmp_path,
                                                                  capsys):
    helped, harmed = _helped_and_harmed(trusted_bundle, 8)
    _write_pairs(tmp_path / "fit", helped + harmed)
    assert main(["bundle", "harm", str(trusted_bundle), "--data", str(tmp_path / "fit")]) == 0
    said = re.search(r"harm model fitted on 16 pairs, (\d+) harmed", capsys.readouterr().out)
    bundle = load_bundle(trusted_bundle)
    harm = bundle.manifest["trust"]["harm"]
    assert said and harm["features"] == list(HARM_FEATURES)
    harmed = harm["source"]["harmful"]
    assert int(said.group(1)) == harmed and 8 <= harmed < 16  # the odd tiles, -inf dB, and more
    assert TrainingStatistics.from_manifest(bundle.manifest["trust"]).harm is not None
    assert main(["bundle", "info", str(trusted_bundle)]) == 0
    assert f"harm model: fitted on 16 pairs ({harmed} harmed)" in capsys.readouterr().out

    fresh_helped, fresh_harmed = _helped_and_harmed(trusted_bundle, 11)
    with Converter.from_bundle(bundle, ConverterSettings(threads=1, trust=True)) as converter:
        results = [converter.trust(x, converter.convert(x))
                   for x, _ in fresh_helped[8:] + fresh_harmed[8:]]
    assert all(r is not None and r.score == r.components["helpful"] for r in results)
    scores = [r.score for r in results if r is not None]
    assert min(scores[:3]) > max(scores[3:]), scores

    assert main(["bundle", "stats", str(trusted_bundle), "--data", str(tmp_path / "fit")]) == 0
    assert "and was removed: fit it again" in capsys.readouterr().out
    assert "harm" not in load_bundle(trusted_bundle).manifest["trust"]


def test_bundle_harm_without_both_kinds_of_tile_is_a_one_line_error(trusted_bundle, tmp_path,
                                                                    capsys):
    helped, harmed = _helped_and_harmed(trusted_bundle, 6)
    _write_pairs(tmp_path / "fit", helped + harmed[:2])
    before = (trusted_bundle / "manifest.json").read_text()
    assert main(["bundle", "harm", str(trusted_bundle), "--data", str(tmp_path / "fit")]) == 2
    err = capsys.readouterr().err
    assert "2 of 8 pairs are harmed" in err and "Traceback" not in err
    assert (trusted_bundle / "manifest.json").read_text() == before
