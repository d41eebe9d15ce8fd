"""Where the daemon's bundle is: a directory (or a symlink to one, resolved at every load), or a
model repository `<repository>/<name>/<version>/` with a version policy (latest or pinned)."""

from __future__ import annotations

from pathlib import Path

from edge.errors import UserError
from edge.inference.bundle import default_bundle_path
from edge.serve.config import ModelConfig

LATEST = "latest"


def resolve_bundle(model: ModelConfig) -> Path:
    """The bundle directory [model] names now (a reload resolves it again)."""
    if model.repository:
        return _from_repository(Path(model.repository), model.name, model.version)
    return Path(model.bundle or default_bundle_path()).resolve()


def _from_repository(repository: Path, name: str, version: str) -> Path:
    folder = repository / name
    if not folder.is_dir():
        raise UserError(f"model repository {repository} has no model {name!r}")
    versions = {int(p.name): p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()}
    if not versions:
        raise UserError(f"{folder}: no version directories (1/, 2/, ...)")
    if version == LATEST:
        return versions[max(versions)].resolve()
    if not version.isdigit() or int(version) not in versions:
        raise UserError(f"{folder}: no version {version!r} (have {sorted(versions)})")
    return versions[int(version)].resolve()
