"""Model updates without downtime: a hot swap under a steady stream loses nothing and changes the
model at one point of the sequence; a broken bundle leaves the old one serving; /readyz is false
while the model warms up; the model repository's version policy."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import zmq
from helpers import daemon_toml, endpoint, fake_converter, raw_tiles, tile_header, wait_for
from tiny_bundle import make_tiny_bundle

from edge.errors import UserError
from edge.protocol import decode_message, encode_tile
from edge.serve.config import ModelConfig
from edge.serve.config_file import build_config
from edge.serve.daemon import Daemon
from edge.serve.model_source import resolve_bundle
from edge.tools.supervise import NotifyListener, scrape, start_daemon, stop_daemon

pytestmark = pytest.mark.timeout(180)


@pytest.fixture()
def two_bundles(tmp_path: Path, tiny_bundle: Path) -> tuple[Path, Path]:
    """Bundle B (other weights than the tiny bundle A) and a symlink `current` pointing at A."""
    other = make_tiny_bundle(tmp_path / "bundle-b", seed=1)
    current = tmp_path / "current"
    current.symlink_to(tiny_bundle)
    return other, current


def repoint(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    tmp.replace(link)


def reload(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssum", "edge", "reload", "--config",
                           str(config)], capture_output=True, text=True, timeout=120, check=False)


class Stream:
    """A steady stream of tiles into the daemon until `stop`, and every answer it publishes."""

    def __init__(self, ctx: zmq.Context, ports: dict[str, int], rate_hz: float) -> None:
        self.push = ctx.socket(zmq.PUSH)
        self.push.connect(f"tcp://127.0.0.1:{ports['input']}")
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(f"tcp://127.0.0.1:{ports['output']}")
        self.rate_hz = rate_hz
        self.answers: list[tuple[float, object]] = []
        self.sent = 0
        self.stop = threading.Event()
        time.sleep(0.5)  # the subscription reaches the daemon's PUB
        self._receiver = threading.Thread(target=self._receive, daemon=True)
        self._receiver.start()
        self._sender = threading.Thread(target=self._send, daemon=True)

    def start(self, n: int | None = None) -> None:
        self._limit = n
        self._sender.start()

    def _send(self) -> None:
        raw, start = raw_tiles(1, size=64)[0], time.monotonic()
        while not self.stop.is_set() and (self._limit is None or self.sent < self._limit):
            time.sleep(max(0.0, start + self.sent / self.rate_hz - time.monotonic()))
            self.push.send_multipart(encode_tile(tile_header("swap", self.sent), raw))
            self.sent += 1

    def _receive(self) -> None:
        try:
            while self.sub.poll(5000):
                self.answers.append((time.monotonic(), decode_message(self.sub.recv_multipart())))
        except zmq.ZMQError:  # the test's context closed the socket at teardown: done
            return

    def finish(self) -> None:
        self.stop.set()
        self._sender.join(30)
        wait_for(lambda: len(self.answers) >= self.sent, 60, "every answer")

    def models(self) -> list[str]:
        return [m.header["model"] for _, m in self.answers if m.kind == "sem"]


def test_a_hot_swap_under_a_steady_stream_loses_nothing(tmp_path, ctx, two_bundles):
    bundle_b, current = two_bundles
    config, ports = daemon_toml(tmp_path / "edge.toml", current)
    notify = NotifyListener(tmp_path)
    daemon = start_daemon(config, notify, tmp_path / "daemon.log")
    try:
        stream = Stream(ctx, ports, rate_hz=20.0)
        stream.start()
        wait_for(lambda: stream.sent >= 20, 30, "the first tiles")
        repoint(current, bundle_b)
        result = reload(config)
        after = stream.sent
        wait_for(lambda: stream.sent >= after + 20, 30, "tiles after the swap")
        stream.finish()
        metrics = scrape(ports["metrics"])
    finally:
        assert stop_daemon(daemon) == 0
        notify.close()
    assert result.returncode == 0, result.stderr
    assert "now serving tiny-1@" in result.stdout
    n = stream.sent
    kinds = [m.kind for _, m in stream.answers]
    assert kinds == ["sem"] * n, kinds  # nothing lost, nothing errored
    assert [m.header["seq"] for _, m in stream.answers] == list(range(n))
    models = stream.models()
    switch = next((i for i, m in enumerate(models) if m.startswith("tiny-1@")), None)
    assert switch is not None, (models, result.stdout)
    assert all(m.startswith("tiny-0@") for m in models[:switch]) and 20 <= switch <= n - 20
    assert all(m.startswith("tiny-1@") for m in models[switch:])
    assert metrics["ssum_edge_model_reloads_total"] == 1


def test_a_broken_bundle_leaves_the_old_one_serving(tmp_path, ctx, two_bundles):
    bundle_b, current = two_bundles
    broken = Path(shutil.copytree(bundle_b, tmp_path / "broken"))
    (broken / "generator.onnx").write_bytes(b"not a model")
    config, ports = daemon_toml(tmp_path / "edge.toml", current)
    notify = NotifyListener(tmp_path)
    daemon = start_daemon(config, notify, tmp_path / "daemon.log")
    try:
        repoint(current, broken)
        result = reload(config)
        stream = Stream(ctx, ports, rate_hz=50.0)
        stream.start(5)
        wait_for(lambda: stream.sent == 5, 30, "5 tiles sent")
        stream.finish()
        metrics = scrape(ports["metrics"])
    finally:
        assert stop_daemon(daemon) == 0
        notify.close()
    assert result.returncode == 1
    assert "reload failed, still serving tiny-0@" in result.stderr
    assert "does not match its sha256" in result.stderr
    assert [m.split("@")[0] for m in stream.models()] == ["tiny-0"] * 5
    assert metrics["ssum_edge_model_reloads_total"] == 1  # the failed one (labels summed)


def test_sighup_reloads_and_a_reload_of_the_same_bundle_changes_nothing(tmp_path, two_bundles):
    bundle_b, current = two_bundles
    config, ports = daemon_toml(tmp_path / "edge.toml", current)
    notify = NotifyListener(tmp_path)
    daemon = start_daemon(config, notify, tmp_path / "daemon.log")
    try:
        same = reload(config)
        repoint(current, bundle_b)
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: _json(f"http://127.0.0.1:{ports['metrics']}/readyz")["model"]
                 .startswith("tiny-1@"), 60, "the SIGHUP reload")
    finally:
        assert stop_daemon(daemon) == 0
        notify.close()
    assert same.returncode == 0 and "unchanged" in same.stdout


def test_readyz_is_false_while_the_model_warms_up_and_true_after(tmp_path):
    release = threading.Event()

    def slow_loader(config, warm_shape=None):
        release.wait(30)
        return fake_converter()

    config = build_config({"input": {"socket": "pull", "endpoint": endpoint()},
                           "output": {"endpoint": endpoint()}, "metrics": {"port": 0}})
    daemon = Daemon(config, loader=slow_loader)
    starter = threading.Thread(target=daemon.start)
    starter.start()
    try:
        wait_for(lambda: daemon.metrics_port, 10, "the endpoint")
        base = f"http://127.0.0.1:{daemon.metrics_port}"
        code, answer = _status(base + "/readyz")
        assert code == 503 and answer["reasons"] == ["loading and warming up the model"]
        assert _status(base + "/healthz") == (200, {"ok": True, "state": "starting"})
        release.set()
        starter.join(10)
        wait_for(lambda: _status(base + "/readyz")[0] == 200, 10, "ready")
        assert _status(base + "/healthz") == (200, {"ok": True, "state": "serving"})
    finally:
        release.set()
        starter.join(10)
        daemon.stop()


def test_a_connecting_input_is_ready_only_once_connected(ctx):
    rig = endpoint()
    config = build_config({"input": {"socket": "sub", "endpoint": rig},
                           "output": {"endpoint": endpoint()}, "metrics": {"port": 0}})
    daemon = Daemon(config, converter=fake_converter())
    daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.metrics_port}"
        code, answer = _status(base + "/readyz")
        assert code == 503 and answer["reasons"] == [f"input not connected to {rig}"]
        pub = ctx.socket(zmq.PUB)
        pub.bind(rig)
        wait_for(lambda: _status(base + "/readyz")[0] == 200, 15, "the input connected")
        pub.close(linger=0)
    finally:
        daemon.stop()


def test_the_repository_version_policy(tmp_path):
    for version in ("1", "2", "10", "notes"):
        (tmp_path / "repo" / "chip" / version).mkdir(parents=True)
    model = ModelConfig(repository=str(tmp_path / "repo"), name="chip")
    assert resolve_bundle(model).name == "10"
    pinned = ModelConfig(repository=str(tmp_path / "repo"), name="chip", version="2")
    assert resolve_bundle(pinned).name == "2"
    with pytest.raises(UserError, match="no version '3'"):
        resolve_bundle(ModelConfig(repository=str(tmp_path / "repo"), name="chip", version="3"))
    with pytest.raises(UserError, match="no model 'other'"):
        resolve_bundle(ModelConfig(repository=str(tmp_path / "repo"), name="other"))


def _status(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _json(url: str) -> dict:
    return _status(url)[1]

