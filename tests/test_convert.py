"""`ssum convert`: files of any size and depth in, 16-bit TIFF out; bad files do not stop the rest."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from edge.imaging.imageio import read_image
from edge.inference.backends import load_backend
from edge.inference.bundle import load_bundle
from edge.inference.tiling import Tiler, convert_image
from ssum.cli import main


@pytest.fixture(scope="module")
def bundle(tiny_bundle_source):
    return tiny_bundle_source


def test_converts_8_and_16_bit_files_of_any_size(bundle, tmp_path, capsys):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 256, (37, 1000), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "b.tif", rng.integers(0, 65536, (130, 131), dtype=np.uint16))
    out = tmp_path / "out"
    assert main(["convert", "--bundle", str(bundle), "--out", str(out),
                 str(tmp_path / "a.png"), str(tmp_path / "b.tif")]) == 0
    for name, shape in (("a", (37, 1000)), ("b", (130, 131))):
        result = tifffile.imread(out / f"{name}.tif")
        assert result.dtype == np.uint16 and result.shape == shape
    # Same numbers as the library path (read -> tile -> backend -> merge).
    loaded = load_bundle(bundle)
    expected = convert_image(read_image(tmp_path / "b.tif"), load_backend(loaded),
                             Tiler(128, int(loaded.io["overlap"])))
    np.testing.assert_allclose(read_image(out / "b.tif"), expected, atol=1 / 65535 + 1e-6)
    assert "a.png ->" in capsys.readouterr().out


def test_a_bad_file_is_reported_and_the_others_are_converted(bundle, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    cv2.imwrite(str(tmp_path / "good.png"), np.full((64, 64), 128, np.uint8))
    code = main(["convert", "--bundle", str(bundle), "--out", str(tmp_path / "out"),
                 str(tmp_path / "broken.png"), str(tmp_path / "good.png"), str(tmp_path / "gone.tif")])
    text = capsys.readouterr().out
    assert code == 1 and (tmp_path / "out" / "good.tif").is_file()
    assert "error:" in text and "broken.png" in text and "gone.tif" in text and "2 file(s) failed" in text


def test_a_missing_bundle_is_a_one_line_error(tmp_path, capsys):
    code = main(["convert", "--bundle", str(tmp_path / "nope"), "--out", str(tmp_path), "x.png"])
    err = capsys.readouterr().err
    assert code != 0 and "not a model bundle" in err and "Traceback" not in err
