"""`ssum eval --finetune`: runs from a bundle and from scratch on held-out-domain pairs, the
same steps each, scored on held-out pairs (a tiny model here; the real study is a command)."""

import json

import pytest
import torch

from edge.inference.converter import Converter
from ssum.cli import main
from trainer.evaluation.finetune import FinetuneSettings, run_finetune, write_finetune


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


@pytest.mark.parametrize(("argv", "message"), [
    (["--counts", "4,x"], "--counts must be comma-separated integers"),
    (["--counts", "2"], "each of at least 4 pairs"),
    (["--steps", "-1"], "--steps must be at least 1"),
    (["--starts", "bundle,warm"], "--starts: one or both of bundle, scratch"),
    (["--bundle-lr=-1e-4"], "learning rates must be positive"),
])
def test_bad_options_are_one_line_errors(tiny_bundle, tmp_path, capsys, argv, message):
    assert main(["eval", "--finetune", "--bundle", str(tiny_bundle), "--out",
                 str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
