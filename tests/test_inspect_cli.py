"""`ssum inspect` on files, and `ssum eval --inspection`'s scoring; the real SEM pairs of
shared/data/real-sem when present."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.imaging.imageio import read_image, write_tiff16
from ssum.cli import main
from ssum.commands.eval_inspection import parse_seeds
from trainer.evaluation.inspection import evaluate_inspection, format_table, match
from trainer.sim.inspection import make_case

KEYS = ["id", "x_px", "y_px", "bbox_px", "x_nm", "y_nm", "area_nm2", "polarity", "class", "score"]


def test_inspect_writes_the_three_outputs_with_the_documented_keys(tmp_path, capsys):
    case = make_case(11, size=192)
    write_tiff16(tmp_path / "ref.tif", case.reference["sem"])
    write_tiff16(tmp_path / "die.tif", case.inspected["sem"])
    code = main(["inspect", "--reference", str(tmp_path / "ref.tif"), "--out",
                 str(tmp_path / "out"), str(tmp_path / "die.tif")])
    assert code == 0 and "die.defects.json" in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "die.defects.json").read_text())
    assert list(result) == ["image", "inspected_region_px", "defects"]
    assert result["defects"] and all(list(d) == KEYS for d in result["defects"])
    x0, y0, x1, y1 = result["inspected_region_px"]
    assert 0 < x0 < x1 <= 192 and 0 < y0 < y1 <= 192
    found = [(d["x_px"], d["y_px"]) for d in result["defects"]]
    assert all(any(abs(fx - t.x_px) < 8 and abs(fy - t.y_px) < 8 for fx, fy in found)
               for t in case.truth if t.size_nm >= 50)
    for name in ("die.klarf", "die.klarf.json", "die.overlay.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_converted_detections_are_confirmed_by_the_raw_images(tmp_path):
    """With the shipped bundle, `--convert` finds the true defects of this case and, with
    `--no-confirm`, also a smudge the model paints differently into the two conversions."""
    case = make_case(15, size=320)
    write_tiff16(tmp_path / "ref.tif", case.reference["osr"])
    write_tiff16(tmp_path / "die.tif", case.inspected["osr"])
    found = {}
    for flags in ([], ["--no-confirm"]):
        out = tmp_path / (flags[0][2:] if flags else "confirm")
        assert main(["inspect", "--convert", "--reference", str(tmp_path / "ref.tif"),
                     "--false-alarm-rate", "1e-8", "--out", str(out), *flags,
                     str(tmp_path / "die.tif")]) == 0
        result = json.loads((out / "die.defects.json").read_text())
        found[out.name] = {(d["x_px"], d["y_px"]) for d in result["defects"]}
    assert found["confirm"] < found["no-confirm"]
    assert all(any(abs(x - t.x_px) < 8 and abs(y - t.y_px) < 8 for x, y in found["confirm"])
               for t in case.truth if t.size_nm >= 50)
    assert all(any(abs(x - t.x_px) < 8 and abs(y - t.y_px) < 8 for t in case.truth)
               for x, y in found["confirm"])


def test_inspect_cell_to_cell_converts_an_array_image_and_finds_its_defects(tmp_path):
    """No reference: the converted image's own cells (pitch detected), confirmed by the raw
    image's cells."""
    case = make_case(20, size=256, array=True)
    write_tiff16(tmp_path / "die.tif", case.inspected["osr"])
    assert main(["inspect", "--mode", "cell", "--convert", "--out", str(tmp_path / "out"),
                 str(tmp_path / "die.tif")]) == 0
    result = json.loads((tmp_path / "out" / "die.defects.json").read_text())
    assert result["inspected_region_px"] == [19, 19, 237, 237]
    found = sorted((d["class"], round(d["x_px"]), round(d["y_px"])) for d in result["defects"])
    expected = sorted((t.kind, round(t.x_px), round(t.y_px)) for t in case.truth)
    assert len(found) == len(expected) == 2
    for (kind, x, y), (truth_kind, tx, ty) in zip(found, expected):
        assert kind == truth_kind and abs(x - tx) <= 3 and abs(y - ty) <= 3


def test_inspect_refuses_a_mode_without_its_reference(tmp_path, capsys):
    assert main(["inspect", "--out", str(tmp_path), str(tmp_path / "x.tif")]) == 2
    assert "needs --reference" in capsys.readouterr().err


def test_the_evaluation_scores_matches_and_false_alarms():
    report = evaluate_inspection([3], lambda image: image, [1e-6], ["golden"], size=192)
    rows = {row["input"]: row for row in report["results"]}
    assert set(rows) == {"osr", "converted", "confirmed", "sem"}
    assert rows["confirmed"]["detections"] <= rows["converted"]["detections"]
    assert rows["confirmed"]["recall"]["all"] > 0.5
    sem = rows["sem"]
    assert sem["tiles"] == 1 and sem["recall"]["all"] > 0.5
    assert sem["false_alarms"] == sem["detections"] - round(sem["recall"]["all"] *
                                                            sem["injected"]["all"])
    assert "| golden | sem |" in format_table(report, 1e-6)
    assert match([], make_case(3, size=192).truth) == {}
    assert parse_seeds("200-202,7") == [200, 201, 202, 7]


def test_cell_to_cell_is_scored_on_an_array_with_its_pitch_detected():
    case = make_case(20, size=256, array=True)
    assert case.pitch_px == (99.0, 90.0) and make_case(20, size=256).pitch_px is None
    report = evaluate_inspection([20], lambda image: image, [1e-6], ["cell"], size=256)
    rows = {row["input"]: row for row in report["results"]}
    assert {row["mode"] for row in report["results"]} == {"cell"}
    assert rows["sem"]["tiles"] == 1 and rows["sem"]["recall"]["all"] == 1.0
    assert rows["osr"]["injected"]["all"] == len(case.truth) == 2


@pytest.mark.parametrize("case", [1, 2, 3])
def test_the_real_pairs(real_sem_dir, tmp_path, case):
    """Case 1 holds a bright blob, case 2 defects too, case 3 none."""
    inspected = real_sem_dir / f"case{case}_inspected_image.tif"
    assert main(["inspect", "--reference", str(real_sem_dir / f"case{case}_reference_image.tif"),
                 "--out", str(tmp_path), str(inspected)]) == 0
    defects = json.loads((tmp_path / f"{inspected.stem}.defects.json").read_text())["defects"]
    if case == 3:
        assert defects == []
        return
    assert defects
    if case == 1:
        image = read_image(inspected)
        brightest = max(defects, key=lambda d: image[round(d["y_px"]), round(d["x_px"])])
        assert brightest["polarity"] == "extra" and brightest["area_nm2"] > 20000
        assert image[round(brightest["y_px"]), round(brightest["x_px"])] > np.percentile(image, 99)
