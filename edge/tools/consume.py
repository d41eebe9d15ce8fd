"""The reference client of the daemon's output (`ssum consume`).

Per scan it writes, under OUT/<scan_id>/: tiles/rRRR_cCCC.tif (16-bit), tiles.jsonl (one header a
line), errors.jsonl, heights/rRRR_cCCC.tif (the height maps of fused z-stacks, float32 nm),
trust/rRRR_cCCC.tif (the trust maps, float32 block scores), and at scan-end mosaic.ome.tif,
mosaic.png and summary.json; when the daemon inspects, defects.json
(the defect messages' records) and overlay.png (the mosaic with a numbered box per defect).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
import zmq

from edge.errors import UserError
from edge.imaging.imageio import read_image, to_float01, write_png8, write_tiff16
from edge.imaging.mosaic import MosaicBuilder, write_ome_tiff
from edge.inference.trust import LOW_TRUST
from edge.inspection.overlay import write_overlay
from edge.inspection.records import from_record
from edge.protocol import (
    UNKNOWN_SCAN,
    Kind,
    ProtocolError,
    decode_message,
    is_valid_scan_id,
    topic,
)
from edge.transport import CurveOptions, SocketOptions, socket_in

log = logging.getLogger(__name__)

SOCKET_KINDS = ("sub", "pull")
TOPICS = tuple(topic(kind) for kind in (Kind.SEM, Kind.ERROR, Kind.SCAN_END, Kind.DEFECT,
                                        Kind.HEIGHT, Kind.TRUST))
PREVIEW_MAX_SIDE = 2048


@dataclass
class ConsumeResult:
    out_dir: Path
    summaries: dict[str, dict] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    timed_out: bool = False


def latency_stats(values_ms: list[float]) -> dict[str, float] | None:
    if not values_ms:
        return None
    p50, p99 = np.percentile(values_ms, [50, 99])
    return {"n": len(values_ms), "p50": float(p50), "p99": float(p99), "max": max(values_ms)}


def trust_stats(scores: list[float]) -> dict[str, float] | None:
    """The judged tiles' trust scores: count, mean, minimum, and how many are low-trust."""
    if not scores:
        return None
    return {"n": len(scores), "mean": float(np.mean(scores)), "min": min(scores),
            "low": sum(score < LOW_TRUST for score in scores), "low_below": LOW_TRUST}


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(record, separators=(",", ":")) + "\n")


def _preview(image: np.ndarray) -> np.ndarray:
    scale = PREVIEW_MAX_SIDE / max(image.shape)
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class ScanCollector:
    """Everything received for one scan, saved as it arrives."""

    def __init__(self, out_dir: Path, scan_id: str) -> None:
        self.scan_id = scan_id
        self.directory = out_dir / scan_id
        (self.directory / "tiles").mkdir(parents=True, exist_ok=True)
        self.tiles: dict[tuple[int, int], tuple[Path, float, float]] = {}
        self.planes = 0  # the rig's tiles the converted tiles stand for (z-stacks: their planes)
        self.heights = 0
        self.trust_maps = 0
        self.trust_scores: list[float] = []
        self.pixel_size_nm: float | None = None
        self.daemon_ms: list[float] = []
        self.capture_to_receive_ms: list[float] = []
        self.error_codes: Counter[str] = Counter()
        self.scan_end: dict | None = None
        self.mosaic_shape: list[int] | None = None
        self.defects: list[dict] = []

    def add_tile(self, header: dict, image: np.ndarray, t_receive: float) -> None:
        path = write_tiff16(self.directory / "tiles" / _tile_name(header), to_float01(image))
        self.tiles[(header["row"], header["col"])] = (path, header["x_nm"], header["y_nm"])
        stack = header.get("stack")
        self.planes += int(stack.get("planes", 1)) if isinstance(stack, dict) else 1
        self.pixel_size_nm = self.pixel_size_nm or header["pixel_size_nm"]
        _append_jsonl(self.directory / "tiles.jsonl", header)
        total = (header.get("latency_ms") or {}).get("total")
        if isinstance(total, (int, float)):
            self.daemon_ms.append(float(total))
        score = (header.get("trust") or {}).get("score")
        if isinstance(score, (int, float)):
            self.trust_scores.append(float(score))
        self.capture_to_receive_ms.append((t_receive - header["t_capture"]) * 1000.0)

    def add_height(self, header: dict, image: np.ndarray) -> None:
        path = self.directory / "heights" / _tile_name(header)
        path.parent.mkdir(exist_ok=True)
        tifffile.imwrite(path, np.asarray(image, np.float32))
        self.heights += 1

    def add_trust(self, header: dict, image: np.ndarray) -> None:
        path = self.directory / "trust" / _tile_name(header)
        path.parent.mkdir(exist_ok=True)
        tifffile.imwrite(path, np.asarray(image, np.float32))
        self.trust_maps += 1

    def add_error(self, record: dict) -> None:
        self.error_codes[str(record.get("error", "unknown"))] += 1
        _append_jsonl(self.directory / "errors.jsonl", record)

    def add_defect(self, header: dict) -> None:
        self.defects.append({k: v for k, v in header.items()
                             if k not in ("v", "width", "height", "dtype")})

    def write_defects(self, mosaic: np.ndarray | None, builder: MosaicBuilder | None) -> None:
        """defects.json, and overlay.png on the mosaic (at the mosaic's origin)."""
        (self.directory / "defects.json").write_text(json.dumps(self.defects, indent=1))
        if mosaic is None or builder is None:
            return
        placed = [from_record(d, builder.pixel_size_nm, builder.origin_nm) for d in self.defects]
        write_overlay(self.directory / "overlay.png", mosaic, placed)

    def build_mosaic(self, refine: bool) -> None:
        """Stitch the saved tiles at their stage positions into mosaic.ome.tif and mosaic.png."""
        if not self.tiles or self.pixel_size_nm is None:
            return
        builder = MosaicBuilder(self.pixel_size_nm, refine=refine)
        for _, (path, x_nm, y_nm) in sorted(self.tiles.items()):
            builder.add(read_image(path), x_nm, y_nm)
        mosaic = builder.render()
        metadata = {"scan_id": self.scan_id, "tiles": len(self.tiles)}
        write_ome_tiff(self.directory / "mosaic.ome.tif", mosaic, self.pixel_size_nm, metadata)
        write_png8(self.directory / "mosaic.png", _preview(mosaic))
        self.mosaic_shape = [int(mosaic.shape[0]), int(mosaic.shape[1])]
        if self.defects:
            self.write_defects(mosaic, builder)

    def summary(self) -> dict[str, Any]:
        expected = (self.scan_end or {}).get("n_tiles")
        summary = {
            "scan_id": self.scan_id,
            "complete": self.scan_end is not None,
            "tiles": len(self.tiles),
            "errors": sum(self.error_codes.values()),
            "errors_by_code": dict(self.error_codes),
            "missing_tiles": expected - self.planes if isinstance(expected, int) else None,
            "height_maps": self.heights,
            "trust": trust_stats(self.trust_scores),
            "trust_maps": self.trust_maps,
            "scan_end": self.scan_end,
            "latency_ms": {
                "daemon_total": latency_stats(self.daemon_ms),
                "capture_to_receive": latency_stats(self.capture_to_receive_ms),
            },
            "mosaic": "mosaic.ome.tif" if self.mosaic_shape else None,
            "mosaic_shape": self.mosaic_shape,
            "defects": len(self.defects),
        }
        (self.directory / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def _tile_name(header: dict) -> str:
    return f"r{header['row']:03d}_c{header['col']:03d}.tif"


def _safe_scan_id(value: Any) -> str:
    return value if isinstance(value, str) and is_valid_scan_id(value) else UNKNOWN_SCAN


class Consumer:
    """Routes decoded messages to their scan's collector."""

    def __init__(self, out_dir: Path, mosaic: bool, refine: bool) -> None:
        self.out_dir = out_dir
        self.mosaic = mosaic
        self.refine = refine
        self.scans: dict[str, ScanCollector] = {}
        self.result = ConsumeResult(out_dir)

    def collector(self, scan_id: str) -> ScanCollector:
        if scan_id not in self.scans:
            self.scans[scan_id] = ScanCollector(self.out_dir, scan_id)
        return self.scans[scan_id]

    def handle(self, frames: list[bytes]) -> None:
        t_receive = time.time()
        try:
            message = decode_message(frames)
        except ProtocolError as exc:
            log.warning("undecodable message from the daemon: %s", exc)
            scan_id = _safe_scan_id(exc.scan_id)
            record = {"v": 1, "scan_id": scan_id, "error": exc.code.value, "message": exc.message}
            self.collector(scan_id).add_error(record | {"origin": "consumer"})
            return
        scan = self.collector(_safe_scan_id(message.scan_id))
        if message.kind == Kind.SEM and message.image is not None:
            scan.add_tile(message.header, message.image, t_receive)
        elif message.kind == Kind.ERROR:
            log.warning("error for scan %s: %s", scan.scan_id, message.header.get("message"))
            scan.add_error(message.header)
        elif message.kind == Kind.DEFECT:
            scan.add_defect(message.header)
        elif message.kind == Kind.SCAN_END:
            self.finish(scan, message.header)
        elif message.kind == Kind.HEIGHT and message.image is not None:
            scan.add_height(message.header, message.image)
        elif message.kind == Kind.TRUST and message.image is not None:
            scan.add_trust(message.header, message.image)
        else:
            log.debug("ignoring %s message for scan %s", message.kind, scan.scan_id)

    def finish(self, scan: ScanCollector, scan_end: dict | None) -> None:
        scan.scan_end = scan_end
        if scan_end is not None and self.mosaic:
            scan.build_mosaic(self.refine)
        elif scan.defects:
            scan.write_defects(None, None)
        self.result.summaries[scan.scan_id] = scan.summary()
        if scan_end is not None and scan.scan_id not in self.result.completed:
            self.result.completed.append(scan.scan_id)
            log.info("scan %s complete: %d tiles", scan.scan_id, len(scan.tiles))


def consume(
    endpoint: str,
    out_dir: str | Path,
    socket: str = "sub",
    bind: bool = False,
    scans: int = 1,
    timeout_s: float = 60,
    mosaic: bool = True,
    refine: bool = False,
    context: Any = None,
    curve: CurveOptions | None = None,
) -> ConsumeResult:
    """Receive converted tiles until `scans` scan-ends arrived, or nothing came for `timeout_s`."""
    if socket not in SOCKET_KINDS:
        raise UserError(f"socket must be one of {', '.join(SOCKET_KINDS)}, got {socket!r}")
    if scans < 1:
        raise UserError(f"scans must be >= 1, got {scans}")
    consumer = Consumer(Path(out_dir), mosaic, refine)
    options = SocketOptions(curve=curve, subscribe=TOPICS if socket == "sub" else ())
    kind = zmq.SUB if socket == "sub" else zmq.PULL
    with socket_in(context, kind, endpoint, bind, options) as sock:
        while len(consumer.result.completed) < scans:
            if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
                consumer.result.timed_out = True
                break
            consumer.handle(sock.recv_multipart())
    for scan in consumer.scans.values():
        if scan.scan_id not in consumer.result.summaries:
            consumer.finish(scan, None)
    return consumer.result
