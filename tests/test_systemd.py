"""Deployment: the systemd unit (verify, security exposure <= 2.0) and install/uninstall.sh."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_tree import run_script, staged_source

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "ssum-edge.service"
ENV_FILE = ROOT / "systemd" / "ssum-edge.env"
MAX_EXPOSURE = 2.0
GPU_NODES = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd; .ci/prepare)"
)


def _directives(text: str) -> list[tuple[str, str]]:
    lines = (ln.strip() for ln in text.splitlines())
    return [tuple(ln.split("=", 1)) for ln in lines if "=" in ln and not ln.startswith("#")]


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
def test_security_exposure_is_at_most_two():
    result = _analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    out = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out
    assert float(match.group(1)) <= MAX_EXPOSURE, out


@needs_analyze
def test_verify_is_clean(tmp_path):
    # verify insists that ExecStart's binary exists; /opt/ssum-edge is only there after
    # install.sh, so check a copy whose ExecStart points at an existing executable. Every
    # other line is checked as written.
    exec_start = dict(_directives(UNIT.read_text()))["ExecStart"].split()[0]
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(exec_start, shutil.which("true") or "/bin/true"))
    result = _analyze("verify", "--no-pager", str(copy))
    own = [ln for ln in (result.stdout + result.stderr).splitlines() if UNIT.name in ln]
    assert result.returncode == 0 and not own, result.stdout + result.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path):
    broken = tmp_path / UNIT.name
    broken.write_text(UNIT.read_text().replace("Type=notify", "Type=notifyy"))
    result = _analyze("verify", "--no-pager", str(broken))
    assert UNIT.name in result.stdout + result.stderr


def test_unit_runs_the_daemon_as_a_notify_service_with_watchdog():
    settings = dict(_directives(UNIT.read_text()))
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["WatchdogSec"] == "30"
    assert settings["Restart"] == "on-failure"
    assert settings["EnvironmentFile"] == "/etc/ssum-edge/ssum-edge.env"
    assert settings["ExecStart"].endswith("ssum edge run --config /etc/ssum-edge/edge.toml")
    assert settings["ExecReload"].endswith("ssum edge reload --config /etc/ssum-edge/edge.toml")


def test_unit_allows_only_the_nvidia_compute_devices():
    entries = _directives(UNIT.read_text())
    allowed = [value.split()[0] for key, value in entries if key == "DeviceAllow"]
    assert sorted(allowed) == sorted(GPU_NODES)
    assert ("DevicePolicy", "closed") in entries


def test_env_file_is_plain_key_value_lines():
    for line in ENV_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", line), line


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_install_stages_the_layout_and_keeps_local_edits(tmp_path):
    src, root = staged_source(tmp_path), tmp_path / "root"
    run_script(src, "install.sh", root, "--no-venv", "--with-prometheus")
    etc = root / "etc" / "ssum-edge"
    assert (root / "etc/systemd/system/ssum-edge.service").read_text() == UNIT.read_text()
    assert (etc / "ssum-edge.env").read_text() == ENV_FILE.read_text()
    assert (etc / "edge.toml").read_text() == (src / "deploy/edge.example.toml").read_text()
    assert _mode(etc / "edge.toml") == 0o640 and _mode(etc / "keys") == 0o750
    assert (root / "var/lib/ssum-edge/mosaics").is_dir()
    assert (root / "var/cache/ssum-edge/engines").is_dir()
    assert (root / "opt/ssum-edge/docs/operations.md").is_file()
    assert (root / "etc/prometheus/alerts.yml").is_file()

    (etc / "edge.toml").write_text("# edited by the operator\n")
    second = run_script(src, "install.sh", root, "--no-venv")
    assert (etc / "edge.toml").read_text() == "# edited by the operator\n"
    assert "kept existing" in second.stdout


def test_uninstall_keeps_configuration_unless_purged(tmp_path):
    src, root = staged_source(tmp_path), tmp_path / "root"
    run_script(src, "install.sh", root, "--no-venv")
    run_script(src, "uninstall.sh", root)
    assert not (root / "opt/ssum-edge").exists()
    assert not (root / "etc/systemd/system/ssum-edge.service").exists()
    assert (root / "etc/ssum-edge/edge.toml").exists()
    run_script(src, "uninstall.sh", root)  # idempotent
    run_script(src, "uninstall.sh", root, "--purge")
    assert not (root / "etc/ssum-edge").exists() and not (root / "var/lib/ssum-edge").exists()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_are_shellcheck_clean():
    scripts = [ROOT / "deploy/install.sh", ROOT / "deploy/uninstall.sh", ROOT / ".ci/prepare"]
    result = subprocess.run(
        ["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout
