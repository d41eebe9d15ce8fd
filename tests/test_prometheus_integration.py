"""End to end: a real Prometheus, configured from deploy/prometheus, scrapes a running daemon
while a simulated scan is replayed into it; the alert rules load and stay silent.

The daemon runs as `ssum edge run --config edge.toml` in a subprocess (the CLI and TOML keys
of the shared contract). Skips when the prometheus server (Debian package) is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from helpers import daemon_toml, http_get, wait_for

from edge.tools.supervise import (
    NotifyListener,
    fetch_metrics,
    free_port,
    start_daemon,
    stop_daemon,
)
from trainer.sim.scan import simulate_scan

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "deploy" / "prometheus"
ROWS, COLS = 2, 2

pytestmark = pytest.mark.slow


@pytest.fixture()
def daemon(tmp_path: Path, tiny_bundle: Path) -> Iterator[tuple[dict[str, int], Path]]:
    scan = simulate_scan(tmp_path / "scan", rows=ROWS, cols=COLS, tile=64, overlap=16, seed=0)
    config, ports = daemon_toml(tmp_path / "edge.toml", tiny_bundle)
    notify = NotifyListener(tmp_path)
    proc = start_daemon(config, notify, tmp_path / "daemon.log")
    yield ports, scan
    stop_daemon(proc)
    notify.close()


@pytest.fixture()
def prometheus(tmp_path: Path, daemon) -> Iterator[tuple[str, dict[str, int], Path]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus server not installed (apt-get install prometheus; .ci/prepare)")
    ports, scan = daemon
    conf_dir = tmp_path / "prometheus"
    conf_dir.mkdir()
    shutil.copy(PROM_DIR / "alerts.yml", conf_dir)
    text = (PROM_DIR / "prometheus.yml").read_text()
    text = text.replace("127.0.0.1:9108", f"127.0.0.1:{ports['metrics']}")
    text = re.sub(r"scrape_interval: \S+", "scrape_interval: 1s", text)
    text = re.sub(r"scrape_timeout: \S+", "scrape_timeout: 1s", text)
    text = text.replace("evaluation_interval: 15s", "evaluation_interval: 1s")
    (conf_dir / "prometheus.yml").write_text(text)
    web = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={conf_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://{web}"
    wait_for(lambda: http_get(f"{base}/-/ready").strip() != "", 30, "prometheus ready")
    yield base, ports, scan
    stop_daemon(proc)


def _query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return json.loads(http_get(url))["data"]["result"]


def _scalar(base: str, expr: str) -> float | None:
    result = _query(base, expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_daemon_during_a_replayed_scan(prometheus):
    from edge.tools.rig import replay_scan

    base, ports, scan = prometheus
    wait_for(lambda: _scalar(base, 'up{job="ssum-edge"}') == 1.0, 30, "target up")
    stats = replay_scan(
        scan, f"tcp://127.0.0.1:{ports['input']}", socket="push", bind=False, timeout_s=30
    )
    tiles = stats.tiles_sent
    assert tiles == ROWS * COLS

    push = zmq.Context.instance().socket(zmq.PUSH)
    push.linger = 2000
    push.connect(f"tcp://127.0.0.1:{ports['input']}")
    push.send_multipart([b"tile/bad", b"{not json", b""])
    push.close()

    converted = 'sum(ssum_edge_tiles_converted_total{job="ssum-edge"})'
    wait_for(
        lambda: _scalar(base, converted) == tiles, 60, f"{tiles} converted tiles in Prometheus"
    )
    rejected = 'sum(ssum_edge_tiles_rejected_total{job="ssum-edge", reason="bad_json"})'
    wait_for(lambda: _scalar(base, rejected) == 1.0, 30, "one bad_json rejection in Prometheus")

    received = _scalar(base, 'sum(ssum_edge_tiles_received_total{job="ssum-edge"})')
    dropped = _scalar(base, 'sum(ssum_edge_tiles_dropped_total{job="ssum-edge"})') or 0.0
    total_rejected = _scalar(base, 'sum(ssum_edge_tiles_rejected_total{job="ssum-edge"})')
    assert received == tiles + 1 == tiles + total_rejected + dropped

    p99 = _scalar(
        base,
        "histogram_quantile(0.99, sum by (le) "
        '(rate(ssum_edge_tile_latency_seconds_bucket{job="ssum-edge"}[1m])))',
    )
    assert p99 is not None and p99 > 0
    info = _query(base, 'ssum_edge_model_info{job="ssum-edge"}')
    assert info and info[0]["metric"]["backend"] == "onnxruntime"

    rules = json.loads(http_get(f"{base}/api/v1/rules"))["data"]["groups"]
    loaded = {r["name"] for g in rules for r in g["rules"]}
    alerts = (PROM_DIR / "alerts.yml").read_text()
    written = set(re.findall(r"^\s*- alert: (\w+)", alerts, re.MULTILINE))
    assert len(written) >= 9 and loaded == written
    assert all(r["health"] == "ok" for g in rules for r in g["rules"])
    firing = _query(base, 'ALERTS{alertstate="firing", alertname=~"SsumEdge.*"}')
    assert firing == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_metrics_endpoint_passes_promtool_check_metrics(daemon):
    ports, _ = daemon
    text = fetch_metrics(ports["metrics"])
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
