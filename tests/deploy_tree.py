"""Run deploy/install.sh and uninstall.sh into a temporary root, for the deployment tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = Path("deploy") / "edge.example.toml"
# Used only while the daemon engineer's deploy/edge.example.toml does not exist yet.
STAND_IN_EXAMPLE = '[input]\nendpoint = "tcp://127.0.0.1:5555"\n'


def staged_source(tmp_path: Path) -> Path:
    """A copy of the files install.sh reads (deploy/, systemd/, docs/)."""
    src = tmp_path / "src"
    for part in ("deploy", "systemd", "docs"):
        shutil.copytree(REPO / part, src / part)
    if not (src / EXAMPLE).exists():
        (src / EXAMPLE).write_text(STAND_IN_EXAMPLE)
    return src


def run_script(src: Path, script: str, root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(src / "deploy" / script), "--root", str(root), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
