"""The conversion daemon: ZeroMQ in, pipeline, ZeroMQ out, Prometheus metrics, systemd notify.

`Daemon(config).start()` returns once sockets, model and backend are up (READY=1 is then sent
by `serve_forever`); `stop(drain=True)` stops intake, converts and publishes what was received
within [shutdown] drain_timeout_s, drops the rest, forwards the scan-ends owed and closes the
sockets. The input socket lives in the receive thread and the output socket in the pipeline's
publish thread: each ZeroMQ socket is used by exactly one thread. A thread that dies stops the
daemon with exit code 1 (systemd restarts it).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from edge.errors import UserError
from edge.inference.bundle import default_bundle_path, load_bundle
from edge.inference.converter import Converter
from edge.serve import sdnotify
from edge.serve.bounds import check_batch_memory, check_queue_memory
from edge.serve.config import EdgeConfig
from edge.serve.inspection_writer import InspectionWriter
from edge.serve.metrics import EdgeMetrics, serve
from edge.serve.mosaic_writer import MosaicWriter
from edge.serve.nvml import register_gpu_metrics
from edge.serve.pipeline import Observer, Pipeline
from edge.serve.sockets import POLL_MS, ZmqSink, open_input

log = logging.getLogger(__name__)

STALL_S = 60.0
ABORT_WAIT_S = 5.0
EXIT_OK, EXIT_FAILED, EXIT_DROPPED = 0, 1, 3


def load_converter(config: EdgeConfig) -> Converter:
    """The converter of the bundle and backend named in [model], checked against this
    machine's memory and warmed up."""
    check_queue_memory(config)
    trusted = Path(config.model.trusted_keys) if config.model.trusted_keys else None
    bundle = load_bundle(config.model.bundle or default_bundle_path(), trusted_keys=trusted)
    converter = Converter.from_bundle(bundle, config.converter_settings())
    patch_size = int(getattr(converter.tiler, "patch_size", 0))
    try:
        check_batch_memory(config, bundle, patch_size)
        converter.warm_up()
    except MemoryError as exc:
        converter.close()
        raise UserError(f"{config.source}: [batching] max_batch = {config.batching.max_batch}: "
                        f"the warm-up batch of {patch_size} px patches ran out of memory; lower "
                        "max_batch") from exc
    except BaseException:
        converter.close()
        raise
    return converter


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
        observers: list[Observer] = []
        if config.mosaic.enabled:
            observers.append(MosaicWriter(Path(config.mosaic.directory), config.mosaic.refine))
        if config.inspection.enabled:
            observers.append(InspectionWriter(config.inspection, self.metrics))
        assert self._context is not None and self._converter is not None
        context = self._context
        self._pipeline = Pipeline(
            self._converter,
            lambda: ZmqSink(context, config, self._abort),
            self.metrics,
            settings,
            observers,
        )
        self._pipeline.start()

    def _start_receiver(self) -> None:
        self._receiver = threading.Thread(target=self._receive_loop, name="edge-receive",
                                          daemon=True)
        self._receiver.start()
        self._receiver_ready.wait()
        if self._receiver_error is not None:
            raise self._receiver_error

    def stop(self, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop intake; with drain, publish what was received (and the scan-ends owed) until
        the deadline ([shutdown] drain_timeout_s by default), then drop what is left."""
        if self._stopped.is_set():
            return
        sdnotify.notify("STOPPING=1")
        timeout = self.config.shutdown.drain_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + (timeout if drain else 0.0)
        if not drain:
            self._abort_all()
        self._stop_intake.set()
        if self._receiver is not None:
            self._receiver.join(_left(deadline))
            if self._receiver.is_alive():  # blocked handing a tile to a full pipeline
                self._abort_all()
                self._receiver.join(ABORT_WAIT_S)
        pipeline = self._pipeline
        if pipeline is not None and not pipeline.close(drain, _left(deadline)):
            log.error("the pipeline did not finish within the %.0f s drain deadline; dropping "
                      "%d item(s) in flight", timeout, pipeline.in_flight)
            self._abort_all()
            pipeline.close(drain=False, timeout_s=ABORT_WAIT_S)
        if self._context is not None:
            self._context.term()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._owns_converter and self._converter is not None:
            self._converter.close()
        self._stopped.set()
        log.info("stopped: %s", self.status_line())

    def _abort_all(self) -> None:
        self._abort.set()
        if self._pipeline is not None:
            self._pipeline.abort()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stop() finished; True when it did."""
        return self._stopped.wait(timeout)

    # ----------------------------------------------------------------- receive thread
    def _receive_loop(self) -> None:
        assert self._context is not None
        try:
            opened = open_input(self._context, self.config)
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
        except BaseException as exc:  # a dead receive thread must be seen, not lost
            self._pipeline.fail(f"the receive thread died: {exc!r}")
            log.critical("the receive thread died", exc_info=True)
        finally:
            opened.close()

    # ----------------------------------------------------------------- health
    def healthy(self) -> bool:
        """Every thread alive and the pipeline making progress (or idle): what WATCHDOG=1
        vouches for."""
        pipeline = self._pipeline
        if pipeline is None or not pipeline.alive() or pipeline.failed.is_set():
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
            f"published {m.counter_value('tiles_published'):.0f}, "
            f"rejected {m.counter_value('tiles_rejected'):.0f}, "
            f"dropped {m.counter_value('tiles_dropped'):.0f}, in flight {in_flight} "
            f"(converted {m.counter_value('tiles_converted'):.0f})"
        )

    def serve_forever(self, stop_requested: threading.Event, status_every_s: float = 5.0) -> int:
        """Notify systemd (READY, STATUS, WATCHDOG) until asked to stop or a thread dies; then
        stop. The exit code: 0, 1 (a thread died) or 3 (tiles dropped at shutdown)."""
        assert self._pipeline is not None
        failed = self._pipeline.failed
        sdnotify.notify("READY=1\nSTATUS=" + self.status_line())
        interval = sdnotify.watchdog_interval()
        every = min(status_every_s, interval) if interval else status_every_s
        next_status = time.monotonic()
        while not stop_requested.wait(0.2) and not failed.is_set():
            if time.monotonic() < next_status:
                continue
            next_status = time.monotonic() + every
            if self.healthy():
                sdnotify.notify("WATCHDOG=1\nSTATUS=" + self.status_line())
            else:
                log.error("pipeline stalled: nothing published for %.0f s with work waiting",
                          STALL_S)
                sdnotify.notify("STATUS=stalled: " + self.status_line())
        if failed.is_set():
            log.critical("stopping: %s", self._pipeline.failure)
            sdnotify.notify("STATUS=failed: " + self._pipeline.failure)
            self.stop(drain=False)
            return EXIT_FAILED
        log.info("stopping: draining %d item(s) in flight", self._pipeline.in_flight)
        self.stop(drain=True)
        if self.metrics.counter_value("tiles_dropped", reason="shutdown") > 0:
            return EXIT_DROPPED
        return EXIT_OK


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def run_daemon(config: EdgeConfig, converter: Converter | None = None) -> int:
    """Run a daemon until SIGTERM or SIGINT, then drain; the process's exit code. `converter`
    replaces the one [model] names (for embedding the daemon)."""
    root = logging.getLogger()
    if root.level != logging.DEBUG:
        root.setLevel(config.log.level)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    daemon = Daemon(config, converter)
    daemon.start()
    if daemon.metrics_port is not None:
        log.info("metrics endpoint: http://%s:%d/metrics", config.metrics.host, daemon.metrics_port)
    return daemon.serve_forever(stop)
