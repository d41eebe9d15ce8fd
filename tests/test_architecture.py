"""The import rule of docs/architecture.md: every module imports only from its own layer or the
layers below it. The layer table is read from the document, so the code and the document cannot
drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ssum", "calibration", "trainer", "edge")


def layers(root: Path = REPO) -> dict[str, int]:
    """Package or module name -> layer rank (0 = the bottom), from the document's table."""
    text = (root / "docs" / "architecture.md").read_text()
    table = text[text.index("| layer (top first) |"):]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    ranks = {}
    for rank, row in enumerate(reversed(rows)):
        for name in re.findall(r"`([\w.]+)`", row.split("|")[2]):
            ranks[name] = rank
    return ranks


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str, ranks: dict[str, int]) -> int | None:
    """The rank of the longest table entry that is `name` or a package above it."""
    candidates = [n for n in ranks if name == n or name.startswith(n + ".")]
    return ranks[max(candidates, key=len)] if candidates else None


def imports(path: Path) -> set[str]:
    """Absolute names of the project's modules this file imports, wherever in the file."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def project_modules(root: Path = REPO) -> list[Path]:
    return sorted(p for package in PACKAGES for p in (root / package).rglob("*.py"))


def violations(root: Path = REPO) -> list[str]:
    ranks = layers(root)
    found = []
    for path in project_modules(root):
        own = layer_of(module_name(path, root), ranks)
        for name in sorted(imports(path)):
            other = layer_of(name, ranks)
            if own is not None and other is not None and other > own:
                found.append(f"{module_name(path, root)} imports {name}")
    return found


def test_every_module_belongs_to_a_layer():
    ranks = layers()
    assert len(ranks) >= 10
    orphans = [module_name(p) for p in project_modules() if layer_of(module_name(p), ranks) is None]
    assert orphans == []


def test_no_module_imports_from_a_layer_above_its_own():
    assert violations() == []


@pytest.mark.parametrize(("importer", "imported"), [
    ("edge/inference/tiling.py", "edge.serve.config"),
    ("edge/protocol.py", "edge.imaging.imageio"),
    ("edge/serve/daemon.py", "edge.tools.rig"),
    ("trainer/data.py", "calibration.gate"),
])
def test_the_check_catches_an_upward_import(tmp_path, importer, imported):
    """The rule applied to a copy of the tree with one upward import added."""
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            target = tmp_path / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text((REPO / "docs/architecture.md").read_text())
    victim = tmp_path / importer
    victim.write_text(victim.read_text() + f"\n\ndef _late() -> None:\n    import {imported}\n")
    assert violations(tmp_path) == [f"{module_name(victim, tmp_path)} imports {imported}"]
