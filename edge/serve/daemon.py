"""The conversion daemon: ZeroMQ in, pipeline, ZeroMQ out, Prometheus metrics, systemd notify.

`Daemon(config).start()` returns once sockets, model and backend are up (READY=1 is then sent
by `serve_forever`); `stop(drain=True)` stops intake, converts and publishes everything already
received, forwards the scan-ends owed and closes the sockets. The input socket lives in the
receive thread and the output socket in the pipeline's publish thread: each ZeroMQ socket is
used by exactly one thread.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge.imaging.mosaic import MosaicBuilder, write_ome_tiff
from edge.inference.bundle import default_bundle_path
from edge.inference.converter import Converter
from edge.protocol import Kind, topic
from edge.serve import sdnotify
from edge.serve.config import EdgeConfig
from edge.serve.metrics import EdgeMetrics, serve
from edge.serve.nvml import register_gpu_metrics
from edge.serve.pipeline import Pipeline
from edge.transport import OpenSocket, SocketOptions, open_socket

log = logging.getLogger(__name__)

POLL_MS = 100
OUTPUT_LINGER_MS = 5000
STALL_S = 60.0


def load_converter(config: EdgeConfig) -> Converter:
    """The converter of the bundle and backend named in [model], warmed up."""
    converter = Converter.from_bundle(config.model.bundle or default_bundle_path(),
                                      config.converter_settings())
    try:
        converter.warm_up()
    except BaseException:
        converter.close()
        raise
    return converter


class ZmqSink:
    """The output socket, created and used by the publish thread only."""

    def __init__(self, context: zmq.Context, config: EdgeConfig, give_up: threading.Event) -> None:
        out = config.output
        self.push = out.socket == "push"
        options = SocketOptions(curve=config.security.curve_options(out.bind), hwm=out.hwm,
                                linger_ms=OUTPUT_LINGER_MS)
        self._open = open_socket(context, zmq.PUSH if self.push else zmq.PUB, out.endpoint,
                                 out.bind, options)
        self.socket = self._open.socket
        self._give_up = give_up
        log.info("output: %s %s %s", out.socket, "bound to" if out.bind else "connected to",
                 out.endpoint)

    def send(self, frames: list[bytes]) -> None:
        if self.push:  # blocks while no consumer takes it; gives up only on abort
            while not self.socket.poll(POLL_MS, zmq.POLLOUT):
                if self._give_up.is_set():
                    raise RuntimeError("shutting down with no consumer for PUSH output")
        self.socket.send_multipart(frames, copy=False)

    def close(self) -> None:
        self._open.close()


def subscriptions(topics: tuple[str, ...]) -> list[str]:
    """SUB prefixes: the configured ones plus the scan-end prefix of every tile/ prefix."""
    out = list(topics)
    tile, scan_end = topic(Kind.TILE), topic(Kind.SCAN_END)
    out += [scan_end + t[len(tile):] for t in topics if t.startswith(tile)]
    return list(dict.fromkeys(out))


class MosaicWriter:
    """Builds each scan's mosaic from its converted tiles; writes <dir>/<scan_id>.ome.tif."""

    def __init__(self, directory: Path, refine: bool) -> None:
        self.directory = directory
        self.refine = refine
        self._builders: dict[str, tuple[Any, float]] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, header: dict, image: np.ndarray) -> None:
        entry = self._builders.get(header["scan_id"])
        if entry is None:
            pixel_size_nm = float(header["pixel_size_nm"])
            entry = (MosaicBuilder(pixel_size_nm, refine=self.refine), pixel_size_nm)
            self._builders[header["scan_id"]] = entry
        entry[0].add(image, header["x_nm"], header["y_nm"])

    def finish(self, scan_id: str, summary: dict) -> None:
        entry = self._builders.pop(scan_id, None)
        if entry is None:
            return
        builder, pixel_size_nm = entry
        path = self.directory / f"{scan_id}.ome.tif"
        write_ome_tiff(path, builder.render(), pixel_size_nm,
                       metadata={k: v for k, v in summary.items()
                                 if isinstance(v, str | int | float)})
        log.info("wrote the mosaic of scan %s to %s", scan_id, path)


class Daemon:
    """One daemon instance; several can run in one process (each has its own registry)."""

    def __init__(self, config: EdgeConfig, converter: Converter | None = None) -> None:
        self.config = config
        self.metrics = EdgeMetrics()
        self.metrics_port: int | None = None
        self._converter = converter
        self._owns_converter = converter is None
        self._context: zmq.Context | None = None
        self._pipeline: Pipeline | None = None
        self._http: Any = None
        self._receiver: threading.Thread | None = None
        self._stop_intake = threading.Event()
        self._abort = threading.Event()
        self._stopped = threading.Event()
        self._receiver_ready = threading.Event()
        self._receiver_error: BaseException | None = None
        self._progress = (0, time.monotonic())

    # ----------------------------------------------------------------- life cycle
    def start(self) -> None:
        """Load the model, open the metrics endpoint and both sockets; returns when ready."""
        config = self.config
        if self._converter is None:
            self._converter = load_converter(config)
        labels = self._converter.model_info
        self.metrics.set_model(**labels)
        if config.metrics.enabled:
            register_gpu_metrics(self.metrics.registry)
            self._http, self.metrics_port = serve(
                self.metrics, config.metrics.host, config.metrics.port
            )
        self._context = zmq.Context()
        try:
            self._start_pipeline()
            self._start_receiver()
        except BaseException:
            self.stop(drain=False)
            raise
        log.info("ready: model %s on %s/%s, input %s %s, output %s %s", self._converter.label,
                 labels["backend"], labels["precision"], config.input.socket,
                 config.input.endpoint, config.output.socket, config.output.endpoint)

    def _start_pipeline(self) -> None:
        config = self.config
        settings = config.pipeline_settings()
        mosaic = None
        if config.mosaic.enabled:
            mosaic = MosaicWriter(Path(config.mosaic.directory), config.mosaic.refine)
        assert self._context is not None and self._converter is not None
        context = self._context
        self._pipeline = Pipeline(
            self._converter,
            lambda: ZmqSink(context, config, self._abort),
            self.metrics,
            settings,
            on_converted=mosaic.add if mosaic else None,
            on_scan_end=mosaic.finish if mosaic else None,
        )
        self._pipeline.start()

    def _start_receiver(self) -> None:
        self._receiver = threading.Thread(target=self._receive_loop, name="edge-receive",
                                          daemon=True)
        self._receiver.start()
        self._receiver_ready.wait()
        if self._receiver_error is not None:
            raise self._receiver_error

    def stop(self, drain: bool = True, timeout_s: float = 60.0) -> None:
        """Stop intake; with drain, publish everything received (and scan-ends owed) first."""
        if self._stopped.is_set():
            return
        sdnotify.notify("STOPPING=1")
        if not drain:
            self._abort.set()
        self._stop_intake.set()
        if self._receiver is not None:
            self._receiver.join(timeout_s)
        if self._pipeline is not None and not self._pipeline.close(drain, timeout_s):
            log.error("the pipeline did not finish within %.0f s", timeout_s)
            self._abort.set()
            self._pipeline.close(drain=False, timeout_s=5)
        if self._context is not None:
            self._context.term()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._owns_converter and self._converter is not None:
            self._converter.close()
        self._stopped.set()
        log.info("stopped: %s", self.status_line())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() finished; True when it did."""
        return self._stopped.wait(timeout)

    # ----------------------------------------------------------------- receive thread
    def _open_input(self) -> OpenSocket:
        assert self._context is not None
        cfg = self.config.input
        topics = tuple(subscriptions(cfg.topics)) if cfg.socket == "sub" else ()
        options = SocketOptions(curve=self.config.security.curve_options(cfg.bind), hwm=cfg.hwm,
                                subscribe=topics)
        opened = open_socket(self._context, zmq.SUB if cfg.socket == "sub" else zmq.PULL,
                             cfg.endpoint, cfg.bind, options)
        log.info("input: %s %s %s", cfg.socket, "bound to" if cfg.bind else "connected to",
                 cfg.endpoint)
        return opened

    def _receive_loop(self) -> None:
        try:
            opened = self._open_input()
        except BaseException as exc:  # noqa: BLE001 - re-raised by start() in its thread
            self._receiver_error = exc
            self._receiver_ready.set()
            return
        self._receiver_ready.set()
        assert self._pipeline is not None
        socket = opened.socket
        try:
            while not self._stop_intake.is_set():
                if not socket.poll(POLL_MS, zmq.POLLIN):
                    continue
                frames = socket.recv_multipart(copy=False)
                self._pipeline.submit(frames, time.monotonic())
        except Exception:
            log.exception("the receive loop failed")
            raise
        finally:
            opened.close()

    # ----------------------------------------------------------------- health
    def healthy(self) -> bool:
        """Threads alive and the pipeline making progress (or idle); what WATCHDOG=1 vouches."""
        pipeline = self._pipeline
        if pipeline is None or not pipeline.alive():
            return False
        if self._receiver is None or not self._receiver.is_alive():
            return False
        now = time.monotonic()
        if pipeline.published != self._progress[0] or pipeline.in_flight == 0:
            self._progress = (pipeline.published, now)
        return now - self._progress[1] < STALL_S

    def status_line(self) -> str:
        m = self.metrics
        in_flight = self._pipeline.in_flight if self._pipeline else 0
        return (
            f"received {m.counter_value('tiles_received'):.0f}, "
            f"converted {m.counter_value('tiles_converted'):.0f}, "
            f"rejected {m.counter_value('tiles_rejected'):.0f}, "
            f"dropped {m.counter_value('tiles_dropped'):.0f}, in flight {in_flight}"
        )

    def serve_forever(self, stop_requested: threading.Event, status_every_s: float = 5.0) -> int:
        """Notify systemd (READY, STATUS, WATCHDOG) until asked to stop; then drain. Exit code."""
        sdnotify.notify("READY=1\nSTATUS=" + self.status_line())
        interval = sdnotify.watchdog_interval()
        tick = min(status_every_s, interval) if interval else status_every_s
        code = 0
        while not stop_requested.wait(tick):
            if self.healthy():
                sdnotify.notify("WATCHDOG=1\nSTATUS=" + self.status_line())
            else:
                log.error("pipeline unhealthy (a stage died or nothing published for %.0f s)",
                          STALL_S)
                sdnotify.notify("STATUS=unhealthy: " + self.status_line())
                if not (self._pipeline and self._pipeline.alive()):
                    code = 1
                    break
        log.info("stopping: draining %d item(s) in flight",
                 self._pipeline.in_flight if self._pipeline else 0)
        self.stop(drain=True)
        return code


def run_daemon(config: EdgeConfig) -> int:
    """Run a daemon until SIGTERM or SIGINT, then drain; the process's exit code."""
    root = logging.getLogger()
    if root.level != logging.DEBUG:
        root.setLevel(config.log.level)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    daemon = Daemon(config)
    daemon.start()
    if daemon.metrics_port is not None:
        log.info("metrics endpoint: http://%s:%d/metrics", config.metrics.host, daemon.metrics_port)
    return daemon.serve_forever(stop)
