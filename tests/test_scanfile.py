import json

import numpy as np
import pytest

from edge.errors import UserError
from edge.tools.scanfile import read_scan, write_scan


def _tiles(dtype=np.uint16, z=True):
    rng = np.random.default_rng(0)
    for seq, (r, c) in enumerate([(0, 0), (0, 1)]):
        info = {"seq": seq, "row": r, "col": c, "x_nm": 100.0 * c, "y_nm": 0.0, "t_capture": 10.0 + seq}
        if z:
            info["z_nm"] = 5.0
        yield info, rng.integers(0, 1000, (8, 12)).astype(dtype)


def test_round_trip_keeps_pixels_geometry_and_extras(tmp_path):
    tiles = list(_tiles())
    truth = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    path = write_scan(tmp_path / "scan", "abc", 7.5, tiles, ground_truth={"sem_mosaic": truth},
                      extra={"overlap_px": 2, "simulation": {"seed": 1}})
    scan = read_scan(path)
    assert (scan.scan_id, scan.pixel_size_nm, scan.tile_width, scan.tile_height, scan.dtype) == ("abc", 7.5, 12, 8, "uint16")
    assert scan.meta == {"overlap_px": 2, "simulation": {"seed": 1}}
    assert scan.ground_truth["sem_mosaic"].is_file()
    for (info, pixels), tile in zip(tiles, scan.tiles):
        assert tile.file == f"tiles/r{info['row']:03d}_c{info['col']:03d}.tif"
        loaded = scan.load_tile(tile)
        assert loaded.dtype == np.uint16 and np.array_equal(loaded, pixels)


def test_header_has_the_wire_protocol_fields(tmp_path):
    scan = read_scan(write_scan(tmp_path / "s", "abc", 10.0, _tiles()))
    header = scan.header(scan.tiles[1])
    assert header == {"v": 1, "scan_id": "abc", "seq": 1, "row": 0, "col": 1, "x_nm": 100.0, "y_nm": 0.0,
                      "pixel_size_nm": 10.0, "width": 12, "height": 8, "dtype": "uint16",
                      "t_capture": 11.0, "z_nm": 5.0}
    plain = read_scan(write_scan(tmp_path / "p", "abc", 10.0, _tiles(z=False)))
    assert "z_nm" not in plain.header(plain.tiles[0]) and "exposure_ms" not in plain.header(plain.tiles[0])


def test_read_accepts_the_manifest_path(tmp_path):
    path = write_scan(tmp_path / "s", "x", 10.0, _tiles(np.uint8))
    assert read_scan(path / "scan.json").dtype == "uint8"


def test_missing_directory_or_tile_names_the_file(tmp_path):
    with pytest.raises(UserError, match="scan.json"):
        read_scan(tmp_path / "nothing")
    path = write_scan(tmp_path / "s", "x", 10.0, _tiles())
    (path / "tiles" / "r000_c001.tif").unlink()
    with pytest.raises(UserError, match="r000_c001.tif"):
        read_scan(path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(version=2), "version"),
    (lambda m: m.update(dtype="int64"), "dtype"),
    (lambda m: m.pop("scan_id"), "scan_id"),
    (lambda m: m["tiles"][0].pop("x_nm"), "x_nm"),
    (lambda m: m.update(format="other"), "ssum-scan"),
])
def test_bad_manifest_is_a_user_error(tmp_path, edit, message):
    path = write_scan(tmp_path / "s", "x", 10.0, _tiles())
    manifest = json.loads((path / "scan.json").read_text())
    edit(manifest)
    (path / "scan.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=message):
        read_scan(path)


def test_invalid_json_is_a_user_error(tmp_path):
    path = write_scan(tmp_path / "s", "x", 10.0, _tiles())
    (path / "scan.json").write_text("{not json")
    with pytest.raises(UserError, match="scan.json"):
        read_scan(path)


def test_tile_with_wrong_geometry_is_refused_on_load(tmp_path):
    import tifffile

    path = write_scan(tmp_path / "s", "x", 10.0, _tiles())
    tifffile.imwrite(path / "tiles" / "r000_c000.tif", np.zeros((8, 12), np.float32))
    scan = read_scan(path)
    with pytest.raises(UserError, match="r000_c000.tif"):
        scan.load_tile(scan.tiles[0])


def test_write_refuses_mixed_tiles_and_empty_scans(tmp_path):
    tiles = list(_tiles())
    tiles[1] = (tiles[1][0], tiles[1][1][:4])
    with pytest.raises(UserError, match="differs"):
        write_scan(tmp_path / "a", "x", 10.0, tiles)
    with pytest.raises(UserError, match="at least one tile"):
        write_scan(tmp_path / "b", "x", 10.0, [])
