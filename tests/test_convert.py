"""`ssum convert`: files of any size and depth in, 16-bit TIFF out; bad files do not stop the rest;
streamed one band of patch rows at a time, from and to disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from edge.errors import UserError
from edge.imaging.imageio import open_rows, read_image, read_raw, write_tiff16_rows
from edge.inference.backends import load_backend
from edge.inference.bundle import load_bundle
from edge.inference.converter import Converter, ConverterSettings
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


def test_an_inverted_microscope_converts_as_its_inverse(trusted_bundle_source, tmp_path):
    """invert_input: the converter, its trust and `ssum convert --invert-input` see 1 - x."""
    raw = np.random.default_rng(3).integers(0, 65536, (96, 130), dtype=np.uint16)
    flipped = (65535 - raw).astype(np.uint16)
    with Converter.from_bundle(trusted_bundle_source, ConverterSettings(trust=True)) as plain, \
            Converter.from_bundle(trusted_bundle_source,
                                  ConverterSettings(trust=True, invert_input=True)) as inverted:
        output = inverted.convert(raw)
        np.testing.assert_allclose(output, plain.convert(flipped), atol=1e-5)
        assert not np.allclose(output, plain.convert(raw), atol=1e-3)
        judged, expected = inverted.trust(raw, output), plain.trust(flipped, output)
        assert judged is not None and expected is not None
        assert judged.score == pytest.approx(expected.score, abs=1e-4)
    tifffile.imwrite(tmp_path / "raw.tif", raw)
    assert main(["convert", "--bundle", str(trusted_bundle_source), "--invert-input",
                 "--no-trust", "--out", str(tmp_path / "out"), str(tmp_path / "raw.tif")]) == 0
    np.testing.assert_allclose(read_image(tmp_path / "out" / "raw.tif"), output,
                               atol=1 / 65535 + 1e-6)


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


def _set_preprocessing(bundle, preprocessing: dict) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["preprocessing"] = preprocessing
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("preprocessing", [{}, {"denoise": "gaussian", "denoise_strength": 6.0,
                                                "unsharp_amount": 0.5, "unsharp_sigma": 2.0}])
@pytest.mark.parametrize("patching", ["fit", "fixed"])
def test_streamed_conversion_equals_the_in_memory_one(tiny_bundle, preprocessing, patching):
    _set_preprocessing(tiny_bundle, preprocessing)
    raw = np.random.default_rng(1).integers(0, 65536, (701, 150), dtype=np.uint16)
    settings = ConverterSettings(threads=1, patching=patching, max_pixels=2**14)
    with Converter.from_bundle(tiny_bundle, settings) as converter:
        blocks = list(converter.convert_rows(lambda y0, y1: raw[y0:y1], raw.shape))
        assert len(blocks) >= 3  # one band of patch rows at a time
        np.testing.assert_allclose(np.concatenate(blocks), converter.convert(raw), atol=1e-6)


def test_preprocessing_that_needs_the_whole_image_converts_it_in_one_block(tiny_bundle):
    _set_preprocessing(tiny_bundle, {"clahe_clip": 2.0})
    raw = np.random.default_rng(2).integers(0, 256, (300, 90), dtype=np.uint8)
    with Converter.from_bundle(tiny_bundle, ConverterSettings(threads=1)) as converter:
        blocks = list(converter.convert_rows(lambda y0, y1: raw[y0:y1], raw.shape))
        assert len(blocks) == 1
        np.testing.assert_allclose(blocks[0], converter.convert(raw), atol=1e-6)


def _write(kind: str, path: Path, raw: np.ndarray) -> Path:
    if kind == "png":
        cv2.imwrite(str(path.with_suffix(".png")), raw)
        return path.with_suffix(".png")
    options = {"big-endian": {"byteorder": ">"}, "zlib": {"compression": "zlib"}}.get(kind, {})
    tifffile.imwrite(path, raw, **options)
    return path


@pytest.mark.parametrize("kind, dtype", [("tiff", np.uint16), ("tiff", np.uint8),
                                         ("tiff", np.float32), ("big-endian", np.uint16),
                                         ("zlib", np.uint16), ("png", np.uint16)])
def test_rows_read_in_bands_equal_the_image_as_stored(tmp_path, kind, dtype):
    raw = (np.random.default_rng(3).random((61, 33)) * (255 if dtype == np.uint8 else 65535))
    raw = raw.astype(dtype) if dtype != np.float32 else (raw / 65535).astype(dtype)
    path = _write(kind, tmp_path / "image.tif", raw)
    shape, read = open_rows(path)
    assert shape == raw.shape
    np.testing.assert_array_equal(np.concatenate([read(0, 20), read(20, 21), read(21, 61)]),
                                  read_raw(path))


def test_an_output_is_complete_or_absent(tmp_path):
    def blocks():
        yield np.zeros((3, 5), np.float32)
        raise UserError("stopped half way")

    with pytest.raises(UserError):
        write_tiff16_rows(tmp_path / "out.tif", (6, 5), blocks())
    assert list(tmp_path.iterdir()) == []
    write_tiff16_rows(tmp_path / "out.tif", (6, 5), iter([np.ones((6, 5)) / 2]))
    assert (tifffile.imread(tmp_path / "out.tif") == 32768).all()


PEAK_RSS = """
import sys
from pathlib import Path
from edge.imaging.imageio import read_raw, write_tiff16
from edge.inference.converter import Converter, ConverterSettings
from edge.tools.convert import convert_file


def peak_rss():  # this process's own peak; getrusage's also counts its parent's before exec
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    return 1024 * int(status.split()[0])


mode, bundle, image, out = sys.argv[1:]
with Converter.from_bundle(bundle, ConverterSettings(threads=2, max_pixels=2**16)) as converter:
    loaded = peak_rss()
    if mode == "streamed":
        convert_file(converter, Path(image), Path(out))
    else:
        write_tiff16(Path(out) / Path(image).name, converter.convert(read_raw(image)))
print(peak_rss() - loaded)
"""


def _peak_rss_added(mode: str, bundle: Path, image: Path, out: Path) -> int:
    """Bytes of peak RSS a child converting the image adds to the loaded converter's."""
    out.mkdir()
    child = subprocess.run([sys.executable, "-c", PEAK_RSS, mode, str(bundle), str(image),
                            str(out)], capture_output=True, text=True, timeout=300, check=True)
    return int(child.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_an_image_larger_than_the_memory_budget_converts_streamed(tiny_bundle_source, tmp_path):
    """Budget: one float32 copy of the image (16000 x 1200 px: the bands streaming holds are a
    fixed cost, about 58 MB here, so a taller image gives them room). Streaming stays below it
    (bands of rows from and to disk); converting in memory holds the image, its patches and the
    output at once."""
    raw = np.random.default_rng(4).integers(0, 65536, (16000, 1200), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "large.tif", raw)
    budget = raw.size * 4
    streamed = _peak_rss_added("streamed", tiny_bundle_source, tmp_path / "large.tif",
                               tmp_path / "streamed")
    in_memory = _peak_rss_added("in-memory", tiny_bundle_source, tmp_path / "large.tif",
                                tmp_path / "in-memory")
    assert streamed < budget < in_memory, (streamed, budget, in_memory)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "streamed" / "large.tif"),
                                  tifffile.imread(tmp_path / "in-memory" / "large.tif"))
