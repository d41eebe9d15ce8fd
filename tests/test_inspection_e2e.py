"""Inline inspection end to end: a simulated scan with injected defects replayed into a daemon
(real sockets on 127.0.0.1) whose converter passes SEM tiles through unchanged, so what is
tested is the detection, not the model: defect/ messages before the scan-end, a KLARF file
matching the truth list, the metrics."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import endpoint, fake_converter
from prometheus_client.parser import text_string_to_metric_families

from edge.imaging.imageio import read_image, write_tiff16
from edge.inspection.klarf import RECORD_SPEC, SUMMARY_SPEC, read_klarf
from edge.serve.config_file import build_config
from edge.serve.daemon import Daemon
from edge.tools.consume import consume
from edge.tools.rig import replay_scan
from edge.tools.scanfile import read_scan
from edge.tools.supervise import fetch_metrics
from trainer.sim.defects import DefectParams
from trainer.sim.scan import simulate_scan

pytestmark = pytest.mark.timeout(120)
TOLERANCE_NM = 60.0
DEFECTS = DefectParams(count=6, min_size_nm=60.0, max_size_nm=250.0)


def _scan(tmp_path: Path, defects: DefectParams | None, seed: int) -> Path:
    return simulate_scan(tmp_path / f"scan{seed}", rows=2, cols=2, tile=256, overlap=64,
                         seed=seed, defects=defects, tiles_of="sem")


def _run(tmp_path: Path, ctx, collector, scan: Path, reference: Path | None,
         **inspection: object) -> tuple[list, dict]:
    """Replay `scan` into a daemon inspecting against `reference` (none in cell mode; more
    [inspection] keys in `inspection`), with `ssum consume`'s code saving the output under
    tmp_path/consumed; the messages and metrics."""
    rig, out = endpoint(), endpoint()
    keys = {"reference": str(reference)} if reference else {}
    config = build_config({
        "input": {"socket": "pull", "endpoint": rig}, "output": {"endpoint": out},
        "metrics": {"port": 0},
        "inspection": {"enabled": True, "directory": str(tmp_path / "klarf"), **keys,
                       **inspection}}, "test")
    daemon = Daemon(config, fake_converter(patch=64, identity=True))
    daemon.start()
    consumer = collector(out)
    saver = threading.Thread(target=consume, args=(out, tmp_path / "consumed"),
                             kwargs={"timeout_s": 60, "context": ctx})
    saver.start()
    try:
        time.sleep(0.5)  # the consumers' subscriptions reach the daemon's PUB
        replay_scan(scan, rig, socket="push", bind=False, timeout_s=30, context=ctx)
        consumer.wait_for(lambda ms: any(m.kind == "scan-end" for m in ms))
        saver.join(30)
        return consumer.messages, _samples(fetch_metrics(daemon.metrics_port))
    finally:
        daemon.stop()


def _samples(text: str) -> dict[str, float]:
    """Sample values by name, labelled ones summed, histogram buckets by their `le`."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.endswith("_bucket"):
                name += f"[{float(sample.labels['le']):g}]"
            values[name] = values.get(name, 0.0) + sample.value
    return values


def _truth(scan: Path) -> list[dict]:
    return json.loads((scan / "scan.json").read_text())["simulation"]["defects"]


def _matched(found: list[tuple[float, float]], truth: list[dict]) -> int:
    """Truth defects with a found one within the tolerance (each found one used once)."""
    left = list(found)
    hits = 0
    for t in truth:
        near = [f for f in left if np.hypot(f[0] - t["x_nm"], f[1] - t["y_nm"]) <= TOLERANCE_NM]
        if near:
            left.remove(near[0])
            hits += 1
    return hits


def test_a_scan_with_defects_yields_defect_messages_a_klarf_and_metrics(tmp_path, ctx,
                                                                        collector):
    scan = _scan(tmp_path, DEFECTS, seed=4)
    truth = _truth(scan)
    assert len(truth) >= 4
    messages, metrics = _run(tmp_path, ctx, collector, scan,
                             scan / "ground_truth" / "sem_reference.tif")
    kinds = [m.kind for m in messages]
    defects = [m for m in messages if m.kind == "defect"]
    assert kinds.index("scan-end") == len(kinds) - 1
    assert defects and kinds.index("defect") > max(i for i, k in enumerate(kinds) if k == "sem")
    found = [(m.header["x_nm"], m.header["y_nm"]) for m in defects]
    assert _matched(found, truth) == len(truth)
    assert len(defects) == len(truth)  # each once, a defect in a tile overlap too
    assert any(len(m.header["tiles"]) > 1 for m in defects)
    first = defects[0]
    assert first.image is not None and first.image.shape == (64, 64)
    assert {"id", "bbox_nm", "area_nm2", "polarity", "class", "score", "tiles"} <= set(first.header)

    klarf = read_klarf(tmp_path / "klarf" / f"{first.scan_id}.klarf")
    assert list(klarf["defects"][0]) == list(RECORD_SPEC)
    assert list(klarf["summary"][0]) == list(SUMMARY_SPEC)
    assert klarf["summary"][0]["NDEFECT"] == len(defects) == len(klarf["defects"])
    die_origin = [float(v) * 1e3 for v in klarf["records"]["DieOrigin"]]
    in_klarf = [(die_origin[0] + d["XREL"] * 1e3, die_origin[1] + d["YREL"] * 1e3)
                for d in klarf["defects"]]
    assert _matched(in_klarf, truth) == len(truth)
    assert all(d["IMAGELIST"] == [(d["DEFECTID"], 0)] for d in klarf["defects"])
    saved = tmp_path / "consumed" / first.scan_id
    assert len(json.loads((saved / "defects.json").read_text())) == len(defects)
    assert (saved / "overlay.png").stat().st_size > 0
    assert metrics["ssum_edge_defects_total"] == len(defects)
    assert metrics["ssum_edge_inspected_tiles_total"] == 4
    assert metrics["ssum_edge_scan_defect_density_per_square_meter_count"] == 1


def test_a_defect_free_scan_yields_no_defect(tmp_path, ctx, collector):
    scan = _scan(tmp_path, DefectParams(count=0), seed=5)
    messages, metrics = _run(tmp_path, ctx, collector, scan,
                             scan / "ground_truth" / "sem_reference.tif")
    assert [m for m in messages if m.kind == "defect"] == []
    assert messages[-1].kind == "scan-end"
    klarf = read_klarf(tmp_path / "klarf" / "sim-0005.klarf")
    assert klarf["defects"] == [] and klarf["summary"][0]["NDEFECT"] == 0
    assert metrics["ssum_edge_inspected_tiles_total"] == 4
    assert metrics["ssum_edge_scan_defect_density_per_square_meter_bucket[0]"] == 1


def test_cell_to_cell_finds_the_defects_of_an_array_scan_without_a_reference(tmp_path, ctx,
                                                                             collector):
    """Each tile against its own cells, the pitch detected per tile."""
    scan = simulate_scan(tmp_path / "array", rows=2, cols=2, tile=256, overlap=64, seed=3,
                         defects=DEFECTS, tiles_of="sem", array_cells=(10, 11))
    truth = _truth(scan)
    assert len(truth) >= 3
    messages, metrics = _run(tmp_path, ctx, collector, scan, None, mode="cell")
    found = [(m.header["x_nm"], m.header["y_nm"]) for m in messages if m.kind == "defect"]
    assert _matched(found, truth) == len(truth) == len(found)
    assert metrics["ssum_edge_defects_total"] == len(truth)


def _raw_mosaic(scan: Path) -> Path:
    """The scan's own tiles pasted at their stage positions: a reference that shows the chip
    exactly as its tiles do, defects and all."""
    recording = read_scan(scan)
    pixel = recording.pixel_size_nm
    corners = [(round(t.x_nm / pixel), round(t.y_nm / pixel)) for t in recording.tiles]
    images = [read_image(scan / t.file) for t in recording.tiles]
    mosaic = np.zeros((max(y for _, y in corners) + images[0].shape[0],
                       max(x for x, _ in corners) + images[0].shape[1]), np.float32)
    for (x, y), image in zip(corners, images):
        mosaic[y:y + image.shape[0], x:x + image.shape[1]] = image
    return write_tiff16(scan / "raw_mosaic.tif", mosaic)


@pytest.mark.parametrize("optical", ["sem_reference", "raw_mosaic"])
def test_confirmation_keeps_the_defects_that_the_raw_tiles_show(tmp_path, ctx, collector,
                                                                 optical):
    """The converter passes tiles through, so the raw tiles show every defect the converted
    ones do: confirmed against the defect-free reference all are kept; against an optical
    reference made of the tiles themselves none is."""
    scan = simulate_scan(tmp_path / "scan", rows=2, cols=2, tile=256, overlap=64, seed=4,
                         stage_error_nm=0.0, defects=DEFECTS, tiles_of="sem")
    truth = _truth(scan)
    reference = _raw_mosaic(scan) if optical == "raw_mosaic" else \
        scan / "ground_truth" / "sem_reference.tif"
    messages, metrics = _run(tmp_path, ctx, collector, scan,
                             scan / "ground_truth" / "sem_reference.tif", confirm=True,
                             optical_reference=str(reference))
    found = [(m.header["x_nm"], m.header["y_nm"]) for m in messages if m.kind == "defect"]
    assert metrics["ssum_edge_inspected_tiles_total"] == 4
    if optical == "sem_reference":
        assert _matched(found, truth) == len(found) == len(truth)
        assert metrics["ssum_edge_detections_unconfirmed_total"] == 0
    else:
        assert found == []
        assert metrics["ssum_edge_detections_unconfirmed_total"] >= len(truth)
