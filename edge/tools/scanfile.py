"""On-disk form of a scan recording: `scan.json` plus one TIFF per camera tile.

Written by the simulator and by a real rig recorder alike; the daemon's replay reads it and
publishes each tile with the wire protocol v1 header (see docs/scan-format.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from edge.errors import UserError
from edge.files import read_json

FORMAT = "ssum-scan"
VERSION = 1
MANIFEST = "scan.json"
DTYPES = ("uint8", "uint16", "float32")
TILE_KEYS = ("seq", "row", "col", "x_nm", "y_nm", "t_capture")
OPTIONAL_TILE_KEYS = ("z_nm", "exposure_ms", "stack_size")


@dataclass(frozen=True)
class ScanTile:
    seq: int
    row: int
    col: int
    x_nm: float
    y_nm: float
    file: str
    t_capture: float
    z_nm: float | None = None
    exposure_ms: float | None = None
    stack_size: int | None = None  # planes recorded at this position (a z-stack)


@dataclass
class ScanRecording:
    path: Path
    scan_id: str
    pixel_size_nm: float
    tile_width: int
    tile_height: int
    dtype: str
    tiles: list[ScanTile]
    ground_truth: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def load_tile(self, tile: ScanTile) -> np.ndarray:
        """The tile's pixels as stored (raw dtype), checked against the recorded geometry."""
        path = self.path / tile.file
        array = _read_tiff(path)
        expected = (self.tile_height, self.tile_width)
        if array.shape != expected or str(array.dtype) != self.dtype:
            raise UserError(
                f"{path}: expected {self.dtype} {expected[1]}x{expected[0]}, "
                f"got {array.dtype} {array.shape[1] if array.ndim > 1 else '?'}x{array.shape[0]}"
            )
        return array

    def header(self, tile: ScanTile) -> dict[str, Any]:
        """The wire protocol v1 header for this tile."""
        header: dict[str, Any] = {
            "v": 1,
            "scan_id": self.scan_id,
            "seq": tile.seq,
            "row": tile.row,
            "col": tile.col,
            "x_nm": tile.x_nm,
            "y_nm": tile.y_nm,
            "pixel_size_nm": self.pixel_size_nm,
            "width": self.tile_width,
            "height": self.tile_height,
            "dtype": self.dtype,
            "t_capture": tile.t_capture,
        }
        for key in OPTIONAL_TILE_KEYS:
            if getattr(tile, key) is not None:
                header[key] = getattr(tile, key)
        return header


def _read_tiff(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return np.asarray(tifffile.imread(path))
    except Exception as exc:
        raise UserError(f"{path}: cannot read TIFF ({exc})") from exc


def tile_file(row: int, col: int, plane: int | None = None) -> str:
    """A tile's file; the planes of a z-stack are numbered in capture order."""
    suffix = "" if plane is None else f"_p{plane:02d}"
    return f"tiles/r{row:03d}_c{col:03d}{suffix}.tif"


def write_scan(
    path: str | Path,
    scan_id: str,
    pixel_size_nm: float,
    tiles: Iterable[tuple[dict, np.ndarray]],
    ground_truth: dict[str, np.ndarray] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a scan directory. Each tile dict needs seq, row, col, x_nm, y_nm, t_capture (z_nm,
    exposure_ms, stack_size optional; the planes of a stack share row and col); all tiles share
    one shape and dtype. `ground_truth` images (float [0, 1] or integer) are stored as
    `ground_truth/<name>.tif`; `extra` keys go into scan.json (e.g. `simulation`,
    `overlap_px`, `rows`, `cols`)."""
    path = Path(path)
    (path / "tiles").mkdir(parents=True, exist_ok=True)
    entries, geometry = [], None
    planes: dict[tuple[int, int], int] = {}
    for info, pixels in tiles:
        missing = [k for k in TILE_KEYS if k not in info]
        if missing:
            raise UserError(f"tile {info}: missing {', '.join(missing)}")
        pixels = np.asarray(pixels)
        if str(pixels.dtype) not in DTYPES or pixels.ndim != 2:
            raise UserError(f"tile {info['seq']}: need a 2-D {'/'.join(DTYPES)} array, got {pixels.dtype} {pixels.shape}")
        if geometry is None:
            geometry = (pixels.shape, str(pixels.dtype))
        elif geometry != (pixels.shape, str(pixels.dtype)):
            raise UserError(f"tile {info['seq']}: shape/dtype differs from the first tile")
        position = (int(info["row"]), int(info["col"]))
        plane = planes[position] = planes.get(position, -1) + 1
        name = tile_file(*position, plane if info.get("stack_size") else None)
        tifffile.imwrite(path / name, pixels)
        entry = {k: info[k] for k in TILE_KEYS} | {"file": name}
        entry |= {k: info[k] for k in OPTIONAL_TILE_KEYS if info.get(k) is not None}
        entries.append(entry)
    if geometry is None:
        raise UserError("a scan needs at least one tile")
    truth = {}
    for name, image in (ground_truth or {}).items():
        rel = f"ground_truth/{name}.tif"
        (path / "ground_truth").mkdir(exist_ok=True)
        data = np.asarray(image)
        if np.issubdtype(data.dtype, np.floating):
            data = np.round(np.clip(data, 0, 1) * 65535).astype(np.uint16)
        tifffile.imwrite(path / rel, data)
        truth[name] = rel
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "scan_id": scan_id,
        "pixel_size_nm": float(pixel_size_nm),
        "tile_width": int(geometry[0][1]),
        "tile_height": int(geometry[0][0]),
        "dtype": geometry[1],
        **(extra or {}),
        "tiles": entries,
    }
    if truth:
        manifest["ground_truth"] = truth
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return path


def _require(manifest: dict, key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in manifest:
        raise UserError(f"{where}: missing key {key!r}")
    if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
        raise UserError(f"{where}: key {key!r} has the wrong type ({type(manifest[key]).__name__})")
    return manifest[key]


def _parse_tile(entry: Any, where: Path, index: int) -> ScanTile:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: tiles[{index}] is not an object")
    try:
        return ScanTile(
            seq=int(entry["seq"]), row=int(entry["row"]), col=int(entry["col"]),
            x_nm=float(entry["x_nm"]), y_nm=float(entry["y_nm"]), file=str(entry["file"]),
            t_capture=float(entry["t_capture"]),
            z_nm=None if entry.get("z_nm") is None else float(entry["z_nm"]),
            exposure_ms=None if entry.get("exposure_ms") is None else float(entry["exposure_ms"]),
            stack_size=None if entry.get("stack_size") is None else int(entry["stack_size"]),
        )
    except KeyError as exc:
        raise UserError(f"{where}: tiles[{index}] lacks {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: tiles[{index}] has a bad value ({exc})") from exc


def read_scan(path: str | Path) -> ScanRecording:
    """Read and validate a scan directory (or its scan.json); tile files are checked to exist."""
    path = Path(path)
    if path.name == MANIFEST:
        path = path.parent
    where = path / MANIFEST
    manifest = read_json(where, "a scan directory")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{where}: not an {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise UserError(f"{where}: unsupported version {manifest.get('version')!r} (this reads {VERSION})")
    dtype = _require(manifest, "dtype", str, where)
    if dtype not in DTYPES:
        raise UserError(f"{where}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    tiles = [_parse_tile(e, where, i) for i, e in enumerate(_require(manifest, "tiles", list, where))]
    for tile in tiles:
        if not (path / tile.file).is_file():
            raise UserError(f"{path / tile.file}: tile file missing")
    truth = {k: path / v for k, v in (manifest.get("ground_truth") or {}).items()}
    core = {"format", "version", "scan_id", "pixel_size_nm", "tile_width", "tile_height", "dtype", "tiles", "ground_truth"}
    return ScanRecording(
        path=path,
        scan_id=str(_require(manifest, "scan_id", str, where)),
        pixel_size_nm=float(_require(manifest, "pixel_size_nm", (int, float), where)),
        tile_width=int(_require(manifest, "tile_width", int, where)),
        tile_height=int(_require(manifest, "tile_height", int, where)),
        dtype=dtype,
        tiles=sorted(tiles, key=lambda t: t.seq),
        ground_truth=truth,
        meta={k: v for k, v in manifest.items() if k not in core},
    )
