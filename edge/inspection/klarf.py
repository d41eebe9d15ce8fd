"""KLARF 1.8 (KLA Results File, SEMI E89), the defect list that review tools read: written per
scan (or per inspected image) with the same content as JSON, and read back.

Lengths are in micrometres and areas in square micrometres (the file's unit), DEFDENSITY in
defects per square centimetre. XREL/YREL are relative to the die's origin, XINDEX/YINDEX the
die's index from DieOrigin at DiePitch. Each defect's thumbnail is a page of the multi-page
TIFF named by TiffFileName (IMAGELIST: count, then image number and type for each).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from edge import __version__
from edge.errors import UserError
from edge.inspection.classify import CLASSES
from edge.inspection.records import Defect

RECORD_SPEC = ("DEFECTID", "XREL", "YREL", "XINDEX", "YINDEX", "XSIZE", "YSIZE", "DEFECTAREA",
               "DSIZE", "CLASSNUMBER", "TEST", "CLUSTERNUMBER", "ROUGHBINNUMBER",
               "FINEBINNUMBER", "REVIEWSAMPLE", "IMAGECOUNT", "IMAGELIST")
SUMMARY_SPEC = ("TESTNO", "NDEFECT", "DEFDENSITY", "NDIE", "NDEFDIE")
UM = 1e-3  # per nm
CM2_PER_NM2 = 1e-14


@dataclass(frozen=True)
class KlarfSample:
    """What the header says about the sample: `sample_id` (WaferID; the scan id), the lot,
    device and step, the die grid in stage nm, and the inspected area (nm^2)."""

    sample_id: str
    inspected_area_nm2: float
    die_pitch_nm: tuple[float, float]
    die_origin_nm: tuple[float, float] = (0.0, 0.0)
    lot_id: str = "ssum-edge"
    device_id: str = "unknown"
    step_id: str = "unknown"
    timestamp: dt.datetime | None = None


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def _die(defect: Defect, sample: KlarfSample) -> tuple[int, int, float, float]:
    """(XINDEX, YINDEX, XREL, YREL in nm) of a defect."""
    (px, py), (ox, oy) = sample.die_pitch_nm, sample.die_origin_nm
    ix, iy = math.floor((defect.x_nm - ox) / px), math.floor((defect.y_nm - oy) / py)
    return ix, iy, defect.x_nm - ox - ix * px, defect.y_nm - oy - iy * py


def _row(defect: Defect, sample: KlarfSample, image: int | None) -> str:
    ix, iy, xrel, yrel = _die(defect, sample)
    xsize, ysize = defect.size_nm
    images = f"1 1 {image} 0" if image is not None else "0 0"
    return (f" {defect.id} {xrel * UM:.4f} {yrel * UM:.4f} {ix} {iy} {xsize * UM:.4f} "
            f"{ysize * UM:.4f} {defect.area_nm2 * UM**2:.6f} {defect.diameter_nm * UM:.4f} "
            f"{defect.class_number} 1 0 {defect.class_number} 0 0 {images}")


def summary(defects: list[Defect], sample: KlarfSample) -> dict[str, float]:
    dies = {_die(d, sample)[:2] for d in defects}
    (px, py) = sample.die_pitch_nm
    ndie = max(1, math.ceil(sample.inspected_area_nm2 / (px * py) - 1e-9))
    density = len(defects) / (sample.inspected_area_nm2 * CM2_PER_NM2) \
        if sample.inspected_area_nm2 > 0 else 0.0
    return {"TESTNO": 1, "NDEFECT": len(defects), "DEFDENSITY": density, "NDIE": ndie,
            "NDEFDIE": len(dies)}


def klarf_text(defects: list[Defect], sample: KlarfSample, tiff_name: str | None) -> str:
    stamp = (sample.timestamp or dt.datetime.now(dt.UTC)).strftime("%m-%d-%y %H:%M:%S")
    (px, py), (ox, oy) = sample.die_pitch_nm, sample.die_origin_nm
    lines = ["FileVersion 1 8;", f"FileTimestamp {stamp};",
             f'InspectionStationID "SSUM" "ssum-edge" {_quote(__version__)};',
             "SampleType WAFER;", f"ResultTimestamp {stamp};", f"LotID {_quote(sample.lot_id)};",
             "SampleSize 1 300;", f"DeviceID {_quote(sample.device_id)};",
             f'SetupID "ssum-edge" {stamp};', f"StepID {_quote(sample.step_id)};",
             f"WaferID {_quote(sample.sample_id)};", "Slot 1;",
             "SampleOrientationMarkType NOTCH;", "OrientationMarkLocation DOWN;"]
    if tiff_name:
        lines += ["TiffSpec 6.0 G R;", f"TiffFileName {tiff_name};"]
    lines += [f"DiePitch {px * UM:.6e} {py * UM:.6e};", f"DieOrigin {ox * UM:.6e} {oy * UM:.6e};",
              "SampleCenterLocation 0.000000e+00 0.000000e+00;",
              f"ClassLookup {len(CLASSES)}"]
    lines += [f' {i} "{name}"' for i, name in enumerate(CLASSES)]
    lines[-1] += ";"
    lines += ["InspectionTest 1;", "SampleTestPlan 1", " 0 0;",
              f"AreaPerTest {sample.inspected_area_nm2 * UM**2:.6e};",
              f"DefectRecordSpec {len(RECORD_SPEC)} {' '.join(RECORD_SPEC)};", "DefectList"]
    with_images = tiff_name is not None
    lines += [_row(d, sample, i + 1 if with_images else None) for i, d in enumerate(defects)]
    lines[-1] += ";"
    s = summary(defects, sample)
    lines += [f"SummarySpec {len(SUMMARY_SPEC)} {' '.join(SUMMARY_SPEC)};", "SummaryList",
              f" {s['TESTNO']} {s['NDEFECT']} {s['DEFDENSITY']:.6e} {s['NDIE']} {s['NDEFDIE']};",
              "EndOfFile;"]
    return "\n".join(lines) + "\n"


def write_klarf(path: str | Path, defects: list[Defect], sample: KlarfSample) -> list[Path]:
    """PATH (KLARF), PATH.json (the same content) and, when the defects have thumbnails,
    <stem>.defects.tif (one page each); returns the files written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    tiff_name = None
    if defects and all(d.thumbnail is not None for d in defects):
        tiff = path.with_name(path.stem + ".defects.tif")
        tifffile.imwrite(tiff, np.stack([_square(d.thumbnail) for d in defects]),
                         photometric="minisblack")
        tiff_name = tiff.name
        written.append(tiff)
    _atomic(path, klarf_text(defects, sample, tiff_name))
    document = {"format": "klarf-1.8", "klarf": path.name, "sample": {
        "sample_id": sample.sample_id, "lot_id": sample.lot_id, "device_id": sample.device_id,
        "step_id": sample.step_id, "die_pitch_nm": list(sample.die_pitch_nm),
        "die_origin_nm": list(sample.die_origin_nm),
        "inspected_area_nm2": sample.inspected_area_nm2}, "tiff": tiff_name,
        "classes": list(CLASSES), "defects": [d.record() for d in defects],
        "summary": summary(defects, sample)}
    json_path = path.with_name(path.name + ".json")
    _atomic(json_path, json.dumps(document, indent=1))
    return [path, json_path, *written]


def _square(image: np.ndarray | None) -> np.ndarray:
    """Thumbnails padded to one size (a crop near a small image's edge may be smaller)."""
    assert image is not None
    side = max(image.shape)
    return np.pad(image, ((0, side - image.shape[0]), (0, side - image.shape[1])))


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _statements(text: str) -> list[list[str]]:
    """The file's records (ended by ';'), each as its tokens (quoted strings unquoted)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    lexer.commenters = ""
    statements: list[list[str]] = [[]]
    for token in lexer:
        if token == ";":
            statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def _table(spec: list[str], values: list[str]) -> list[dict[str, Any]]:
    """Rows of a DefectList/SummaryList: one value per column, IMAGELIST a counted list of
    (image, type) pairs."""
    rows, i = [], 0
    while i < len(values):
        row: dict[str, Any] = {}
        for column in spec:
            if i >= len(values):
                raise UserError(f"KLARF list ends inside a row (column {column})")
            if column == "IMAGELIST":
                count = int(values[i])
                row[column] = [(int(values[i + 1 + 2 * k]), int(values[i + 2 + 2 * k]))
                               for k in range(count)]
                i += 1 + 2 * count
            else:
                row[column] = _number(values[i])
                i += 1
        rows.append(row)
    return rows


def _number(token: str) -> int | float:
    try:
        return int(token)
    except ValueError:
        return float(token)


def read_klarf(path: str | Path) -> dict[str, Any]:
    """A KLARF 1.8 file as {"records": {keyword: tokens}, "classes": {number: name},
    "defects": [row dicts], "summary": [row dicts]}; raises UserError when it is not one."""
    path = Path(path)
    try:
        statements = _statements(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read KLARF ({exc})") from exc
    records: dict[str, list[str]] = {}
    out: dict[str, Any] = {"records": records, "classes": {}, "defects": [], "summary": []}
    specs: dict[str, list[str]] = {}
    for keyword, *tokens in statements:
        if keyword in ("DefectRecordSpec", "SummarySpec"):
            specs[keyword] = tokens[1:1 + int(tokens[0])]
        elif keyword == "DefectList":
            out["defects"] = _table(specs.get("DefectRecordSpec", []), tokens)
        elif keyword == "SummaryList":
            out["summary"] = _table(specs.get("SummarySpec", []), tokens)
        elif keyword == "ClassLookup":
            out["classes"] = {int(tokens[1 + 2 * k]): tokens[2 + 2 * k]
                              for k in range(int(tokens[0]))}
        records[keyword] = tokens
    if records.get("FileVersion") != ["1", "8"] or "EndOfFile" not in records:
        raise UserError(f"{path}: not a complete KLARF 1.8 file")
    return out
