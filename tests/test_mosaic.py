"""The scan mosaic: exact reassembly, refinement of stage errors, OME-TIFF pixel size, the
daemon's raw mosaic beside the converted one."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from edge.errors import UserError
from edge.imaging.mosaic import (
    MosaicBuilder,
    feather_weights,
    read_ome_annotations,
    read_ome_pixel_size,
    write_ome_tiff,
)
from edge.serve.mosaic_writer import MosaicWriter
from trainer.evaluation.metrics import psnr

TILE, STEP, PIXEL_NM = 160, 120, 10.0


@pytest.fixture(scope="module")
def chip():
    from trainer.sim.pairs import make_pair

    return make_pair(5, size=400, misalign=False)[1][: 2 * STEP + TILE, : 2 * STEP + TILE]


def _mosaic(chip, errors, refine):
    builder = MosaicBuilder(PIXEL_NM, refine=refine)
    for k, (r, c) in enumerate((r, c) for r in range(3) for c in range(3)):
        y, x = r * STEP, c * STEP
        ey, ex = errors[k]
        builder.add(chip[y : y + TILE, x : x + TILE], (x + ex) * PIXEL_NM, (y + ey) * PIXEL_NM)
    return builder


def test_exact_positions_reassemble_the_image(chip):
    builder = _mosaic(chip, np.zeros((9, 2)), refine=False)
    mosaic = builder.render()
    assert mosaic.shape == chip.shape and builder.origin_nm == (0.0, 0.0)
    assert psnr(mosaic, chip) > 60


def test_refinement_corrects_stage_errors(chip):
    errors = np.random.default_rng(2).integers(-3, 4, (9, 2))
    errors[0] = 0  # the first tile anchors the mosaic
    crop = np.s_[8:-8, 8:-8]
    plain = _mosaic(chip, errors, refine=False).render()
    refined = _mosaic(chip, errors, refine=True).render()
    h, w = chip.shape
    assert refined.shape == chip.shape
    assert psnr(refined[crop], chip[crop]) > 60
    assert psnr(plain[:h, :w][crop], chip[crop]) < 30


def test_feather_weights_fade_to_the_edges():
    w = feather_weights((64, 100), feather_px=16)
    assert w.max() == 1.0 and w[32, 50] == 1.0
    assert w[0, 50] < 0.05 and w[32, 0] < 0.05 and np.all(w > 0)


def test_blending_weights_are_normalised_and_empty_area_is_zero():
    """Overlapping constant tiles give that constant everywhere they cover, whatever the
    feather; the gap between separate tiles stays 0; the origin is the top-left tile."""
    builder = MosaicBuilder(PIXEL_NM, feather_px=12)
    value = 0.7
    for x_px, y_px, shape in [(100, 50, (40, 60)), (130, 70, (50, 50)), (300, 50, (30, 30))]:
        builder.add(np.full(shape, value, np.float32), x_px * PIXEL_NM, y_px * PIXEL_NM)
    mosaic = builder.render()
    assert builder.origin_nm == (100 * PIXEL_NM, 50 * PIXEL_NM)
    assert mosaic.shape == (70, 230)
    covered = np.zeros(mosaic.shape, bool)
    covered[0:40, 0:60] = covered[20:70, 30:80] = covered[0:30, 200:230] = True
    np.testing.assert_allclose(mosaic[covered], value, rtol=1e-6)
    assert np.all(mosaic[~covered] == 0)


def test_ome_tiff_carries_the_pixel_size(tmp_path, chip):
    path = write_ome_tiff(tmp_path / "m.ome.tif", chip, 7.5, {"scan_id": "s1"})
    assert read_ome_pixel_size(path) == pytest.approx(7.5)
    with pytest.raises(UserError):
        MosaicBuilder(10.0).render()


def test_the_raw_mosaic_takes_the_converted_tiles_refined_placements(tmp_path, chip):
    errors = np.random.default_rng(2).integers(-3, 4, (9, 2))
    errors[0] = 0
    writer = MosaicWriter(tmp_path, refine=True, raw=True)
    for k, (r, c) in enumerate((r, c) for r in range(3) for c in range(3)):
        y, x = r * STEP, c * STEP
        tile = chip[y : y + TILE, x : x + TILE]
        header = {"scan_id": "s", "pixel_size_nm": PIXEL_NM, "x_nm": (x + errors[k][1]) * PIXEL_NM,
                  "y_nm": (y + errors[k][0]) * PIXEL_NM}
        writer.converted(header, tile, np.round((1 - tile) * 65535).astype(np.uint16))
    writer.scan_end("s", {})
    converted = tifffile.imread(tmp_path / "s.ome.tif").squeeze() / 65535
    raw = tifffile.imread(tmp_path / "s.raw.ome.tif").squeeze() / 65535
    crop = np.s_[8:-8, 8:-8]
    assert raw.shape == converted.shape == chip.shape
    assert psnr(converted[crop], chip[crop]) > 60
    assert psnr(raw[crop], 1 - chip[crop]) > 60
    origins = [read_ome_annotations(tmp_path / f"s{kind}.ome.tif") for kind in ("", ".raw")]
    assert origins[0] == origins[1]
    assert abs(float(origins[0]["origin_x_nm"])) <= 3 * PIXEL_NM  # tile 0 at 0, others refined
