"""`ssum eval` end to end on small simulated pairs, evaluate_arrays, and the user errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from edge.errors import UserError
from edge.imaging.imageio import read_image, write_png8, write_tiff16
from ssum.cli import main
from trainer.evaluation import metrics
from trainer.evaluation.harness import evaluate_arrays, evaluate_sets
from trainer.sim.pairs import write_pairs

KEYS = {"psnr", "ssim", "epi", "frc_1_7_nm", "frc_halfbit_nm", "histogram_distance"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 registered 64 px pairs and 'predictions' = SEM + mild noise (8-bit PNG)."""
    root = write_pairs(tmp_path_factory.mktemp("pairs"), n=3, seed=1, size=64, misalign=False)
    rng = np.random.default_rng(0)
    for sem in sorted((root / "sem").iterdir()):
        pred = np.clip(read_image(sem) + rng.normal(0, 0.03, (64, 64)), 0, 1)
        write_png8(root / "pred" / f"{sem.stem}.png", pred)
    return root


def _strict_json(path: Path) -> dict:
    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_evaluate_arrays_keys_and_gain() -> None:
    rng = np.random.default_rng(2)
    ref = rng.random((64, 64)).astype(np.float32)
    inp = np.clip(ref + rng.normal(0, 0.2, ref.shape), 0, 1).astype(np.float32)
    pred = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1).astype(np.float32)
    out = evaluate_arrays(pred, inp, ref, 10.0)
    assert set(out) == KEYS | {f"{k}_input" for k in KEYS} | {"psnr_gain"}
    assert out["psnr"] == metrics.psnr(pred, ref) and out["psnr_input"] == metrics.psnr(inp, ref)
    assert out["psnr_gain"] == pytest.approx(out["psnr"] - out["psnr_input"])
    assert out["psnr_gain"] > 0


def test_cli_writes_metrics_and_report(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval"
    assert main(["eval", "--data", str(data), "--pred", str(data / "pred"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^\s*model\s", printed, re.MULTILINE) and "affine" in printed
    doc = _strict_json(out / "metrics.json")
    assert doc["version"] == 1 and doc["pixel_size_nm"] == 10.0
    assert doc["images"] == ["0000", "0001", "0002"]
    assert list(doc["methods"]) == ["model", "identity", "affine", "rl"]
    assert doc["methods"]["rl"]["info"]["psf"] == "trainer.sim.optics.optical_psf"
    model = doc["methods"]["model"]
    assert set(model["mean"]) == set(model["images"]["0000"])
    for key in ("psnr", "ssim", "psnr_gain"):
        per_image = [model["images"][n][key] for n in doc["images"]]
        assert model["mean"][key] == pytest.approx(np.mean(per_image))
    assert model["mean"]["psnr_gain"] > 5  # SEM + mild noise is far better than the OSR
    identity = doc["methods"]["identity"]["mean"]
    assert identity["psnr_gain"] == 0 and identity["psnr"] == identity["psnr_input"]
    for method in doc["methods"].values():  # every null per-image value is counted
        for key in method["mean"]:
            nulls = sum(method["images"][n][key] is None for n in doc["images"])
            assert method["not_finite"].get(key, 0) == nulls
    index = (out / "report" / "index.html").read_text()
    pages = re.findall(r'src="([^"]+\.png)"', index)
    assert len(pages) == 6 and all((out / "report" / p).stat().st_size > 1000 for p in pages)


def test_pixel_size_from_meta_json_and_max_images(data: Path, tmp_path: Path) -> None:
    meta = json.loads((data / "meta.json").read_text())
    copy = tmp_path / "d"
    (copy / "osr").mkdir(parents=True)
    (copy / "sem").mkdir()
    for name in ("0000.tif", "0001.tif"):
        for sub in ("osr", "sem"):
            write_tiff16(copy / sub / name, read_image(data / sub / name))
    (copy / "meta.json").write_text(json.dumps({**meta, "pixel_size_nm": 7.5}))
    out = tmp_path / "eval"
    assert main(["eval", "--data", str(copy), "--baselines", "identity", "--max-images", "1",
                 "--out", str(out)]) == 0
    doc = _strict_json(out / "metrics.json")
    assert doc["pixel_size_nm"] == 7.5 and doc["images"] == ["0000"]
    assert list(doc["methods"]) == ["identity"]


def test_frc_scales_with_pixel_size_in_the_harness(data: Path) -> None:
    a, b = (evaluate_sets(None, data / "osr", data / "sem", px, ["identity"], max_images=1)
            ["methods"]["identity"]["mean"] for px in (10.0, 20.0))
    assert b["frc_1_7_nm"] == pytest.approx(2 * a["frc_1_7_nm"])


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def test_user_errors(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = ["--out", str(tmp_path / "e")]
    assert "does not exist" in _error(["--input", str(tmp_path / "nope"), "--ref", str(data / "sem"), *out], capsys)
    assert "--data" in _error(out, capsys)
    assert "unknown baseline" in _error(["--data", str(data), "--baselines", "magic", *out], capsys)
    other = tmp_path / "other"
    write_tiff16(other / "zzzz.tif", np.zeros((64, 64), np.float32))
    assert "no image names in common" in _error(["--input", str(other), "--ref", str(data / "sem"), *out], capsys)
    small = tmp_path / "small"
    write_tiff16(small / "0000.tif", np.zeros((32, 32), np.float32))
    assert "sizes differ" in _error(["--input", str(small), "--ref", str(data / "sem"), *out], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images" in _error(["--input", str(empty), "--ref", str(data / "sem"), *out], capsys)


def test_register_scores_a_perfect_but_misregistered_prediction_as_near_perfect(tmp_path):
    """A prediction that is the SEM image in the OSR's (misregistered) geometry: unregistered
    scoring blames the misregistration on it, --register does not."""
    import cv2

    from edge.imaging.imageio import write_tiff16
    from trainer.evaluation.harness import evaluate_sets
    from trainer.sim.pairs import make_pair, pair_seed

    for i in range(2):
        osr, sem, meta = make_pair(pair_seed(5, i), size=256)
        sem_to_osr = np.array(meta["misregistration"]["matrix"])
        pred = cv2.warpAffine(sem, cv2.invertAffineTransform(sem_to_osr), (256, 256),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        for folder, image in (("osr", osr), ("sem", sem), ("pred", pred)):
            write_tiff16(tmp_path / folder / f"{i}.tif", image)
    folders = (tmp_path / "pred", tmp_path / "osr", tmp_path / "sem")
    plain = evaluate_sets(*folders, pixel_size_nm=10.0, baselines=())
    registered = evaluate_sets(*folders, pixel_size_nm=10.0, baselines=(), register=True)
    assert registered["registered"] and set(registered["registration"]) == {"0", "1"}
    gain = registered["methods"]["model"]["mean"]["psnr"] - plain["methods"]["model"]["mean"]["psnr"]
    assert gain > 5, gain
    assert registered["methods"]["model"]["mean"]["psnr"] > 30


def test_register_leaves_out_a_pair_that_overlaps_too_little(tmp_path, caplog):
    """A pair whose registration keeps under half of the reference (here two crops of one chip
    160 px apart) is left out of the registered means with a warning, not scored on a sliver;
    with every pair so, a clear error."""
    from trainer.sim.pairs import make_pair, pair_seed

    _, sem, _ = make_pair(pair_seed(5, 0), size=512)
    good, _, _ = make_pair(pair_seed(5, 1), size=256)
    crops = {"0": (sem[:256, :256], sem[:256, 160:416]), "1": (good, good)}
    for stem, (ref, inp) in crops.items():
        write_tiff16(tmp_path / "sem" / f"{stem}.tif", ref)
        write_tiff16(tmp_path / "osr" / f"{stem}.tif", inp)
    with caplog.at_level("WARNING"):
        result = evaluate_sets(None, tmp_path / "osr", tmp_path / "sem", 10.0, ("identity",),
                               register=True)
    assert result["images"] == ["1"] and set(result["methods"]["identity"]["images"]) == {"1"}
    assert "wrong lock" in result["registration"]["0"]["skipped"] and "0: registration" in caplog.text
    (tmp_path / "sem" / "1.tif").unlink()
    (tmp_path / "osr" / "1.tif").unlink()
    with pytest.raises(UserError, match="no pair could be registered"):
        evaluate_sets(None, tmp_path / "osr", tmp_path / "sem", 10.0, ("identity",), register=True)
