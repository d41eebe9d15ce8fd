"""The conversion pipeline: threads on bounded queues, batching patches across tiles.

    submit() [receive thread] -> decode queue -> preprocess -> patches queue -> infer (batcher)
        -> blend queue -> blend (and trust) -> publish queue -> publish (in arrival order) -> sink

`submit` validates each message (edge.protocol: tiles and scan-ends alike), counts it and
detects sequence gaps; rejected messages go straight to the publish stage as `error/` messages.
Accepted tiles and scan-ends are numbered when they leave the decode queue, and the publish
stage emits them strictly in that order, so per-scan output order is arrival order even though
batches mix tiles.

The sink (which owns the output socket) is created and used by the publish thread only.
On overload the policy is explicit: "block" (back-pressure the receive thread, hence the sender
on PULL) or "drop-oldest" (drop the oldest waiting item and count it; error answers that find
the publish queue full are dropped and counted too, so intake never waits).

Every message read ends in exactly one of: published, rejected (answered with an error),
dropped{reason}; until then it is in flight. A stage thread that dies sets `failed`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.inference.converter import Converter
from edge.inference.trust import TrustResult, TrustSettings
from edge.protocol import (
    ErrorCode,
    Kind,
    Limits,
    ProtocolError,
    Tile,
    decode_scan_end,
    decode_tile,
    encode_error,
    encode_height,
    encode_result,
    encode_scan_end,
    encode_trust,
    topic,
)
from edge.serve.metrics import EdgeMetrics
from edge.serve.queues import POLL_S as _POLL_S
from edge.serve.queues import STOP, DecodeQueue
from edge.serve.ratelog import RateLimitedLog
from edge.serve.scans import ScanBook
from edge.serve.stacks import Stack, StackBook, StackSettings

log = logging.getLogger(__name__)

SCAN_END_TOPIC = topic(Kind.SCAN_END).encode()
OVERLOAD_POLICIES = ("block", "drop-oldest")


class SinkClosed(Exception):
    """Raised by a sink that gave up sending because the daemon is shutting down."""


class Sink(Protocol):
    def send(self, frames: list[bytes]) -> None: ...
    def close(self) -> None: ...


class Observer(Protocol):
    """Sees each published tile (converted, and the raw one it came from: a stack's fused
    plane) and each scan-end in the publish thread; the messages it returns are published right
    after that tile, or right before that scan-end (e.g. `defect/`)."""

    def converted(self, header: dict, image: np.ndarray, raw: np.ndarray) -> list[list[bytes]]: ...
    def scan_end(self, scan_id: str, summary: dict) -> list[list[bytes]]: ...


@dataclass(frozen=True)
class PipelineSettings:
    """Batches take up to the converter's max_batch patches, waiting at most max_delay_ms for
    more; each queue holds `capacity` items; `overload` is one of OVERLOAD_POLICIES; a scan
    not heard of for `scan_idle_s` is forgotten (its scan-end then reports zero counts); `trust`
    says which converted tiles are judged (when their model can be) and whether their trust map
    is published."""

    max_delay_ms: float = 5.0
    capacity: int = 64
    overload: str = "block"
    limits: Limits = field(default_factory=Limits)
    detect_gaps: bool = True
    scan_idle_s: float = 3600.0
    stacks: StackSettings = field(default_factory=StackSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)


@dataclass(eq=False)
class TileJob:
    tile: Tile
    t_recv: float
    index: int = -1
    converter: Converter | None = None  # the model the tile started on, it finishes on
    patches: np.ndarray | None = None
    plan: Any = None
    cursor: int = 0
    outputs: list[np.ndarray] = field(default_factory=list)
    error: str | None = None
    image: np.ndarray | None = None
    times: dict[str, float] = field(default_factory=dict)
    stack: Stack | None = None  # the planes this tile is fused from (in the preprocess stage)
    height: np.ndarray | None = None  # the fused stack's height map, published after the tile
    trust: TrustResult | None = None  # its trust score (and map), in the blend stage

    @property
    def planes(self) -> int:
        """The input messages this job stands for: its outcome counts for each of them."""
        return 1 if self.stack is None else len(self.stack.planes)


@dataclass(eq=False)
class ScanEndJob:
    scan_id: str
    header: dict
    index: int = -1


def _patches(job: TileJob) -> np.ndarray:
    assert job.patches is not None
    return job.patches


class Pipeline:
    """Threads converting submitted tile messages; results go to the sink in arrival order."""

    def __init__(
        self,
        converter: Converter,
        sink_factory: Callable[[], Sink],
        metrics: EdgeMetrics,
        settings: PipelineSettings | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.converter = converter
        self.recent_shape: tuple[int, int] | None = None  # of the last tile's patches
        self._users: dict[int, int] = {}  # id(converter) -> tiles on it in flight
        self._retired: dict[int, Converter] = {}
        self.settings = settings = settings or PipelineSettings()
        self.metrics = metrics
        self._sink_factory = sink_factory
        self._observers = tuple(observers)
        capacity = settings.capacity
        self.decode_q = DecodeQueue(capacity)
        self.patches_q: queue.Queue[Any] = queue.Queue(capacity)
        self.blend_q: queue.Queue[Any] = queue.Queue(capacity)
        self.publish_q: queue.Queue[Any] = queue.Queue(capacity)
        self._scans = ScanBook(settings.scan_idle_s)
        self._stacks = StackBook(settings.stacks)
        self._rejections = RateLimitedLog(log)
        self._blended = 0  # tiles blended so far: `[trust] mode = "nth"` counts them
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._closing = threading.Event()
        self.failed = threading.Event()
        self.failure = ""
        self._in_flight = 0
        self._published = 0
        self._sink_ready = threading.Event()
        self._sink_error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        metrics.watch_queue("decode", self.decode_q.qsize, capacity)
        metrics.watch_queue("patches", self.patches_q.qsize, capacity)
        metrics.watch_queue("blend", self.blend_q.qsize, capacity)
        metrics.watch_queue("publish", self.publish_q.qsize, capacity)
        metrics.open_scans.set_function(lambda: len(self._scans))
        metrics.open_stacks.set_function(lambda: len(self._stacks))

    # ----------------------------------------------------------------- life cycle
    def start(self, timeout_s: float = 30.0) -> None:
        """Start the stage threads; returns once the sink is open (raises its error if any)."""
        for name, target in (("preprocess", self._preprocess_loop), ("infer", self._infer_loop),
                             ("blend", self._blend_loop), ("publish", self._publish_loop)):
            thread = threading.Thread(target=self._guarded(name, target), name=f"edge-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._sink_ready.wait(timeout_s):
            raise RuntimeError("the publish stage did not start in time")
        if self._sink_error is not None:
            self.close(drain=False)
            raise self._sink_error

    def _guarded(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        """The stage's loop; whatever escapes it marks the pipeline failed, loudly."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:  # a dead stage must be seen, not lost
                self.fail(f"the {name} stage died: {exc!r}")
                log.critical("the %s stage died", name, exc_info=True)

        return run

    def fail(self, reason: str) -> None:
        """Mark the pipeline failed (a stage or the receive thread died)."""
        if not self.failed.is_set():
            self.failure = reason
            self.failed.set()

    def abort(self) -> None:
        """Give up on everything in flight: waiting puts and sends stop, items become drops."""
        self._abort.set()

    def close(self, drain: bool = True, timeout_s: float = 60.0) -> bool:
        """Stop: drain (convert and publish everything accepted) or abort. True when finished.

        No submit() may run concurrently with or after close().
        """
        if not drain:
            self.abort()
        if not self._closing.is_set():
            self._closing.set()
            self._queue_stacks(self._stacks.close_all())
            self.decode_q.put_always(STOP)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    @property
    def in_flight(self) -> int:
        """Tiles and scan-ends accepted but not yet published or dropped."""
        return self._in_flight

    @property
    def published(self) -> int:
        """Items the publish stage has finished with (progress, for the watchdog)."""
        return self._published

    # ----------------------------------------------------------------- models
    def swap(self, converter: Converter, close_old: bool = True) -> Converter:
        """Serve `converter` from the next tile on; tiles already started finish on the old
        model, which is closed (when close_old) once the last of them is out."""
        with self._lock:
            old, self.converter = self.converter, converter
            idle = self._users.get(id(old), 0) == 0
            if not idle and close_old:
                self._retired[id(old)] = old
        if idle and close_old and old is not converter:
            self._retire(old)
        return old

    def _claim(self) -> Converter:
        with self._lock:
            converter = self.converter
            self._users[id(converter)] = self._users.get(id(converter), 0) + 1
            return converter

    def _release(self, job: TileJob) -> None:
        if job.converter is None:
            return
        key, retired = id(job.converter), None
        with self._lock:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                retired = self._retired.pop(key, None)
        if retired is not None:
            self._retire(retired)

    @staticmethod
    def _retire(old: Converter) -> None:
        old.close()
        log.info("closed model %s (its tiles are out)", old.label)

    # ----------------------------------------------------------------- intake
    def submit(self, frames: list[Any], t_recv: float | None = None) -> None:
        """Validate one input message and queue it (called by the receive thread only)."""
        t_recv = time.monotonic() if t_recv is None else t_recv
        if self._is_scan_end(frames):
            try:
                end = decode_scan_end(frames)
            except ProtocolError as exc:
                self.metrics.received.inc()
                self._reject(exc)
            else:
                self._queue_stacks(self._stacks.close_scan(end.scan_id))
                self._accept(ScanEndJob(end.scan_id, end.header))
            return
        self.metrics.received.inc()
        try:
            tile = decode_tile(frames, self.settings.limits)
        except ProtocolError as exc:
            self._reject(exc)
            return
        self._check_sequence(tile)
        if self._stacks.size_of(tile) > 1:
            self._hold(tile, t_recv)
        else:
            self._accept(TileJob(tile, t_recv))

    def tick(self, now: float | None = None) -> None:
        """Close the stacks whose planes stopped coming (called by the receive thread)."""
        self._queue_stacks(self._stacks.expire(time.monotonic() if now is None else now))

    def _hold(self, tile: Tile, t_recv: float) -> None:
        """A plane of a z-stack: in flight until the fused tile's outcome counts for it."""
        with self._lock:
            self._in_flight += 1
        self._queue_stacks(self._stacks.add(tile, t_recv) + self._stacks.expire(t_recv))

    def _queue_stacks(self, stacks: list[Stack]) -> None:
        """Queue closed stacks as tiles, fused in the preprocess stage."""
        for stack in stacks:
            if stack.incomplete:
                self.metrics.stacks_incomplete.labels(reason=stack.incomplete).inc()
                self._scans.count(stack.key[0], "stacks_incomplete")
            self._enqueue(TileJob(stack.planes[0], stack.last, stack=stack))

    @staticmethod
    def _is_scan_end(frames: list[Any]) -> bool:
        if len(frames) != 3:
            return False
        first = frames[0]
        raw = bytes(getattr(first, "bytes", first)[: len(SCAN_END_TOPIC)])
        return raw == SCAN_END_TOPIC

    def _reject(self, exc: ProtocolError) -> None:
        self.metrics.rejected.labels(reason=exc.code.value).inc()
        self._scans.count(exc.scan_id, "rejected")
        self._rejections.warning(exc.code.value, "rejected a message of scan %s: %s: %s",
                                 exc.scan_id, exc.code.value, exc.message)
        answer = encode_error(exc.scan_id, exc.code, exc.message, exc.header)
        if not self._queue_answer(answer):
            self._lose(Kind.ERROR, "queue_full" if not self._abort.is_set() else "shutdown")

    def _queue_answer(self, frames: list[bytes]) -> bool:
        """Hand an error answer to the publish stage: waiting (block policy) until it has room
        or the pipeline aborts, or not at all when it is full (drop-oldest: intake never waits)."""
        if self.settings.overload == "drop-oldest":
            try:
                self.publish_q.put_nowait((None, frames))
                return True
            except queue.Full:
                return False
        while not self._abort.is_set():
            try:
                self.publish_q.put((None, frames), timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _check_sequence(self, tile: Tile) -> None:
        if not self.settings.detect_gaps:
            return
        missing = self._scans.sequence(tile.scan_id, tile.seq)
        if missing > 0:
            self.metrics.gaps.inc(missing)
            self._rejections.warning("gap", "scan %s: %d tile(s) missing before seq %d",
                                     tile.scan_id, missing, tile.seq)
        elif missing < 0:
            log.debug("scan %s: seq %d arrived late or twice", tile.scan_id, tile.seq)

    def _accept(self, job: TileJob | ScanEndJob) -> None:
        with self._lock:
            self._in_flight += 1
        self._enqueue(job)

    def _enqueue(self, job: TileJob | ScanEndJob) -> None:
        if self.settings.overload == "drop-oldest":
            dropped = self.decode_q.put_drop_oldest(job)
            if dropped is not None:
                self._drop(dropped, "queue_full")
        elif not self.decode_q.put_blocking(job, self._abort.is_set):
            self._drop(job, "shutdown")

    def _drop(self, job: TileJob | ScanEndJob, reason: str) -> None:
        with self._lock:
            self._in_flight -= 1 if isinstance(job, ScanEndJob) else job.planes
        if isinstance(job, ScanEndJob):
            self._lose(Kind.SCAN_END, reason)
            return
        self._release(job)
        self._scans.count(job.tile.scan_id, "dropped", job.planes)
        self.metrics.dropped.labels(reason=reason).inc(job.planes)
        self._rejections.warning(f"drop-{reason}", "dropped tile seq %d of scan %s (%s)",
                                 job.tile.seq, job.tile.scan_id, reason)

    def _lose(self, kind: Kind, reason: str) -> None:
        """An error answer or a scan-end that will not be published."""
        self.metrics.lost.labels(kind=kind.value, reason=reason).inc()
        self._rejections.warning(f"lost-{kind}-{reason}", "a %s message was not published (%s)",
                                 kind.value, reason)

    # ----------------------------------------------------------------- stages
    def _given_up(self) -> bool:
        """Aborted after a stage died: the STOP that closes the stages may never come."""
        return self._abort.is_set() and self.failed.is_set()

    def _next(self, q: queue.Queue[Any]) -> Any:
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._given_up():
                    return STOP

    def _preprocess_loop(self) -> None:
        next_index = 0
        while True:
            try:
                item = self.decode_q.get(_POLL_S)
            except queue.Empty:
                if self._given_up():
                    self._forward(self.patches_q, STOP)
                    return
                continue
            try:
                if item is STOP:
                    self._forward(self.patches_q, STOP)
                    return
                next_index += self._intake(item, next_index)
            finally:
                self.decode_q.done()

    def _intake(self, item: TileJob | ScanEndJob, index: int) -> int:
        """Prepare a tile (or pass a scan-end on) in arrival order; returns 1 when `index`
        was used, 0 when the item was dropped."""
        if self._abort.is_set():
            self._drop(item, "shutdown")
            return 0
        item.index = index
        if isinstance(item, ScanEndJob):
            self.publish_q.put((item.index, item))
        else:
            self._prepare(item)
            self._forward(self.blend_q if item.error else self.patches_q, item)
        return 1

    def _prepare(self, job: TileJob) -> None:
        job.times["pre_start"] = time.monotonic()
        try:
            if job.stack is not None:
                self._fuse(job)
            converter = job.converter = self._claim()
            image = converter.prepare(np.asarray(job.tile.image))
            job.patches, job.plan = converter.tiler.split(image)
            self.recent_shape = (int(job.patches.shape[2]), int(job.patches.shape[3]))
        except Exception as exc:  # a valid tile the model cannot take: answer, keep going
            log.exception("preprocessing tile seq %d of scan %s failed", job.tile.seq,
                          job.tile.scan_id)
            job.error = f"preprocessing failed: {exc}"
        job.times["pre_end"] = time.monotonic()

    def _fuse(self, job: TileJob) -> None:
        """The stack's planes -> one all-in-focus tile (and its height map)."""
        assert job.stack is not None
        fused = job.stack.fuse(self.settings.stacks.focus)
        job.tile = Tile(job.tile.topic, job.stack.header(), fused.image, job.tile.scan_id,
                        job.tile.seq)
        job.height = fused.height_nm if self.settings.stacks.height_map else None
        self.metrics.stacks_fused.inc()

    def _forward(self, q: queue.Queue[Any], item: Any) -> None:
        """Put with back-pressure; an abort turns waiting tiles into shutdown drops."""
        while True:
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if self._abort.is_set() and isinstance(item, TileJob):
                    self._drop(item, "shutdown")
                    return

    def _infer_loop(self) -> None:
        current: TileJob | None = None
        stopping = False
        while not stopping:
            batch: list[tuple[TileJob, int, int]] = []
            size = 0
            deadline = 0.0
            model = current.converter if current is not None else self.converter
            assert model is not None
            while size < model.max_batch:
                if current is not None and current.patches is not None \
                        and current.cursor < len(current.patches):
                    take = min(len(current.patches) - current.cursor, model.max_batch - size)
                    batch.append((current, current.cursor, current.cursor + take))
                    current.cursor += take
                    size += take
                    if size == take:
                        deadline = time.monotonic() + self.settings.max_delay_ms / 1000
                    continue
                timeout = _POLL_S if not batch else deadline - time.monotonic()
                if batch and (timeout <= 0 or not self._more_coming()):
                    break
                try:
                    item = self.patches_q.get(timeout=timeout)
                except queue.Empty:
                    if not self._given_up():
                        continue
                    item = STOP
                if item is STOP:
                    stopping = True
                    break
                if self._abort.is_set():
                    self._drop(item, "shutdown")
                    continue
                if len(_patches(item)) == 0:
                    item.times["infer_start"] = item.times["infer_end"] = time.monotonic()
                    item.error = "no patches"
                    self._forward(self.blend_q, item)
                    continue
                current = item
                if batch and not self._batches_with(batch[0][0], item):
                    break  # a batch never mixes models or patch shapes
            if batch:
                self._run_batch(batch)
        self._forward(self.blend_q, STOP)

    def _more_coming(self) -> bool:
        """Whether another tile may join the batch being formed: one is queued for or in
        preprocessing, or queued for inference. Without one, waiting for `max_delay_ms` would
        only delay this batch (tiles at the rig's rate)."""
        return self.decode_q.pending() > 0 or self.patches_q.qsize() > 0

    @staticmethod
    def _batches_with(first: TileJob, other: TileJob) -> bool:
        """Whether two tiles' patches can share an inference call."""
        return (first.converter is other.converter
                and _patches(first).shape[1:] == _patches(other).shape[1:])

    def _run_batch(self, batch: list[tuple[TileJob, int, int]]) -> None:
        jobs = list(dict.fromkeys(job for job, _, _ in batch))
        model = jobs[0].converter
        assert model is not None
        inputs = np.empty(0)
        started = time.monotonic()
        for job in jobs:  # the wait for a batch to fill counts as queueing, not inference
            job.times.setdefault("infer_start", started)
        try:
            inputs = np.concatenate([_patches(job)[a:b] for job, a, b in batch])
            outputs = np.asarray(model.backend.infer(inputs))
            if outputs.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"backend returned {outputs.shape[0]} outputs for {inputs.shape[0]} patches"
                )
        except Exception as exc:  # answered per tile as conversion_failed; the daemon goes on
            log.exception("inference on a batch of %d tiles failed", len(jobs))
            for job in jobs:
                job.error = job.error or f"inference failed: {exc}"
                job.cursor = len(_patches(job))
        else:
            self.metrics.batch_size.observe(len(inputs))
            offset = 0
            for job, a, b in batch:
                job.outputs.append(outputs[offset:offset + b - a])
                offset += b - a
        now = time.monotonic()
        for job in jobs:
            if job.cursor >= len(_patches(job)):
                job.times["infer_end"] = now
                job.patches = None
                self._forward(self.blend_q, job)

    def _blend_loop(self) -> None:
        while True:
            item = self._next(self.blend_q)
            if item is STOP:
                self.publish_q.put(STOP)
                return
            if self._abort.is_set():
                self._drop(item, "shutdown")
                continue
            if not item.error:
                try:
                    merged = item.converter.tiler.merge(np.concatenate(item.outputs), item.plan)
                    item.image = np.asarray(merged, dtype=np.float32).reshape(
                        item.tile.image.shape)
                except Exception as exc:
                    log.exception("blending tile seq %d of scan %s failed", item.tile.seq,
                                  item.tile.scan_id)
                    item.error = f"blending failed: {exc}"
            item.outputs = []
            item.times["blend_end"] = time.monotonic()
            if not item.error:
                self._judge(item)
            item.times["trust_end"] = time.monotonic()
            self.publish_q.put((item.index, item))

    def _judge(self, job: TileJob) -> None:
        """The tile's trust score, when [trust] has it due; a failure leaves the tile without."""
        due = self.settings.trust.due(self._blended)
        self._blended += 1
        if not due or job.converter is None or job.image is None:
            return
        try:
            job.trust = job.converter.trust(np.asarray(job.tile.image), job.image,
                                            self.settings.trust.map)
        except Exception as exc:  # noqa: BLE001 - the tile is published without a score
            self._rejections.warning("trust", "judging tile seq %d of scan %s failed: %r",
                                     job.tile.seq, job.tile.scan_id, exc)

    def _publish_loop(self) -> None:
        try:
            sink = self._sink_factory()
        except BaseException as exc:  # noqa: BLE001 - reported to start() in the caller's thread
            self._sink_error = exc
            self._sink_ready.set()
            return
        self._sink_ready.set()
        waiting: dict[int, Any] = {}
        next_index = 0
        try:
            while True:
                entry = self._next(self.publish_q)
                if entry is STOP:
                    break
                index, item = entry
                if index is None:
                    if not self._delivered(sink, item, Kind.ERROR.value):
                        self._lose(Kind.ERROR, self._send_failure())
                    continue
                waiting[index] = item
                while next_index in waiting:
                    self._emit(sink, waiting.pop(next_index))
                    next_index += 1
            for index in sorted(waiting):  # only after an abort: nothing more will come
                self._drop(waiting[index], "shutdown")
        finally:
            sink.close()

    def _delivered(self, sink: Sink, frames: list[bytes], kind: str) -> bool:
        """Send; False when the sink failed (logged, rate-limited; the caller counts it)."""
        try:
            sink.send(frames)
            return True
        except SinkClosed:
            return False
        except Exception as exc:  # noqa: BLE001 - a failed send must not stop the stage
            self._rejections.warning(f"send-{kind}", "publishing a %s message failed: %s",
                                     kind, exc)
            return False

    def _send_failure(self) -> str:
        return "shutdown" if self._abort.is_set() else "send_failed"

    def _emit(self, sink: Sink, item: TileJob | ScanEndJob) -> None:
        if self._abort.is_set():
            self._drop(item, "shutdown")
            return
        if isinstance(item, ScanEndJob):
            self._emit_scan_end(sink, item)
        elif item.error:
            self._emit_failure(sink, item)
        else:
            self._emit_tile(sink, item)
        if isinstance(item, TileJob):
            self._release(item)
        with self._lock:
            self._in_flight -= item.planes if isinstance(item, TileJob) else 1
            self._published += 1

    def _emit_scan_end(self, sink: Sink, job: ScanEndJob) -> None:
        counts = self._scans.finish(job.scan_id).counts()
        for observer in self._observers:
            self._publish_extra(sink, self._observe(observer.scan_end, job.scan_id,
                                                    {**job.header, **counts}))
        fields = {k: v for k, v in job.header.items() if k not in ("v", "scan_id")}
        if self._delivered(sink, encode_scan_end(job.scan_id, {**fields, **counts}),
                           Kind.SCAN_END.value):
            self.metrics.scans_completed.inc()
        else:
            self._lose(Kind.SCAN_END, self._send_failure())
        log.info("scan %s complete: %s", job.scan_id, counts)

    def _emit_failure(self, sink: Sink, job: TileJob) -> None:
        code = ErrorCode.CONVERSION_FAILED
        self.metrics.rejected.labels(reason=code.value).inc(job.planes)
        self._scans.count(job.tile.scan_id, "rejected", job.planes)
        answer = encode_error(job.tile.scan_id, code, job.error or "", job.tile.header)
        if not self._delivered(sink, answer, Kind.ERROR.value):
            self._lose(Kind.ERROR, self._send_failure())

    def _emit_tile(self, sink: Sink, job: TileJob) -> None:
        stages = self._stage_times(job)
        total = sum(stages.values())
        model = job.converter
        assert model is not None
        extra = {
            "model": model.label,
            "backend": model.backend.name,
            "precision": model.backend.precision,
            "latency_ms": {**{k: round(v * 1e3, 3) for k, v in stages.items()},
                           "total": round(total * 1e3, 3)},
        }
        if job.trust is not None:
            extra["trust"] = job.trust.header()
        assert job.image is not None
        try:
            frames = encode_result(job.tile.header, job.image, extra)
        except Exception as exc:  # noqa: BLE001 - answered as conversion_failed
            job.error = f"encoding the result failed: {exc}"
            self._emit_failure(sink, job)
            return
        self.metrics.converted.inc(job.planes)
        if not self._delivered(sink, frames, Kind.SEM.value):
            reason = self._send_failure()
            self._scans.count(job.tile.scan_id, "dropped", job.planes)
            self.metrics.dropped.labels(reason=reason).inc(job.planes)
            return
        self.metrics.published.inc(job.planes)
        self.metrics.tile_latency.observe(time.monotonic() - job.t_recv)
        self.metrics.observe_stages(stages)
        self._scans.count(job.tile.scan_id, "converted", job.planes)
        if job.stack is not None:
            self._scans.count(job.tile.scan_id, "stacks")
        if job.height is not None:
            self._publish_extra(sink, [encode_height(job.tile.header, job.height)])
        if job.trust is not None:
            self.metrics.trust_score.observe(job.trust.score)
            if job.trust.map is not None:
                self._publish_extra(sink, [encode_trust(job.tile.header, job.trust.map,
                                                        job.trust.score)])
        for observer in self._observers:
            self._publish_extra(sink, self._observe(observer.converted, job.tile.header,
                                                    job.image, job.tile.image))

    @staticmethod
    def _stage_times(job: TileJob) -> dict[str, float]:
        """Seconds per stage; they add up to receive -> publish."""
        t = job.times
        now = time.monotonic()
        return {
            "preprocess": t["pre_end"] - t["pre_start"],
            "queue": (t["pre_start"] - job.t_recv) + (t["infer_start"] - t["pre_end"]),
            "infer": t["infer_end"] - t["infer_start"],
            "blend": t["blend_end"] - t["infer_end"],
            "trust": t["trust_end"] - t["blend_end"],
            "publish": now - t["trust_end"],
        }

    @staticmethod
    def _observe(call: Callable[..., list[list[bytes]]], *args: Any) -> list[list[bytes]]:
        try:
            return list(call(*args) or [])
        except Exception:
            log.exception("the observer %s failed", getattr(call, "__qualname__", call))
            return []

    def _publish_extra(self, sink: Sink, messages: list[list[bytes]]) -> None:
        for frames in messages:
            kind = bytes(frames[0]).split(b"/", 1)[0].decode(errors="replace")
            if not self._delivered(sink, frames, kind):
                self.metrics.lost.labels(kind=kind, reason=self._send_failure()).inc()
