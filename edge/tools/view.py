"""The live view of a scan (`ssum view`): a web page on 127.0.0.1 showing the current scan's
mosaic filling in as converted tiles arrive, with the input mosaic (when the rig's stream is
given), the trust maps (when the daemon publishes them), tile count and latency.

A subscriber thread feeds a `ScanView` from the daemon's output (and optionally the rig's);
a Flask application serves the page, the state as JSON and each layer as a PNG, re-rendered
only when tiles were added.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import zmq
from flask import Flask, Response, jsonify
from werkzeug.serving import make_server

from edge.errors import UserError
from edge.imaging.imageio import to_float01, to_uint8
from edge.imaging.mosaic import MosaicBuilder
from edge.protocol import Kind, Message, ProtocolError, decode_message, topic
from edge.transport import SocketOptions, socket_in

log = logging.getLogger(__name__)

LAYERS = ("converted", "input", "trust")
PREVIEW_MAX_SIDE = 1600


@dataclass
class Layer:
    """One mosaic of the current scan, rendered to PNG on demand."""

    builder: MosaicBuilder | None = None
    tiles: int = 0
    png: bytes | None = None

    def add(self, header: dict, image: np.ndarray) -> None:
        if self.builder is None:
            self.builder = MosaicBuilder(float(header["pixel_size_nm"]))
        self.builder.add(to_float01(image), header["x_nm"], header["y_nm"])
        self.tiles += 1
        self.png = None

    def render(self) -> bytes | None:
        if self.png is None and self.builder is not None:
            mosaic = self.builder.render()
            scale = min(1.0, PREVIEW_MAX_SIDE / max(mosaic.shape))
            small = cv2.resize(mosaic, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            self.png = cv2.imencode(".png", to_uint8(small))[1].tobytes()
        return self.png


@dataclass
class ScanView:
    """What the page shows: the newest scan's layers, counts and latency."""

    scan_id: str = ""
    layers: dict[str, Layer] = field(default_factory=lambda: {name: Layer() for name in LAYERS})
    errors: int = 0
    latency_ms: list[float] = field(default_factory=list)
    complete: bool = False
    updated: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, message: Message) -> None:
        """Add one message from the daemon (sem, error, scan-end) or the rig (tile)."""
        with self.lock:
            if message.kind in (Kind.SEM, Kind.TILE) and message.scan_id != self.scan_id:
                self._new_scan(message.scan_id)
            if message.kind == Kind.SEM and message.image is not None:
                self.layers["converted"].add(message.header, message.image)
                total = (message.header.get("latency_ms") or {}).get("total")
                if isinstance(total, int | float):
                    self.latency_ms.append(float(total))
            elif message.kind == Kind.TILE and message.image is not None:
                self.layers["input"].add(message.header, message.image)
            elif message.kind == Kind.TRUST and message.image is not None \
                    and message.scan_id == self.scan_id:
                self.layers["trust"].add(*tile_sized(message.header, message.image))
            elif message.kind == Kind.ERROR and message.scan_id == self.scan_id:
                self.errors += 1
            elif message.kind == Kind.SCAN_END and message.scan_id == self.scan_id:
                self.complete = True
            self.updated = time.time()

    def _new_scan(self, scan_id: str) -> None:
        self.scan_id, self.errors, self.complete = scan_id, 0, False
        self.layers = {name: Layer() for name in LAYERS}
        self.latency_ms = []

    def state(self) -> dict[str, Any]:
        with self.lock:
            latency = np.percentile(self.latency_ms, [50, 99]) if self.latency_ms else None
            return {"scan_id": self.scan_id, "complete": self.complete, "errors": self.errors,
                    "tiles": {name: layer.tiles for name, layer in self.layers.items()},
                    "latency_ms": None if latency is None else
                    {"p50": float(latency[0]), "p99": float(latency[1])},
                    "updated": self.updated}

    def png(self, layer: str) -> bytes | None:
        with self.lock:
            return self.layers[layer].render()


def tile_sized(header: dict, trust_map: np.ndarray) -> tuple[dict, np.ndarray]:
    """A trust map as a tile-sized image of its blocks (the header with the tile's pixel size),
    so that it stitches like the converted tiles."""
    width, height = int(header["tile_width"]), int(header["tile_height"])
    blocks = cv2.resize(np.asarray(trust_map, np.float32), (width, height),
                        interpolation=cv2.INTER_NEAREST)
    pixel_nm = float(header["pixel_size_nm"]) * trust_map.shape[1] / width
    return {**header, "pixel_size_nm": pixel_nm}, blocks


def subscribe(view: ScanView, endpoint: str, kinds: tuple[Kind, ...], stop: threading.Event,
              context: zmq.Context | None = None) -> None:
    """Feed `view` from a PUB endpoint until `stop` (run in a thread)."""
    options = SocketOptions(subscribe=tuple(topic(kind) for kind in kinds))
    with socket_in(context, zmq.SUB, endpoint, False, options) as sock:
        while not stop.is_set():
            if not sock.poll(200):
                continue
            try:
                view.take(decode_message(sock.recv_multipart()))
            except ProtocolError as exc:
                log.warning("undecodable message on %s: %s", endpoint, exc)


def make_app(view: ScanView) -> Flask:
    app = Flask("ssum-view")

    @app.get("/")
    def page() -> Response:
        return Response(PAGE, mimetype="text/html")

    @app.get("/state.json")
    def state() -> Response:
        return jsonify(view.state())

    @app.get("/mosaic/<layer>.png")
    def mosaic(layer: str) -> Response:
        if layer not in LAYERS:
            return Response(f"no layer {layer}", status=404)
        png = view.png(layer)
        if png is None:
            return Response(status=204)
        return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})

    return app


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ssum-edge live view</title>
<style>
 body { font: 14px sans-serif; margin: 1em; background: #111; color: #ddd; }
 button { margin-right: .5em; } button.on { background: #4a7; color: #fff; }
 #mosaic { max-width: 100%; image-rendering: pixelated; border: 1px solid #444; }
</style></head>
<body>
<h1>ssum-edge <span id="scan">(no scan yet)</span></h1>
<p><button id="b-converted" class="on" onclick="show('converted')">converted</button>
<button id="b-input" onclick="show('input')">input</button>
<button id="b-trust" onclick="show('trust')" title="each tile's trust map: dark = low trust">trust map</button>
<span id="counts"></span> <span id="latency"></span></p>
<img id="mosaic" alt="the mosaic appears as tiles arrive">
<script>
let layer = "converted", seen = -1;
function show(name) {
  layer = name; seen = -1;
  for (const b of document.querySelectorAll("button")) b.classList.remove("on");
  document.getElementById("b-" + name).classList.add("on");
}
async function tick() {
  try {
    const s = await (await fetch("state.json")).json();
    document.getElementById("scan").textContent = s.scan_id
      ? s.scan_id + (s.complete ? " (complete)" : "") : "(no scan yet)";
    document.getElementById("counts").textContent =
      "tiles: " + s.tiles.converted + " converted, " + s.tiles.input + " input, "
      + s.tiles.trust + " trust maps, " + s.errors + " errors";
    document.getElementById("latency").textContent = s.latency_ms
      ? "latency p50 " + s.latency_ms.p50.toFixed(0) + " ms, p99 "
        + s.latency_ms.p99.toFixed(0) + " ms" : "";
    const n = s.tiles[layer] + ":" + s.scan_id;
    if (n !== seen && s.tiles[layer] > 0) {
      document.getElementById("mosaic").src = "mosaic/" + layer + ".png?n=" + encodeURIComponent(n);
      seen = n;
    }
  } catch (e) { document.getElementById("counts").textContent = "view server unreachable"; }
}
setInterval(tick, 1000); tick();
</script></body></html>
"""


class ViewServer:
    """The page and its subscribers, in threads of their own; port 0 picks a free port."""

    def __init__(self, daemon_endpoint: str, rig_endpoint: str | None = None,
                 host: str = "127.0.0.1", port: int = 8008) -> None:
        self.view = ScanView()
        self._stop = threading.Event()
        feeds: list[tuple[str, tuple[Kind, ...]]] = [
            (daemon_endpoint, (Kind.SEM, Kind.ERROR, Kind.SCAN_END, Kind.TRUST))]
        if rig_endpoint:
            feeds.append((rig_endpoint, (Kind.TILE,)))
        self._threads = [threading.Thread(target=subscribe, args=(self.view, e, k, self._stop),
                                          name="view-subscribe", daemon=True) for e, k in feeds]
        try:
            self._server = make_server(host, port, make_app(self.view), threaded=True)
        except OSError as exc:
            raise UserError(f"cannot serve the live view on {host}:{port}: {exc}") from exc
        self.port = int(self._server.server_port)
        self.url = f"http://{host}:{self.port}/"
        self._threads.append(threading.Thread(target=self._server.serve_forever,
                                              name="view-http", daemon=True))
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        for thread in self._threads:
            thread.join(5)
