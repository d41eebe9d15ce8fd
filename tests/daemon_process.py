"""A daemon (`ssum edge run --config edge.toml`) in a subprocess, for end-to-end tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_for(
    condition: Callable[[], object],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen | None = None,
) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}")
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def daemon_config(tmp_path: Path, bundle: Path, extra: str = "") -> tuple[Path, dict[str, int]]:
    """edge.toml for a daemon that PULLs tiles and PUBlishes results on free local ports."""
    ports = {name: free_port() for name in ("input", "output", "metrics")}
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[input]\nsocket = "pull"\nendpoint = "tcp://127.0.0.1:{ports["input"]}"\n'
        'mode = "bind"\n'
        f'[output]\nsocket = "pub"\nendpoint = "tcp://127.0.0.1:{ports["output"]}"\n'
        f'[model]\nbundle = "{bundle}"\nbackend = "onnxruntime"\nthreads = 1\n'
        f'[metrics]\nhost = "127.0.0.1"\nport = {ports["metrics"]}\n' + extra
    )
    return config, ports


def start_daemon(config: Path, metrics_port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "edge", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_for(lambda: "ssum_edge_model_info" in get(url), 60, "daemon metrics", proc)
    return proc
