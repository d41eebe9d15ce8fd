"""`ssum eval --robustness`: a bundle scored over a grid of simulated microscope conditions."""

import json

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from ssum.cli import main
from trainer.evaluation import metrics
from trainer.evaluation.baselines import oracle_affine
from trainer.evaluation.robustness import (
    FACTORS,
    RobustnessSettings,
    evaluate_robustness,
    grid_pairs,
)
from trainer.evaluation.trust import evaluate_trust
from trainer.sim.pairs import make_pair

REQUIRED = {"fwhm", "photons", "falloff", "contrast", "pixel_size", "misregistration"}


def test_every_required_factor_has_the_grid_centre_and_other_levels():
    by_name = {f.name: f for f in FACTORS}
    assert REQUIRED <= set(by_name) and set(RobustnessSettings().factors) == set(by_name)
    for factor in FACTORS:
        centres = [level for level in factor.levels if level.is_centre]
        assert len(centres) == 1 and len(factor.levels) >= 2, factor.name
        labels = [level.label for level in factor.levels]
        assert len(set(labels)) == len(labels), factor.name
    assert [lv.label for lv in by_name["contrast"].levels] == ["normal", "reversed"]


def test_cli_on_a_tiny_bundle_writes_the_table_json_and_plot(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "rob"
    chosen = ["contrast", "pixel_size", "misregistration"]
    assert main(["eval", "--robustness", "--bundle", str(tiny_bundle), "--seeds", "1",
                 "--size", "128", "--factors", ",".join(chosen), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "robustness.json").read_text())
    assert [f["name"] for f in report["factors"]] == chosen and report["seeds"] == [1]
    table = (out / "robustness.md").read_text()
    for factor in (f for f in FACTORS if f.name in chosen):
        got = next(f for f in report["factors"] if f["name"] == factor.name)
        assert [lv["label"] for lv in got["levels"]] == [lv.label for lv in factor.levels]
        for level in got["levels"]:
            row = f"| {factor.name} | {level['label']}{' *' if level['centre'] else ''} |"
            assert row in table and row in printed
            for frame in ("unregistered", "registered"):
                assert {"psnr_gain", "psnr_gain_over_affine", "ssim", "frc_ratio"} <= set(level[frame])
                assert level[frame]["n"] == 1
    centres = [next(lv for lv in f["levels"] if lv["centre"]) for f in report["factors"]]
    assert all(c["unregistered"] == centres[0]["unregistered"] for c in centres)  # one condition
    assert report["bundle"].startswith("tiny-0@")
    assert (out / "robustness.png").stat().st_size > 10_000


def test_scores_follow_their_definitions():
    settings = RobustnessSettings(seeds=(2,), size=128, factors=("contrast",))
    same = evaluate_robustness(lambda image: image, settings)["factors"][0]["levels"][0]
    osr, sem, _ = make_pair(2, 128)
    unregistered = same["unregistered"]
    assert unregistered["psnr_gain"] == 0.0 and unregistered["frc_ratio"] == 1.0
    oracle = metrics.psnr(oracle_affine(osr, sem), sem)
    assert unregistered["psnr_gain_over_affine"] == pytest.approx(metrics.psnr(osr, sem) - oracle)
    assert same["registered"]["ssim_input"] > unregistered["ssim_input"] + 0.02  # aligned input

    near_sem = cv2.GaussianBlur(sem, (0, 0), 2.0)

    def cheat(image):  # a "converter" that returns (almost) the SEM image of the pair given
        return near_sem if np.array_equal(image, osr) else image

    perfect = evaluate_robustness(cheat, settings)["factors"][0]["levels"][0]["unregistered"]
    assert perfect["psnr_gain"] > 3.0 and perfect["psnr_gain_over_affine"] > 3.0
    assert perfect["ssim"] > perfect["ssim_input"] + 0.2 and perfect["frc_ratio"] < 0.9


@pytest.mark.parametrize("argv, message", [
    (["--factors", "fwhm,colour"], "colour"),
    (["--size", "32"], "--size"),
    (["--seeds", "x"], "--seeds"),
    (["--inspection"], "separate"),
])
def test_user_errors_are_one_line(tiny_bundle, tmp_path, capsys, argv, message):
    code = main(["eval", "--robustness", "--bundle", str(tiny_bundle), "--out", str(tmp_path),
                 *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_settings_refuse_no_seeds():
    with pytest.raises(UserError, match="seed"):
        RobustnessSettings(seeds=()).validated()


def test_the_trust_score_is_judged_over_the_grid(tmp_path, trusted_bundle_source, capsys):
    """`--robustness --trust`: every distinct grid tile judged once, the AUROC written."""
    out = tmp_path / "eval"
    assert main(["eval", "--robustness", "--trust", "--bundle", str(trusted_bundle_source), "--seeds",
                 "300", "--size", "128", "--factors", "fwhm,contrast", "--out", str(out)]) == 0
    report = json.loads((out / "trust.json").read_text())
    names = [tile["name"] for tile in report["tiles"]]
    assert len(names) == len(set(names)) == 6  # fwhm's 5 levels (one the centre) + reversed
    assert all(0.0 <= tile["score"] <= 1.0 for tile in report["tiles"])
    assert "AUROC" in capsys.readouterr().out
    # the grid's own conversions were judged: the same figures as converting every tile afresh
    grid = grid_pairs(RobustnessSettings(seeds=(300,), size=128, factors=("fwhm", "contrast")))
    fresh = evaluate_trust(trusted_bundle_source, [(osr, sem) for _, osr, sem in grid],
                           register=True, names=[name for name, _, _ in grid])
    assert [t.name for t in fresh.tiles] == names
    assert [t.score for t in fresh.tiles] == pytest.approx([t["score"] for t in report["tiles"]])
    assert [t.psnr_gain for t in fresh.tiles] == pytest.approx(
        [t["psnr_gain"] for t in report["tiles"]])


def test_an_inverted_input_is_converted_and_judged_inverted(tmp_path, trusted_bundle_source):
    """`--invert-input`: the grid converted as 1 - x, and its trust judged on the same."""
    out = tmp_path / "eval"
    assert main(["eval", "--robustness", "--trust", "--invert-input", "--bundle",
                 str(trusted_bundle_source), "--seeds", "300", "--size", "128", "--factors",
                 "contrast", "--out", str(out)]) == 0
    report = json.loads((out / "robustness.json").read_text())
    assert report["invert_input"] is True
    judged = json.loads((out / "trust.json").read_text())["tiles"]
    grid = grid_pairs(RobustnessSettings(seeds=(300,), size=128, factors=("contrast",)))
    fresh = evaluate_trust(trusted_bundle_source, [(1.0 - osr, sem) for _, osr, sem in grid],
                           register=True, names=[name for name, _, _ in grid])
    assert [t.score for t in fresh.tiles] == pytest.approx([t["score"] for t in judged], abs=1e-4)
    assert [t.name for t in fresh.tiles] == [t["name"] for t in judged]
