"""`ssum demo`: the whole product on one machine, from nothing.

Simulates a scan of a chip with a few injected defects, starts the conversion daemon on the
default bundle (a real subprocess, ready when it tells systemd-style READY=1) with inline
inspection against the chip's layout, replays the scan as the SSUM rig would, consumes the
converted tiles and the defects, and writes the input mosaic, the converted mosaic and the SEM
ground truth side by side, the defect overlay, and a summary of quality, defects found against
those injected, throughput and latency.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import read_image, to_float01, to_uint8, write_png8
from edge.imaging.mosaic import MosaicBuilder
from edge.imaging.registration import register
from edge.inference.bundle import load_bundle
from edge.serve.config_file import build_config, to_toml
from edge.tools.consume import consume
from edge.tools.rig import replay_scan
from edge.tools.scanfile import read_scan
from edge.tools.supervise import NotifyListener, free_port, scrape, start_daemon, stop_daemon
from trainer.evaluation.metrics import psnr
from trainer.sim.defects import DefectParams
from trainer.sim.scan import simulate_scan

DEMO_DEFECTS = DefectParams(count=4, min_size_nm=60.0, max_size_nm=250.0,
                            kinds=("particle", "bridge", "open", "missing_contact"))
MATCH_NM = 60.0  # a defect found within this of an injected one's box is that one


def write_config(path: Path, bundle: Path, rig: str, out: str, metrics_port: int,
                 layout: Path) -> Path:
    """The daemon's edge.toml: SUB from the replayed rig, PUB to the consumer, inspection
    against the chip's layout (die-to-database)."""
    inspection = {"enabled": True, "mode": "database", "reference": str(layout),
                  "directory": str(path.parent / "inspection")}
    config = build_config({"input": {"socket": "sub", "endpoint": rig, "mode": "connect"},
                           "output": {"socket": "pub", "endpoint": out, "mode": "bind"},
                           "model": {"bundle": str(bundle)},
                           "metrics": {"host": "127.0.0.1", "port": metrics_port},
                           "inspection": inspection}, "ssum demo")
    path.write_text("# written by ssum demo\n" + to_toml(config))
    return path


def stitch(scan: Any, refine: bool) -> np.ndarray:
    """The input mosaic from the raw camera tiles, with the same mosaic code as the output's."""
    builder = MosaicBuilder(scan.pixel_size_nm, refine=refine)
    for tile in scan.tiles:
        builder.add(to_float01(scan.load_tile(tile)), tile.x_nm, tile.y_nm)
    return builder.render()


def compare_to_truth(image: np.ndarray, truth: np.ndarray, border: int = 16) -> tuple[float, np.ndarray]:
    """PSNR against the ground truth after a rigid re-registration (stages err by ~2 px)."""
    h, w = min(image.shape[0], truth.shape[0]), min(image.shape[1], truth.shape[1])
    image, truth = image[:h, :w], truth[:h, :w]
    aligned = register(image, truth, affine=False).warp(image, shape=truth.shape)
    inner = np.s_[border : h - border, border : w - border]
    return psnr(np.clip(aligned[inner], 0, 1), truth[inner]), aligned


def side_by_side(path: Path, panels: list[tuple[str, np.ndarray]], max_side: int = 768) -> Path:
    tiles = []
    for label, image in panels:
        scale = min(1.0, max_side / max(image.shape))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        tile = cv2.copyMakeBorder(to_uint8(small), 36, 4, 4, 4, cv2.BORDER_CONSTANT, value=0)
        cv2.putText(tile, label, (8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2, cv2.LINE_AA)
        tiles.append(tile)
    height = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=0) for t in tiles]
    cv2.imwrite(str(path), np.hstack(tiles))
    return path


def defects_against_truth(found: list[dict], injected: list[dict]) -> dict[str, Any]:
    """How many injected defects were found (a found one inside an injected one's box grown
    by MATCH_NM, each used once) and how many found ones match none."""
    left = list(found)
    matched = 0
    for truth in injected:
        x0, y0, x1, y1 = truth["bbox_nm"]
        box = (x0 - MATCH_NM, y0 - MATCH_NM, x1 + MATCH_NM, y1 + MATCH_NM)
        near = [d for d in left if box[0] <= d["x_nm"] <= box[2] and box[1] <= d["y_nm"] <= box[3]]
        if near:
            left.remove(near[0])
            matched += 1
    return {"injected": len(injected), "found": len(found), "matched": matched,
            "false_alarms": len(left),
            "injected_kinds": [f"{t['kind']} {t['size_nm']:.0f} nm" for t in injected],
            "found_classes": [d["class"] for d in found]}


def run_demo(out: Path, bundle: Path, rows: int, cols: int, tile: int, seed: int,
             rate_hz: float | None) -> dict[str, Any]:
    load_bundle(bundle)  # refuse a broken bundle before starting anything
    out.mkdir(parents=True, exist_ok=True)
    scan = read_scan(simulate_scan(out / "scan", rows=rows, cols=cols, tile=tile, seed=seed,
                                   defects=DEMO_DEFECTS))
    rig, result_endpoint, metrics_port = (f"tcp://127.0.0.1:{free_port()}",
                                          f"tcp://127.0.0.1:{free_port()}", free_port())
    config = write_config(out / "edge.toml", bundle, rig, result_endpoint, metrics_port,
                          scan.ground_truth["layout"])
    with tempfile.TemporaryDirectory(prefix="ssum-demo-") as tmp:
        notify = NotifyListener(Path(tmp))
        daemon = start_daemon(config, notify, out / "daemon.log")
        try:
            consumed: dict[str, Any] = {}
            consumer = threading.Thread(target=lambda: consumed.update(result=consume(
                result_endpoint, out / "converted", scans=1, timeout_s=120)))
            consumer.start()
            time.sleep(0.5)  # the consumer's subscription reaches the daemon's PUB
            started = time.monotonic()
            replay_scan(scan.path, rig, socket="pub", bind=True, rate_hz=rate_hz, wait_subscribers=1)
            consumer.join()
            elapsed = time.monotonic() - started
            counters = scrape(metrics_port)
        finally:
            exit_code = stop_daemon(daemon)
            notify.close()
    result = consumed.get("result")
    if result is None or scan.scan_id not in result.completed:
        raise UserError(f"the converted scan did not come back complete; see {out / 'daemon.log'}")
    summary = result.summaries[scan.scan_id]
    truth = read_image(scan.ground_truth["sem_mosaic"])
    converted = read_image(out / "converted" / scan.scan_id / "mosaic.ome.tif")
    psnr_in, input_aligned = compare_to_truth(stitch(scan, refine=False), truth)
    psnr_out, converted_aligned = compare_to_truth(converted, truth)
    side_by_side(out / "side_by_side.png", [("SSUM input", input_aligned),
                                           ("converted", converted_aligned), ("SEM truth", truth)])
    write_png8(out / "converted_mosaic.png", converted_aligned)
    latency = summary["latency_ms"]["daemon_total"] or {}
    scan_dir = out / "converted" / scan.scan_id
    found = json.loads((scan_dir / "defects.json").read_text()) if summary["defects"] else []
    report = {
        "scan_id": scan.scan_id, "tiles": summary["tiles"], "tile_px": tile,
        "psnr_input_db": psnr_in, "psnr_converted_db": psnr_out, "psnr_gain_db": psnr_out - psnr_in,
        "tiles_per_s": summary["tiles"] / elapsed, "replay_rate_hz": rate_hz, "latency_p50_ms": latency.get("p50"),
        "latency_p99_ms": latency.get("p99"), "metrics_endpoint": f"http://127.0.0.1:{metrics_port}/metrics",
        "counters": counters, "daemon_exit_code": exit_code, "bundle": str(bundle),
        "defects": defects_against_truth(found, scan.meta["simulation"]["defects"]),
        "outputs": {"side_by_side": str(out / "side_by_side.png"), "converted": str(out / "converted"),
                    "overlay": str(scan_dir / "overlay.png"),
                    "klarf": str(out / "inspection" / f"{scan.scan_id}.klarf")},
    }
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    return report


def print_report(report: dict[str, Any]) -> None:
    c = report["counters"]
    print(f"scan {report['scan_id']}: {report['tiles']} tiles of {report['tile_px']} px converted")
    print(f"PSNR vs SEM truth: input {report['psnr_input_db']:.2f} dB -> converted "
          f"{report['psnr_converted_db']:.2f} dB (gain {report['psnr_gain_db']:+.2f} dB)")
    print(f"replayed at {report['replay_rate_hz'] or 'full speed'} tiles/s; "
          f"throughput {report['tiles_per_s']:.2f} tiles/s; daemon latency p50 "
          f"{report['latency_p50_ms']:.0f} ms, p99 {report['latency_p99_ms']:.0f} ms")
    print(f"metrics were at {report['metrics_endpoint']}: received "
          f"{c.get('ssum_edge_tiles_received_total', 0):.0f}, converted "
          f"{c.get('ssum_edge_tiles_converted_total', 0):.0f}, rejected "
          f"{c.get('ssum_edge_tiles_rejected_total', 0):.0f}, dropped "
          f"{c.get('ssum_edge_tiles_dropped_total', 0):.0f}")
    d = report["defects"]
    print(f"defects: {d['injected']} injected ({', '.join(d['injected_kinds'])}), {d['found']} "
          f"found ({', '.join(d['found_classes']) or 'none'}): {d['matched']} of the injected "
          f"found, {d['false_alarms']} false alarm(s)")
    print(f"daemon exited with code {report['daemon_exit_code']} after draining")
    print(f"wrote {report['outputs']['side_by_side']} (input | converted | truth), "
          f"{report['outputs']['overlay']} (defects), {report['outputs']['klarf']} and "
          f"{report['outputs']['converted']}/")
