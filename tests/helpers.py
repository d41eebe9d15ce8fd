"""Helpers shared by the tests: a controllable fake converter, tile messages, a ZeroMQ collector,
daemon configurations, and waiting for a condition. Fixtures built on them live in conftest.py."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq

from edge.imaging.imageio import to_float01
from edge.inference.converter import Converter
from edge.protocol import Message, decode_message
from edge.serve.config_file import build_config, to_toml
from edge.serve.metrics import EdgeMetrics
from edge.tools.supervise import free_port


class GridTiler:
    """Non-overlapping P x P patches, edge-padded; merge crops back."""

    def __init__(self, patch: int) -> None:
        self.patch = patch

    def split(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        p = self.patch
        h, w = image.shape
        rows, cols = -(-h // p), -(-w // p)
        padded = np.pad(image, ((0, rows * p - h), (0, cols * p - w)), mode="edge")
        patches = padded.reshape(rows, p, cols, p).transpose(0, 2, 1, 3).reshape(-1, 1, p, p)
        return patches.astype(np.float32), (h, w, rows, cols)

    def merge(self, outputs: np.ndarray, plan: tuple[int, int, int, int]) -> np.ndarray:
        h, w, rows, cols = plan
        p = self.patch
        grid = outputs.reshape(rows, cols, p, p).transpose(0, 2, 1, 3).reshape(rows * p, cols * p)
        return grid[:h, :w]


class InvertBackend:
    """out = 1 - in (or out = in with identity); optionally slow, or failing on patches whose
    mean is above `fail_above`."""

    name, precision, device = "fake", "fp32", "cpu"

    def __init__(self, delay_s: float = 0.0, fail_above: float | None = None,
                 identity: bool = False) -> None:
        self.delay_s = delay_s
        self.fail_above = fail_above
        self.identity = identity
        self.batch_sizes: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert batch.ndim == 4 and batch.shape[1] == 1 and batch.dtype == np.float32
        with self._lock:
            self.batch_sizes.append(len(batch))
        if self.delay_s:
            time.sleep(self.delay_s)
        means = batch.reshape(len(batch), -1).mean(1)
        if self.fail_above is not None and means.max() > self.fail_above:
            raise RuntimeError("fake backend failure")
        return batch.copy() if self.identity else 1.0 - batch

    def close(self) -> None:
        self.closed = True


FAKE_LABEL = "fake@000000"


def fake_converter(patch: int = 32, delay_s: float = 0.0, fail_above: float | None = None,
                   max_batch: int = 8, name: str = "fake", identity: bool = False) -> Converter:
    """A converter whose output is the negative of its input (or the input itself), in grid
    patches of `patch` px."""
    return Converter(InvertBackend(delay_s, fail_above, identity), GridTiler(patch), to_float01,
                     name, "000000", max_batch)


def fake_offline(raw: np.ndarray) -> np.ndarray:
    """What the fake converter produces for a raw tile (float [0, 1])."""
    return 1.0 - to_float01(raw)


class ListSink:
    """A pipeline sink keeping every message it is sent, decoded."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.closed = False
        self.lock = threading.Lock()

    def send(self, frames: list[bytes]) -> None:
        with self.lock:
            self.messages.append(decode_message(frames))

    def close(self) -> None:
        self.closed = True

    def kinds(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.kind == kind]


def assert_accounted(metrics: EdgeMetrics, in_flight: int = 0) -> None:
    """Every message read is published, rejected, dropped or still in flight."""
    value = metrics.counter_value
    received = value("tiles_received")
    ended = value("tiles_published") + value("tiles_rejected") + value("tiles_dropped")
    assert received == ended + in_flight, (received, ended, in_flight)


def endpoint() -> str:
    """A free TCP endpoint on 127.0.0.1."""
    return f"tcp://127.0.0.1:{free_port()}"


def tile_header(scan_id: str, seq: int, columns: int = 4, **extra: object) -> dict:
    return {"scan_id": scan_id, "seq": seq, "row": seq // columns, "col": seq % columns,
            "x_nm": 1000.0 * (seq % columns), "y_nm": 1000.0 * (seq // columns),
            "pixel_size_nm": 10.0, "t_capture": time.time(), **extra}


def raw_tiles(n: int, size: int = 128, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size)).astype(np.uint8) for _ in range(n)]


def http_get(url: str, timeout_s: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return str(response.read().decode())


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll `condition` until it is truthy (OSErrors count as not yet); fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


class Collector:
    """A consumer thread: SUB (connect) or PULL (bind) on a daemon's output."""

    def __init__(self, ctx: zmq.Context, address: str, kind: int) -> None:
        self.socket = ctx.socket(kind)
        if kind == zmq.SUB:
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
            self.socket.connect(address)
        else:
            self.socket.bind(address)
        self.messages: list[Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.socket.poll(50):
                self.messages.append(decode_message(self.socket.recv_multipart()))
        self.socket.close(linger=0)

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout_s: float = 60) -> None:
        wait_for(lambda: predicate(self.messages), timeout_s,
                 f"messages; got {[(m.kind, m.header.get('seq')) for m in self.messages]}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def kinds(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.kind == kind]


def daemon_toml(path: Path, bundle: Path, **sections: dict) -> tuple[Path, dict[str, int]]:
    """edge.toml for a daemon that PULLs tiles and PUBlishes results on free local ports."""
    ports = {name: free_port() for name in ("input", "output", "metrics")}
    data = {"input": {"socket": "pull", "endpoint": f"tcp://127.0.0.1:{ports['input']}",
                      "mode": "bind"},
            "output": {"socket": "pub", "endpoint": f"tcp://127.0.0.1:{ports['output']}"},
            "model": {"bundle": str(bundle), "threads": 1},
            "metrics": {"host": "127.0.0.1", "port": ports["metrics"]}, **sections}
    path.write_text(to_toml(build_config(data, path.name)))
    return path, ports
