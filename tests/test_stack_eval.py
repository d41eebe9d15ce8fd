"""`ssum eval --stacks`: the three arms scored on simulated multilayer stacks, the height map
against the true surface, in a report and a figure."""

from __future__ import annotations

import json

from edge.inference.converter import Converter
from ssum.cli import main
from trainer.evaluation.stacks import StackEvalSettings, evaluate_stacks, height_errors, scene_for
from trainer.sim.zstack import StackParams

SMALL = StackEvalSettings(size=128, stack=StackParams(planes=4))


def test_without_a_model_the_fused_tile_agrees_with_the_sem_better_than_any_plane():
    """Identity 'conversion': the arms then score the planes and the fused tile themselves."""
    report = evaluate_stacks([5], lambda image: image, SMALL)
    summary = report["summary"]
    assert summary["fused"]["frc_1_7_nm"] < summary["best_plane_oracle"]["frc_1_7_nm"]
    scene = report["scenes"][0]
    assert scene["fused"]["psnr"] == scene["fused"]["psnr_input"]  # identity: same image


def test_the_planes_can_be_converted_by_their_own_model():
    import numpy as np

    same = evaluate_stacks([5], lambda image: image, SMALL)["scenes"][0]
    flat = evaluate_stacks([5], lambda image: image, SMALL,
                           convert_planes=lambda image: np.full_like(image, 0.5))["scenes"][0]
    assert flat["fused"] == same["fused"]  # the fused tile keeps its model
    assert flat["best_plane_oracle"]["psnr"] != same["best_plane_oracle"]["psnr"]
    assert flat["best_plane_oracle"]["psnr_input"] == same["best_plane_oracle"]["psnr_input"]


def test_the_height_error_is_zero_for_the_true_surface_and_grows_when_it_is_wrong():
    from edge.imaging.focus import fuse_stack

    scene = scene_for(6, SMALL)
    fused = fuse_stack(scene.planes, scene.z_nm)
    dy, dx = scene.drift_px[fused.reference]
    assert abs(dy) + abs(dx) > 0  # the reference plane drifted: the truth must be moved too
    exact = type(fused)(fused.image, scene.height_nm, fused.shifts_px, 0)  # first plane's frame
    assert height_errors(exact, scene)["mae_nm"] == 0.0
    raised = type(fused)(fused.image, scene.height_nm + 250.0, fused.shifts_px, 0)
    errors = height_errors(raised, scene)
    assert errors["mae_nm"] == errors["mae_near_steps_nm"] == 250.0
    assert errors["level_pairs_ordered"] == 1.0
    reversed_map = type(fused)(fused.image, -scene.height_nm, fused.shifts_px, 0)
    assert height_errors(reversed_map, scene)["level_pairs_ordered"] == 0.0


def test_ssum_eval_stacks_writes_its_report_and_figure(tmp_path, tiny_bundle_source, capsys,
                                                       monkeypatch):
    calls = []
    convert = Converter.convert
    monkeypatch.setattr(Converter, "convert", lambda self, raw: calls.append(1)
                        or convert(self, raw))
    out = tmp_path / "eval"
    assert main(["eval", "--stacks", "--seeds", "7", "--planes", "3", "--bundle",
                 str(tiny_bundle_source), "--plane-bundle", str(tiny_bundle_source),
                 "--out", str(out)]) == 0
    report = json.loads((out / "stacks.json").read_text())
    assert report["planes"] == 3 and report["seeds"] == [7]
    assert report["plane_bundle"] == report["bundle"]
    assert {"best_plane_oracle", "sharpest_plane", "fused", "height"} <= set(report["summary"])
    assert (out / "stack_example.png").stat().st_size > 10_000
    assert len(calls) == 3 + 1  # each plane and the fused tile once, the figure included
    assert "(b) fused tile, converted" in capsys.readouterr().out
    assert main(["eval", "--stacks", "--planes", "1", "--out", str(out)]) == 2  # a user error
