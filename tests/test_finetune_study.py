"""`ssum eval --finetune`: runs from a bundle and from scratch on held-out-domain pairs, the
same steps each, scored on held-out pairs (a tiny model here; the real study is a command)."""

import json
from pathlib import Path

import pytest
import torch

from edge.inference.converter import Converter
from ssum.cli import main
from trainer.evaluation.finetune import (
    FinetuneSettings,
    checkpoint_converter,
    eval_pairs,
    run_finetune,
    score,
    write_finetune,
)


def test_both_starts_train_the_same_steps_on_nested_holdout_pairs(tiny_bundle, tmp_path):
    settings = FinetuneSettings(counts=(8, 4), steps=4, eval_seeds=(900,), size=128, preset="tiny")
    with Converter.from_bundle(tiny_bundle) as conv:
        report = run_finetune(tiny_bundle, tmp_path / "ft", settings, conv.convert)
    runs = {(r["start"], r["pairs"]): r for r in report["runs"]}
    assert sorted(runs) == [("bundle", 4), ("bundle", 8), ("scratch", 4), ("scratch", 8)]
    for (start, n), run in runs.items():
        assert run["steps"] == 4 and run["cpu_s"] > 0  # tiny: batch 2, so 2 epochs or 1
        state = torch.load(run["checkpoint"], weights_only=False)
        init = state["training"].get("init")
        assert (init or {}).get("kind") == ("bundle" if start == "bundle" else None)
        assert run["lr"] == (settings.bundle_lr if start == "bundle" else settings.scratch_lr)
        scores = run["scores"]["unregistered"]
        assert scores["n"] == 1 and set(scores) >= {"psnr_gain_over_affine", "frc_ratio", "ssim"}
    metas = [json.loads((tmp_path / "ft" / "data" / f"n{n}" / "meta.json").read_text())
             for n in (4, 8)]
    assert all(m["domain"] == "holdout" for m in metas)
    assert [p["seed"] for p in metas[0]["pairs"]] == [p["seed"] for p in metas[1]["pairs"]][:4]
    paths = write_finetune(report, tmp_path / "ft")
    table = paths["table"].read_text()
    assert "the bundle, as shipped" in table and table.count("| scratch |") == 2
    assert paths["plot"].stat().st_size > 0
    assert json.loads(paths["json"].read_text())["bundle_scores"]["unregistered"]["n"] == 1


def test_pix2pix_runs_train_only_the_paired_networks(tiny_bundle, tmp_path):
    settings = FinetuneSettings(counts=(4,), steps=2, starts=("bundle",), eval_seeds=(900,),
                                size=128, preset="tiny", model="pix2pix")
    report = run_finetune(tiny_bundle, tmp_path / "ft", settings)
    (run,) = report["runs"]
    state = torch.load(run["checkpoint"], weights_only=False)
    assert run["model"] == state["config"]["model"] == "pix2pix"
    assert set(state["nets"]) == {"g_ab", "d_b"} and state["training"]["init"]["kind"] == "bundle"
    assert "pix2pix" in write_finetune(report, tmp_path / "ft")["table"].read_text()


def test_rescore_scores_the_same_checkpoints_on_other_pairs(tiny_bundle, tmp_path, capsys):
    settings = FinetuneSettings(counts=(4,), steps=2, starts=("scratch",), eval_seeds=(900,),
                                size=128, preset="tiny")
    report = run_finetune(tiny_bundle, tmp_path / "ft", settings)
    write_finetune(report, tmp_path / "ft")
    assert main(["eval", "--finetune", "--rescore", str(tmp_path / "ft"), "--seeds", "910,911",
                 "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "finetune.json").read_text())
    (before,), (after,) = report["runs"], again["runs"]
    assert {k: after[k] for k in before if k != "scores"} == \
        {k: v for k, v in before.items() if k != "scores"}
    assert again["settings"]["eval_seeds"] == [910, 911] and again["trained_eval_seeds"] == [900]
    assert after["scores"]["unregistered"]["n"] == 2
    fresh = score(checkpoint_converter(Path(before["checkpoint"])),
                  eval_pairs(FinetuneSettings(eval_seeds=(910, 911), size=128)), 10.0)
    assert after["scores"]["unregistered"]["psnr_gain"] == \
        pytest.approx(fresh["unregistered"]["psnr_gain"])
    assert again["bundle_scores"]["unregistered"]["n"] == 2
    Path(before["checkpoint"]).unlink()
    assert main(["eval", "--finetune", "--rescore", str(tmp_path / "ft"), "--seeds", "910",
                 "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint(s) missing" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--counts", "4,x"], "--counts must be comma-separated integers"),
    (["--counts", "2"], "each of at least 4 pairs"),
    (["--steps", "-1"], "--steps must be at least 1"),
    (["--starts", "bundle,warm"], "--starts: one or both of bundle, scratch"),
    (["--bundle-lr=-1e-4"], "learning rates must be positive"),
    (["--train-model", "gan"], "--train-model must be one of cyclegan, pix2pix"),
    (["--rescore", "nowhere", "--seeds", "1"], "no readable fine-tuning study there"),
    (["--rescore", "nowhere"], "--rescore needs --seeds"),
])
def test_bad_options_are_one_line_errors(tiny_bundle, tmp_path, capsys, argv, message):
    assert main(["eval", "--finetune", "--bundle", str(tiny_bundle), "--out",
                 str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
