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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq

from edge.inference.converter import Converter
from edge.serve import sdnotify
from edge.serve.admin import AdminServer, Verdict
from edge.serve.config import EdgeConfig
from edge.serve.inspection_writer import InspectionWriter
from edge.serve.loader import Loader, load_converter
from edge.serve.metrics import EdgeMetrics
from edge.serve.mosaic_writer import MosaicWriter
from edge.serve.nvml import register_gpu_metrics
from edge.serve.pipeline import Observer, Pipeline
from edge.serve.sockets import POLL_MS, InputPeers, ZmqSink, open_input

log = logging.getLogger(__name__)

STALL_S = 60.0
ABORT_WAIT_S = 5.0
EXIT_OK, EXIT_FAILED, EXIT_DROPPED = 0, 1, 3


class Daemon:
    """One daemon instance; several can run in one process (each has its own registry).

    `converter` replaces the one [model] names at start; `loader` makes converters from the
    configuration, at start and at every reload."""

    def __init__(self, config: EdgeConfig, converter: Converter | None = None,
                 loader: Loader = load_converter) -> None:
        self.config = config
        self.metrics = EdgeMetrics()
        self.metrics_port: int | None = None
        self._converter = converter
        self._given = converter  # the caller's: not closed by stop()
        self._loader = loader
        self._context: zmq.Context | None = None
        self._pipeline: Pipeline | None = None
        self._http: AdminServer | None = None
        self._receiver: threading.Thread | None = None
        self._peers: InputPeers | None = None
        self._stop_intake = threading.Event()
        self._abort = threading.Event()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._receiver_ready = threading.Event()
        self._receiver_error: BaseException | None = None
        # every reload runs on this one thread: a model loaded on a new thread each time grows
        # the process by a malloc arena per thread until the arenas run out
        self._reloader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-reload")
        self._progress = (0, time.monotonic())

    # ----------------------------------------------------------------- life cycle
    def start(self) -> None:
        """Open the metrics endpoint (health answers at once), load the model, open both
        sockets; returns when ready."""
        config = self.config
        if config.metrics.enabled:
            register_gpu_metrics(self.metrics.registry)
            self._http = AdminServer(self.metrics, self, config.metrics.host, config.metrics.port)
            self.metrics_port = self._http.port
        try:
            if self._converter is None:
                self._converter = self._loader(config)
            self.metrics.set_model(**self._converter.model_info)
            self._context = zmq.Context()
            self._start_pipeline()
            self._start_receiver()
        except BaseException:
            self.stop(drain=False)
            raise
        self._ready.set()
        log.info("ready: model %s on %s/%s, input %s %s, output %s %s", self._converter.label,
                 self._converter.backend.name, self._converter.backend.precision,
                 config.input.socket, config.input.endpoint, config.output.socket,
                 config.output.endpoint)

    def _start_pipeline(self) -> None:
        config = self.config
        settings = config.pipeline_settings()
        observers: list[Observer] = []
        if config.mosaic.enabled:
            observers.append(MosaicWriter(Path(config.mosaic.directory), config.mosaic.refine,
                                          config.mosaic.raw))
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
            self._http.close()
        self._reloader.shutdown(wait=True, cancel_futures=True)
        serving = self._pipeline.converter if self._pipeline else self._converter
        if serving is not None and serving is not self._given:
            serving.close()
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
            self._peers = InputPeers(opened.socket, self.config.input.bind)
        except BaseException as exc:  # noqa: BLE001 - re-raised by start() in its thread
            self._receiver_error = exc
            self._receiver_ready.set()
            return
        self._receiver_ready.set()
        assert self._pipeline is not None
        socket, peers = opened.socket, self._peers
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(peers.monitor, zmq.POLLIN)
        try:
            while not self._stop_intake.is_set():
                ready = dict(poller.poll(POLL_MS))
                if peers.monitor in ready:
                    peers.update()
                if socket in ready:
                    self._pipeline.submit(socket.recv_multipart(copy=False), time.monotonic())
                self._pipeline.tick()
        except BaseException as exc:  # a dead receive thread must be seen, not lost
            self._pipeline.fail(f"the receive thread died: {exc!r}")
            log.critical("the receive thread died", exc_info=True)
        finally:
            peers.close()
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

    def liveness(self) -> Verdict:
        """/healthz: alive unless a thread died (before start: alive, starting)."""
        pipeline = self._pipeline
        if pipeline is not None and pipeline.failed.is_set():
            return Verdict(False, {"error": pipeline.failure})
        return Verdict(True, {"state": "serving" if self._ready.is_set() else "starting"})

    def readiness(self) -> Verdict:
        """/readyz: model loaded and warmed, every stage progressing, input connected."""
        reasons = []
        if not self._ready.is_set():
            reasons.append("loading and warming up the model" if self._pipeline is None
                           else "starting")
        elif self._stop_intake.is_set():
            reasons.append("stopping")
        else:
            if not self.healthy():
                reasons.append("a stage died or nothing was published for "
                               f"{STALL_S:.0f} s with work waiting")
            if self._peers is None or not self._peers.connected:
                reasons.append(f"input not connected to {self.config.input.endpoint}")
        model = self._pipeline.converter.label if self._pipeline else None
        return Verdict(not reasons, {"model": model, "reasons": reasons})

    def reload(self) -> Verdict:
        """Load the bundle [model] names now beside the serving one, warm it, then swap it in
        between batches; on any failure the old model keeps serving. One at a time."""
        if self._pipeline is None or not self._ready.is_set():
            return Verdict(False, {"error": "the daemon is not serving yet"})
        return self._reloader.submit(self._reload).result()

    def _reload(self) -> Verdict:
        assert self._pipeline is not None
        old = self._pipeline.converter
        try:
            new = self._loader(self.config, warm_shape=self._pipeline.recent_shape)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the old model serving
            self.metrics.reloads.labels(result="failed").inc()
            log.error("reload failed, still serving %s: %s", old.label, exc)
            return Verdict(False, {"error": str(exc), "model": old.label})
        if (new.label, new.backend.precision) == (old.label, old.backend.precision):
            new.close()
            self.metrics.reloads.labels(result="unchanged").inc()
            return Verdict(True, {"model": old.label, "changed": False})
        self._pipeline.swap(new, close_old=old is not self._given)
        self.metrics.set_model(**new.model_info)
        self.metrics.reloads.labels(result="ok").inc()
        log.info("reloaded: now serving %s (was %s)", new.label, old.label)
        return Verdict(True, {"model": new.label, "previous": old.label, "changed": True})

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

    def serve_forever(self, stop_requested: Flag, status_every_s: float = 5.0,
                      reload_requested: Flag | None = None) -> int:
        """Notify systemd (READY, STATUS, WATCHDOG) until asked to stop or a thread dies; then
        stop. A set `reload_requested` (SIGHUP) reloads the model in the background. The exit
        code: 0, 1 (a thread died) or 3 (tiles dropped at shutdown)."""
        assert self._pipeline is not None
        failed = self._pipeline.failed
        sdnotify.notify("READY=1\nSTATUS=" + self.status_line())
        interval = sdnotify.watchdog_interval()
        every = min(status_every_s, interval) if interval else status_every_s
        next_status = time.monotonic()
        while not stop_requested.is_set() and not failed.is_set():
            time.sleep(0.2)
            if reload_requested is not None and reload_requested.is_set():
                reload_requested.clear()
                log.info("SIGHUP: reloading the model")
                threading.Thread(target=self._reload_notified, name="edge-reload",
                                 daemon=True).start()
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
        log.info("stop requested (SIGTERM or SIGINT): draining %d item(s) in flight",
                 self._pipeline.in_flight)
        self.stop(drain=True)
        if self.metrics.counter_value("tiles_dropped", reason="shutdown") > 0:
            return EXIT_DROPPED
        return EXIT_OK


    def _reload_notified(self) -> None:
        """A reload as systemd sees it: RELOADING=1, then READY=1 with the outcome."""
        sdnotify.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        verdict = self.reload()
        outcome = "reloaded" if verdict.ok else "reload failed: " + str(verdict.detail["error"])
        sdnotify.notify(f"READY=1\nSTATUS={outcome}; " + self.status_line())


class Flag:
    """Set by a signal handler, read by the main loop. Not a threading.Event: setting one from
    a handler that interrupted the main thread inside Event.wait() on it deadlocks (its lock
    is not reentrant), which once left SIGTERM unanswered until systemd's SIGKILL."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def run_daemon(config: EdgeConfig, converter: Converter | None = None) -> int:
    """Run a daemon until SIGTERM or SIGINT, then drain; the process's exit code. `converter`
    replaces the one [model] names (for embedding the daemon)."""
    root = logging.getLogger()
    if root.level != logging.DEBUG:
        root.setLevel(config.log.level)
    stop, reload_requested = Flag(), Flag()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    def request_reload(signum: int, _frame: object) -> None:
        reload_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    daemon = Daemon(config, converter)
    daemon.start()
    if daemon.metrics_port is not None:
        log.info("metrics endpoint: http://%s:%d/metrics", config.metrics.host, daemon.metrics_port)
    return daemon.serve_forever(stop, reload_requested=reload_requested)
