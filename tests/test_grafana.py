"""The Grafana dashboard: loads, every panel queries exported metrics, provisioning matches."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deploy_tree import run_script, staged_source
from exported_metrics import exported_names, metric_names_in

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ssum-edge.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels() for t in p["targets"]]


def _yaml_value(path: Path, key: str) -> str:
    match = re.search(rf"^\s*{key}:\s*(\S+)", path.read_text(), flags=re.MULTILINE)
    assert match, f"{key} not in {path}"
    return match.group(1)


def test_dashboard_loads_with_a_recent_schema():
    board = _dashboard()
    assert board["uid"] == "ssum-edge"
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"


def test_every_panel_has_a_query_on_the_templated_datasource():
    panels = _panels()
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_panels_do_not_overlap():
    cells: set[tuple[int, int]] = set()
    for panel in _dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area


def test_every_query_uses_only_exported_metrics():
    exported = exported_names()
    for title, expr in _exprs():
        names = metric_names_in(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= exported, f"{title}: {names - exported} not exported"


def test_dashboard_covers_the_required_views():
    used = set().union(*(metric_names_in(e) for _, e in _exprs()))
    for name in [
        "ssum_edge_tile_latency_seconds_bucket",
        "ssum_edge_stage_latency_seconds_bucket",
        "ssum_edge_tiles_received_total",
        "ssum_edge_tiles_converted_total",
        "ssum_edge_tiles_rejected_total",
        "ssum_edge_tiles_dropped_total",
        "ssum_edge_queue_depth",
        "ssum_edge_queue_capacity",
        "ssum_edge_batch_size_bucket",
        "ssum_edge_sequence_gaps_total",
        "ssum_edge_model_info",
        "ssum_edge_gpu_utilization_ratio",
        "ssum_edge_gpu_memory_used_bytes",
        "ssum_edge_trust_score_bucket",
        "ssum_edge_trust_score_count",
    ]:
        assert name in used, name
    quantiles = {e.split("(", 1)[1].split(",")[0] for _, e in _exprs() if "tile_latency" in e}
    assert {"0.5", "0.95", "0.99"} <= quantiles
    for _, expr in _exprs():
        if "histogram_quantile" in expr:
            assert re.search(r"by \((le|[^)]*\ble\b[^)]*)\)", expr), expr
            assert "[$__rate_interval]" in expr, expr


def test_datasource_provisioning_matches_the_scrape_setup():
    (ds_file,) = (PROVISIONING / "datasources").glob("*.yml")
    assert _yaml_value(ds_file, "type") == "prometheus"
    assert _yaml_value(ds_file, "url") == "http://127.0.0.1:9090"


def test_install_puts_the_dashboard_where_provisioning_looks(tmp_path):
    (provider,) = (PROVISIONING / "dashboards").glob("*.yml")
    assert _yaml_value(provider, "type") == "file"
    path = _yaml_value(provider, "path")
    root = tmp_path / "root"
    run_script(staged_source(tmp_path), "install.sh", root, "--no-venv", "--with-grafana")
    installed = root / path.lstrip("/") / DASHBOARD.name
    assert json.loads(installed.read_text()) == _dashboard()
    for kind in ("datasources", "dashboards"):
        for src in (PROVISIONING / kind).glob("*.yml"):
            copied = root / "etc" / "grafana" / "provisioning" / kind / src.name
            assert copied.read_text() == src.read_text()
