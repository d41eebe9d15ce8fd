"""The TensorRT engine cache: engines live outside the bundle, keyed by everything they depend on.

An engine is valid only for one model file, GPU model and compute capability, TensorRT version,
precision, optimisation profile and workspace. The key is the sha256 of all of those; a metadata
file beside each engine records them and the engine's own sha256. The daemon loads engines only
from its cache, and a key change (new model, new GPU, TensorRT upgrade, other batch size) means
a rebuild. Importable and testable without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENGINE_SUFFIX = ".engine"


@dataclass(frozen=True)
class EngineKey:
    model_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max input shapes
    workspace_bytes: int
    options: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = [list(shape) for shape in self.profile]
        data["options"] = [list(item) for item in self.options]
        return data

    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def default_cache_dir() -> Path:
    """$SSUM_ENGINE_CACHE, else $XDG_CACHE_HOME/ssum-edge/engines, else ~/.cache/ssum-edge/engines."""
    explicit = os.environ.get("SSUM_ENGINE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ssum-edge" / "engines"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class EngineCache:
    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else default_cache_dir()

    def path_for(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest()}{ENGINE_SUFFIX}"

    def metadata_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest()}.json"

    def timing_cache_path(self) -> Path:
        return self.directory / "timing.cache"

    def lookup(self, key: EngineKey) -> Path | None:
        """The cached engine for this key, or None when it must be (re)built."""
        engine, meta_path = self.path_for(key), self.metadata_path(key)
        if not engine.is_file() or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key.to_dict():
            return None
        if meta.get("engine_sha256") != _sha256(engine):
            return None
        return engine

    def store(self, key: EngineKey, engine_bytes: bytes) -> Path:
        """Write the engine and its metadata atomically (temporary file, then rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        engine = self.path_for(key)
        tmp = engine.with_name(engine.name + ".tmp")
        tmp.write_bytes(engine_bytes)
        tmp.replace(engine)
        meta = {"key": key.to_dict(), "digest": key.digest(),
                "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
                "created": datetime.now(UTC).isoformat(timespec="seconds")}
        meta_tmp = self.metadata_path(key).with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps(meta, indent=1) + "\n")
        meta_tmp.replace(self.metadata_path(key))
        return engine
