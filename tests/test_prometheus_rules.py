"""Prometheus config and alert rules: promtool checks, rule unit tests, runbooks, metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from exported_metrics import exported_names, metric_names_in

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
EXPECTED_ALERTS = {
    "SsumEdgeDown",
    "SsumEdgeLatencyP99High",
    "SsumEdgeRejectionRateHigh",
    "SsumEdgeDropRateHigh",
    "SsumEdgeSequenceGaps",
    "SsumEdgeQueueSaturated",
    "SsumEdgeRestarted",
    "SsumEdgeInspectionFailing",
    "SsumEdgeTrustLow",
}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; .ci/prepare)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, str]]:
    """alert name, expr and annotations per rule, read from alerts.yml's fixed layout."""
    blocks = re.split(r"\n\s*- alert: ", ALERTS.read_text())[1:]
    rules = []
    for block in blocks:
        expr = re.search(r"expr: (\|\n(?:\s{10,}.*\n)+|.*\n)", block)
        rule = {"alert": block.split("\n", 1)[0].strip(), "expr": expr.group(1) if expr else ""}
        rule.update(dict(re.findall(r"\n\s+(summary|description|runbook): \"(.*)\"", block)))
        rules.append(rule)
    return rules


@needs_promtool
@pytest.mark.parametrize(
    "args",
    [("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")],
    ids=["config", "rules"],
)
def test_promtool_checks_pass(args):
    result = _promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_unit_tests_pass():
    result = _promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_unit_tests_catch_a_wrong_threshold(tmp_path):
    # The rule tests must fail when a rule changes: lower the latency SLO and run them again.
    for path in (ALERTS, ALERTS_TEST):
        shutil.copy(path, tmp_path / path.name)
    rules = tmp_path / ALERTS.name
    rules.write_text(rules.read_text().replace(") > 0.5\n", ") > 0.05\n"))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", ALERTS_TEST.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "SsumEdgeLatencyP99High" in result.stdout + result.stderr


def test_every_expected_alert_is_defined_with_annotations():
    rules = _rules()
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule.get("summary") and rule.get("description"), rule["alert"]
        assert rule.get("runbook") == f"docs/operations.md#{rule['alert'].lower()}"


def test_every_runbook_is_a_section_of_the_operations_guide():
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.*)$", OPERATIONS.read_text(), flags=re.MULTILINE)
    }
    for rule in _rules():
        assert rule["runbook"].split("#", 1)[1] in headings, rule["alert"]


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", ALERTS_TEST.read_text())
    fires = {name for name, empty in cases if not empty}
    silent = {name for name, empty in cases if empty}
    assert fires == EXPECTED_ALERTS
    assert silent == EXPECTED_ALERTS


def test_rules_use_only_exported_metrics():
    exported = exported_names()
    for rule in _rules():
        names = metric_names_in(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']}: {names - exported} not exported"
