"""Engine cache keying and lookup rules (no TensorRT needed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edge.inference.engine_cache import EngineCache, EngineKey, default_cache_dir

KEY = EngineKey(model_sha256="a" * 64, gpu_name="NVIDIA H100", compute_capability="9.0",
                tensorrt_version="10.13.0", precision="int8",
                profile=((1, 1, 512, 512), (8, 1, 512, 512), (8, 1, 512, 512)),
                workspace_bytes=1 << 30, options=(("builder_optimization_level", "3"),))


@pytest.mark.parametrize("change", [
    {"model_sha256": "b" * 64}, {"gpu_name": "NVIDIA L4"}, {"compute_capability": "8.9"},
    {"tensorrt_version": "11.0.0"}, {"precision": "fp16"},
    {"profile": ((1, 1, 512, 512), (16, 1, 512, 512), (16, 1, 512, 512))},
    {"workspace_bytes": 1 << 31}, {"options": (("builder_optimization_level", "5"),)},
])
def test_every_key_component_changes_the_digest(change):
    assert dataclasses.replace(KEY, **change).digest() != KEY.digest()


def test_same_facts_same_digest():
    same = EngineKey(**{f.name: getattr(KEY, f.name) for f in dataclasses.fields(KEY)})
    assert same.digest() == KEY.digest() and len(KEY.digest()) == 64


def test_store_then_lookup_round_trips(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    assert cache.lookup(KEY) is None
    path = cache.store(KEY, b"serialized engine")
    assert cache.lookup(KEY) == path and path.read_bytes() == b"serialized engine"
    assert cache.lookup(dataclasses.replace(KEY, precision="fp16")) is None
    meta = json.loads(cache.metadata_path(KEY).read_text())
    assert meta["key"]["gpu_name"] == "NVIDIA H100" and meta["digest"] == KEY.digest()


def test_tampered_engine_or_corrupt_metadata_means_rebuild(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(KEY, b"engine")
    path.write_bytes(b"other bytes")
    assert cache.lookup(KEY) is None
    cache.store(KEY, b"engine")
    cache.metadata_path(KEY).write_text("{not json")
    assert cache.lookup(KEY) is None
    cache.store(KEY, b"engine")
    meta = json.loads(cache.metadata_path(KEY).read_text())
    meta["key"]["tensorrt_version"] = "9.0"
    cache.metadata_path(KEY).write_text(json.dumps(meta))
    assert cache.lookup(KEY) is None


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SSUM_ENGINE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ssum-edge" / "engines"
    monkeypatch.setenv("SSUM_ENGINE_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("SSUM_ENGINE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "ssum-edge" / "engines"
