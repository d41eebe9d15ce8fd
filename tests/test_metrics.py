"""Metrics (names, types, exposition, promtool), the HTTP endpoint, sd_notify and NVML."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.protocol import ErrorCode
from edge.serve import sdnotify
from edge.serve.admin import AdminServer, Verdict
from edge.serve.metrics import LATENCY_BUCKETS, TRUST_BUCKETS, EdgeMetrics
from edge.serve.nvml import register_gpu_metrics

CONTRACT = {
    "ssum_edge_tiles_received": ("counter", set()),
    "ssum_edge_tiles_converted": ("counter", set()),
    "ssum_edge_tiles_published": ("counter", set()),
    "ssum_edge_tiles_rejected": ("counter", {"reason"}),
    "ssum_edge_tiles_dropped": ("counter", {"reason"}),
    "ssum_edge_sequence_gaps": ("counter", set()),
    "ssum_edge_scans_completed": ("counter", set()),
    "ssum_edge_messages_lost": ("counter", {"kind", "reason"}),
    "ssum_edge_open_scans": ("gauge", set()),
    "ssum_edge_tile_latency_seconds": ("histogram", set()),
    "ssum_edge_stage_latency_seconds": ("histogram", {"stage"}),
    "ssum_edge_batch_size": ("histogram", set()),
    "ssum_edge_queue_depth": ("gauge", {"queue"}),
    "ssum_edge_queue_capacity": ("gauge", {"queue"}),
    "ssum_edge_model_info": ("gauge", {"name", "sha256", "backend", "precision", "device"}),
    "ssum_edge_build_info": ("gauge", {"version"}),
    "ssum_edge_defects": ("counter", {"class"}),
    "ssum_edge_inspected_tiles": ("counter", set()),
    "ssum_edge_inspection_errors": ("counter", set()),
    "ssum_edge_inspected_area_square_meters": ("counter", set()),
    "ssum_edge_scan_defect_density_per_square_meter": ("histogram", set()),
    "ssum_edge_inspection_seconds": ("histogram", set()),
    "ssum_edge_trust_score": ("histogram", set()),
}


def exercised() -> EdgeMetrics:
    metrics = EdgeMetrics()
    metrics.set_model("tiny", "ab" * 32, "onnxruntime", "fp32", "cpu")
    metrics.watch_queue("decode", lambda: 3, 64)
    metrics.received.inc(5)
    metrics.converted.inc(3)
    metrics.rejected.labels(reason="bad_json").inc()
    metrics.dropped.labels(reason="queue_full").inc()
    metrics.tile_latency.observe(0.012)
    metrics.observe_stages({"infer": 0.004, "queue": 0.001})
    metrics.batch_size.observe(8)
    metrics.trust_score.observe(0.42)
    return metrics


def families(metrics: EdgeMetrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_every_contract_metric_is_exported_with_its_type_and_labels():
    found = families(exercised())
    for name, (kind, labels) in CONTRACT.items():
        assert name in found, name
        assert found[name].type == kind, name
        for sample in found[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    assert "process_start_time_seconds" in found


def test_values_and_buckets():
    found = families(exercised())
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in found.values() for s in f.samples}
    assert value[("ssum_edge_tiles_received_total", ())] == 5
    assert value[("ssum_edge_tiles_rejected_total", (("reason", "bad_json"),))] == 1
    assert value[("ssum_edge_queue_depth", (("queue", "decode"),))] == 3
    assert value[("ssum_edge_queue_capacity", (("queue", "decode"),))] == 64
    buckets = sorted(float(s.labels["le"]) for s in found["ssum_edge_tile_latency_seconds"].samples
                     if s.name.endswith("_bucket"))
    assert buckets == sorted([*LATENCY_BUCKETS, float("inf")])
    batch = [float(s.labels["le"]) for s in found["ssum_edge_batch_size"].samples
             if s.name.endswith("_bucket")]
    assert batch == [1, 2, 4, 8, 16, 32, 64, float("inf")]
    trust = {float(s.labels["le"]): s.value for s in found["ssum_edge_trust_score"].samples
             if s.name.endswith("_bucket")}
    assert sorted(trust) == sorted([*TRUST_BUCKETS, float("inf")])
    assert (trust[0.4], trust[0.5], trust[1.0]) == (0, 1, 1)


def test_every_reason_and_stage_is_exported_before_it_happens():
    found = families(EdgeMetrics())
    reasons = {s.labels["reason"] for s in found["ssum_edge_tiles_rejected"].samples}
    assert reasons == {code.value for code in ErrorCode}
    drops = {s.labels["reason"] for s in found["ssum_edge_tiles_dropped"].samples}
    assert drops == {"queue_full", "shutdown", "send_failed"}
    lost = {(s.labels["kind"], s.labels["reason"])
            for s in found["ssum_edge_messages_lost"].samples}
    assert lost == {(k, r) for k in ("error", "scan-end", "height", "defect", "trust")
                    for r in ("queue_full", "shutdown", "send_failed")}
    stages = {s.labels["stage"] for s in found["ssum_edge_stage_latency_seconds"].samples}
    assert stages == {"preprocess", "queue", "infer", "blend", "trust", "publish"}


def test_two_instances_do_not_share_values():
    a, b = EdgeMetrics(), EdgeMetrics()
    a.received.inc(2)
    assert a.counter_value("tiles_received") == 2
    assert b.counter_value("tiles_received") == 0


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_exposition():
    text = generate_latest(exercised().registry)
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", result


class Answers:
    """Health answers as a daemon gives them."""

    def liveness(self) -> Verdict:
        return Verdict(True, {"threads": "alive"})

    def readiness(self) -> Verdict:
        return Verdict(False, {"reasons": ["loading the model"]})

    def reload(self) -> Verdict:
        return Verdict(False, {"error": "bundle refused"})


def test_the_http_endpoint_serves_metrics_health_and_reload_on_a_free_port():
    server = AdminServer(exercised(), Answers(), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert json.loads(response.read()) == {"ok": True, "threads": "alive"}
        answers = {}
        for path, method in (("/readyz", "GET"), ("/-/reload", "POST"), ("/nope", "GET")):
            request = urllib.request.Request(base + path, method=method)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=5)
            answers[path] = (info.value.code, json.loads(info.value.read()))
    finally:
        server.close()
    assert "ssum_edge_tiles_converted_total 3.0" in text
    assert answers["/readyz"] == (503, {"ok": False, "reasons": ["loading the model"]})
    assert answers["/-/reload"] == (500, {"ok": False, "error": "bundle refused"})
    assert answers["/nope"][0] == 404


def test_nvml_is_optional():
    metrics = EdgeMetrics()
    added = register_gpu_metrics(metrics.registry)
    names = set(families(metrics))
    assert ("ssum_edge_gpu_utilization_ratio" in names) == added


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_a_datagram(tmp_path, monkeypatch, abstract):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"ssum-test-{os.getpid()}"
        listener.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    else:
        path = tmp_path / "notify.sock"
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    listener.settimeout(5)
    try:
        assert sdnotify.notify("READY=1\nSTATUS=up")
        assert listener.recv(4096) == b"READY=1\nSTATUS=up"
    finally:
        listener.close()


def test_notify_never_blocks_on_a_receiver_that_does_not_read(tmp_path, monkeypatch):
    """The daemon's main loop once hung in notify() on a full queue, deaf to SIGTERM."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    outcome: list[bool] = []
    sender = threading.Thread(target=lambda: outcome.extend(
        sdnotify.notify("STATUS=" + "x" * 4000) for _ in range(2000)), daemon=True)
    sender.start()
    sender.join(20)
    listener.close()
    assert not sender.is_alive() and len(outcome) == 2000
    assert outcome[0] and not outcome[-1]  # the first ones queued, then dropped, not blocked


def test_notify_outside_systemd_is_a_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent.sock"))
    assert sdnotify.notify("READY=1") is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
