"""Run the conversion daemon as a child process, as systemd would: ready on READY=1.

Used by `ssum demo` and the benchmark; a NOTIFY_SOCKET of our own tells exactly when the daemon's
sockets, model and backend are up, with no polling of ports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge.errors import UserError

READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NotifyListener:
    """A NOTIFY_SOCKET like systemd's, so the demo knows exactly when the daemon is ready."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def wait_ready(self, process: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise UserError(f"the daemon exited with code {process.returncode} before it was ready")
            try:
                message = self.sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                return
        raise UserError(f"the daemon was not ready within {timeout_s:.0f} s")

    def close(self) -> None:
        self.sock.close()


def start_daemon(config: Path, notify: NotifyListener, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "ssum", "edge", "run", "--config", str(config)]
    log = log_path.open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    notify.wait_ready(process, READY_TIMEOUT_S)
    return process


def stop_daemon(process: subprocess.Popen) -> int:
    process.terminate()
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def fetch_metrics(metrics_port: int, host: str = "127.0.0.1") -> str:
    """The daemon's metrics endpoint, as Prometheus reads it."""
    url = f"http://{host}:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def scrape(metrics_port: int) -> dict[str, float]:
    """Unlabelled-summed values of the daemon's counters, read over HTTP like Prometheus does."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(fetch_metrics(metrics_port)):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def request_reload(url: str, timeout_s: float = 600.0) -> dict:
    """POST <url>/-/reload to a running daemon; its JSON answer (ok, model, error, ...)."""
    request = urllib.request.Request(url.rstrip("/") + "/-/reload", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            raise UserError(f"{url}: answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"no daemon answers at {url} ({exc}); is it running, with [metrics] "
                        "enabled on that port?") from exc
