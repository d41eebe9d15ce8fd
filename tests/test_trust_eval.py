"""trainer.evaluation.trust on a small synthetic case: in-domain tiles whose SEM reference is
(near) what the model makes are helpful, out-of-domain tiles whose reference is the input itself
are harmful; the AUROC and Spearman figures are those of the per-tile scores and labels."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from tiny_bundle import TRUST_SIZE

from edge.errors import UserError
from edge.inference.converter import Converter, ConverterSettings
from trainer.evaluation.trust import auroc, evaluate_trust, spearman
from trainer.sim.pairs import make_pair


def test_auroc_and_spearman_on_known_cases():
    assert auroc([0.9, 0.8, 0.3, 0.1], [False, False, True, True]) == 1.0
    assert auroc([0.1, 0.3, 0.8, 0.9], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5], [False, True]) == 0.5
    assert auroc([0.5, 0.4, 0.6], [False, True, False]) == 1.0
    assert math.isnan(auroc([0.2, 0.3], [True, True]))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 35]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_the_score_separates_harmful_from_helpful_tiles(trusted_bundle_source):
    rng = np.random.default_rng(0)
    tiles = [make_pair(seed, TRUST_SIZE)[0] for seed in (6000, 6001, 6002)]
    settings = ConverterSettings(threads=1)
    with Converter.from_bundle(trusted_bundle_source, settings) as converter:
        made = [converter.convert(x) for x in tiles]
    helpful = [(x, np.clip(y + rng.normal(0, 0.02, y.shape), 0, 1).astype(np.float32))
               for x, y in zip(tiles, made, strict=True)]
    odd = [cv2.GaussianBlur(tiles[0], (0, 0), 2.0), 1.0 - tiles[1],
           np.clip(tiles[2] + rng.normal(0, 0.05, tiles[2].shape), 0, 1).astype(np.float32)]
    harmful = [(x, x) for x in odd]  # the right answer is the input: converting it hurts
    names = ["in-0", "in-1", "in-2", "blurred", "inverted", "noisy"]
    result = evaluate_trust(trusted_bundle_source, helpful + harmful,
                            settings=ConverterSettings(threads=1), names=names)
    assert [t.name for t in result.tiles] == names
    assert [t.harmful for t in result.tiles] == [False] * 3 + [True] * 3, result.to_dict()
    scores = [t.score for t in result.tiles]
    assert result.auroc == auroc(scores, [t.harmful for t in result.tiles]) > 0.5
    assert result.spearman == spearman(scores, [t.psnr_gain for t in result.tiles]) > 0
    assert max(scores[3], scores[5]) < min(scores[:3])  # blurred and noisy: the lowest
    assert all(set(t.components) == {"stats", "cycle"} for t in result.tiles)
    record = result.to_dict()
    assert record["n"] == 6 and record["harmful"] == 3 and record["auroc"] == result.auroc
    assert record["tiles"][3]["psnr_gain"] is None  # -inf: the input was the reference


def test_a_bundle_without_trust_statistics_is_a_clear_error(tiny_bundle_source):
    tile = make_pair(1, 64)[0]
    with pytest.raises(UserError, match="has no trust statistics"):
        evaluate_trust(tiny_bundle_source, [(tile, tile)])


def test_eval_trust_scores_a_users_pairs_and_needs_them(trusted_bundle_source, tmp_path, capsys):
    from ssum.cli import main
    from trainer.sim.pairs import write_pairs

    pairs = write_pairs(tmp_path / "pairs", 4, 9500, TRUST_SIZE)
    out = tmp_path / "eval"
    assert main(["eval", "--trust", "--data", str(pairs), "--bundle", str(trusted_bundle_source),
                 "--out", str(out)]) == 0
    record = json.loads((out / "trust.json").read_text())
    assert record["n"] == 4 and [t["name"] for t in record["tiles"]] == [
        f"{i:04d}" for i in range(4)]
    assert f"trust over {pairs}: 4 tiles" in capsys.readouterr().out
    assert main(["eval", "--trust", "--bundle", str(trusted_bundle_source)]) == 2
    assert "--trust needs pairs with their SEM" in capsys.readouterr().err
