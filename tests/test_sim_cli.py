import json

import numpy as np
import tifffile

from edge.tools.scanfile import read_scan
from ssum.cli import main


def test_synth_pairs_writes_the_files(tmp_path, capsys):
    assert main(["synth", "pairs", "--out", str(tmp_path / "p"), "--n", "2", "--size", "64", "--no-misalign"]) == 0
    assert "wrote 2 pairs" in capsys.readouterr().out
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["misalign"] is False and meta["pairs"][1]["misregistration"]["dx_px"] == 0.0
    assert tifffile.imread(tmp_path / "p" / "sem" / "0001.tif").shape == (64, 64)


def test_synth_scan_writes_a_readable_scan(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", "scan", "--out", str(out), "--rows", "1", "--cols", "2", "--tile", "64",
                 "--overlap", "16", "--stage-error", "0"]) == 0
    scan = read_scan(out)
    assert len(scan.tiles) == 2 and str(out) in capsys.readouterr().out
    assert all(t["error_x_nm"] == 0.0 for t in scan.meta["simulation"]["tiles_true"])


def test_synth_scan_of_an_array_repeats_at_the_recorded_pitch(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["synth", "scan", "--out", str(out), "--rows", "1", "--cols", "1", "--tile", "256",
                 "--overlap", "0", "--sem-tiles", "--array", "10", "12"]) == 0
    scan = read_scan(out)
    assert scan.meta["simulation"]["array_pitch_nm"] == [900.0, 1080.0]
    sem = tifffile.imread(out / "ground_truth" / "sem_mosaic.tif").astype(np.float32)
    noise = float(np.mean(np.abs(sem[:, 90:180] - sem[:, 91:181])))  # pixel to pixel
    assert float(np.mean(np.abs(sem[:, 90:180] - sem[:, :90]))) < noise  # one pitch: alike
    assert main(["synth", "scan", "--out", str(tmp_path / "b"), "--array", "0", "3"]) == 2
    assert "--array" in capsys.readouterr().err


def test_synth_compare_real_writes_a_report(tmp_path, capsys, real_sem_dir):
    report = tmp_path / "r.json"
    assert main(["synth", "compare-real", "--real-dir", str(real_sem_dir), "--n-sim", "1",
                 "--out", str(report)]) == 0
    data = json.loads(report.read_text())
    assert len(data["real"]) == 6 and len(data["sim"]) == 1
    assert np.isfinite(data["sim_summary"]["noise_std"]["mean"])
    assert "| noise_std |" in capsys.readouterr().out


def test_bad_option_is_one_line_error(tmp_path, capsys):
    assert main(["synth", "scan", "--out", str(tmp_path / "s"), "--tile", "32", "--overlap", "40"]) == 2
    assert "--overlap" in capsys.readouterr().err


def test_synth_degrade_makes_test_pairs_from_sem_images(tmp_path, capsys):
    import cv2

    from edge.imaging.imageio import read_image
    from trainer.sim.pairs import make_pair

    sem_dir = tmp_path / "sem_in"
    sem_dir.mkdir()
    sem = make_pair(3, size=146, misalign=False)[1]
    cv2.imwrite(str(sem_dir / "chip.png"), np.round(sem * 255).astype(np.uint8))
    out = tmp_path / "pairs"
    assert main(["synth", "degrade", "--sem", str(sem_dir), "--out", str(out),
                 "--source-pixel-size", "7.3", "--seed", "1"]) == 0
    osr, ref = read_image(out / "osr" / "chip.tif"), read_image(out / "sem" / "chip.tif")
    assert osr.shape == ref.shape == (107, 107)  # 146 px at 7.3 nm -> 10 nm/px
    meta = json.loads((out / "meta.json").read_text())
    assert meta["pixel_size_nm"] == 10.0 and meta["source_pixel_nm"] == 7.3
    assert np.std(np.diff(osr, axis=1)) < np.std(np.diff(ref, axis=1))  # optically blurred
    assert main(["synth", "degrade", "--sem", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_synth_pairs_with_planes_writes_stacks_the_trainer_fuses(tmp_path, capsys):
    from edge.imaging.imageio import read_stack
    from trainer.data import load_pairs

    out = tmp_path / "stacks"
    assert main(["synth", "pairs", "--out", str(out), "--n", "2", "--size", "64",
                 "--planes", "3"]) == 0
    assert "stacks of 3 planes" in capsys.readouterr().out
    planes, z_nm = read_stack(out / "osr" / "0001.tif")
    meta = json.loads((out / "meta.json").read_text())
    assert len(planes) == 3 and z_nm == meta["pairs"][1]["z_nm"] and z_nm == sorted(z_nm)
    assert not np.allclose(planes[0], planes[-1], atol=0.02)  # focused at other heights
    pairs = load_pairs(out)
    assert pairs.names == ["0000", "0001"] and pairs.osr[0].shape == pairs.sem[0].shape == (64, 64)

    split = tmp_path / "planes"
    assert main(["synth", "pairs", "--out", str(split), "--n", "1", "--size", "64",
                 "--planes", "3", "--split-planes"]) == 0
    assert sorted(p.name for p in (split / "osr").iterdir()) == [f"0000_z{k}.tif" for k in range(3)]
    assert json.loads((split / "meta.json").read_text())["pairs"][0]["files"] == \
        [f"0000_z{k}.tif" for k in range(3)]
    for k in range(3):  # the same scene, one plane per pair
        assert np.allclose(read_stack(split / "osr" / f"0000_z{k}.tif")[0][0],
                           read_stack(out / "osr" / "0000.tif")[0][k], atol=1e-4)
    assert main(["synth", "pairs", "--out", str(split), "--planes", "3", "--domain", "holdout"]) == 2
    assert main(["synth", "pairs", "--out", str(split), "--split-planes"]) == 2
