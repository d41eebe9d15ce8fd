"""TensorRT: the real build and inference run only where TensorRT and a GPU exist; the fallback
and the build command's error are tested everywhere."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge.inference.backends import load_backend
from edge.inference.bundle import load_bundle
from edge.inference.engine_cache import EngineKey
from ssum.cli import main


@pytest.fixture(scope="module")
def bundle(tiny_bundle_source):
    return load_bundle(tiny_bundle_source)


def _tensorrt_available() -> bool:
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


needs_tensorrt = pytest.mark.skipif(not _tensorrt_available(),
                                    reason="TensorRT and pycuda are not installed (no NVIDIA GPU stack here)")


@pytest.mark.skipif(_tensorrt_available(), reason="TensorRT is installed: the fallback does not apply")
def test_without_tensorrt_the_backend_falls_back_and_says_why(bundle, caplog):
    with caplog.at_level(logging.WARNING):
        backend = load_backend(bundle, "tensorrt", "fp32")
    assert backend.name == "onnxruntime" and backend.fallback_from == "tensorrt"
    assert "No module named" in caplog.text


@pytest.mark.skipif(_tensorrt_available(), reason="TensorRT is installed")
def test_build_engine_without_tensorrt_is_a_one_line_error(bundle, capsys):
    assert main(["edge", "build-engine", "--bundle", str(bundle.path), "--precision", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT and pycuda are needed" in err and "Traceback" not in err


def test_build_engine_refuses_a_missing_precision_before_touching_the_gpu(bundle, capsys):
    assert main(["edge", "build-engine", "--bundle", str(bundle.path), "--precision", "int8"]) == 2
    assert "no onnx model in int8" in capsys.readouterr().err


def test_build_engine_passes_its_options_and_prints_path_and_key(bundle, tmp_path, monkeypatch,
                                                                  capsys):
    from edge.inference.backends import tensorrt_build

    calls = []
    key = EngineKey("a" * 64, "NVIDIA L4", "8.9", "10.13.0", "fp32",
                    ((1, 1, 128, 128), (4, 1, 128, 128), (4, 1, 128, 128)), 256 << 20)

    def fake_ensure(bundle_, precision, max_batch, cache, workspace_bytes, device_index):
        calls.append((precision, max_batch, cache.directory, workspace_bytes, device_index))
        return Path(cache.directory) / "x.engine", key

    monkeypatch.setattr(tensorrt_build, "require_tensorrt", lambda: None)
    monkeypatch.setattr(tensorrt_build, "ensure_engine", fake_ensure)
    argv = ["edge", "build-engine", "--bundle", str(bundle.path), "--precision", "fp32", "--max-batch", "4",
            "--workspace-mb", "256", "--device", "1", "--cache", str(tmp_path)]
    assert main(argv) == 0
    assert calls == [("fp32", 4, tmp_path, 256 * 1024 * 1024, 1)]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"engine {tmp_path / 'x.engine'}"
    assert key.digest() in out[1] and "NVIDIA L4" in out[1]


@pytest.mark.tensorrt
@needs_tensorrt
def test_engine_builds_caches_and_matches_onnxruntime(bundle, tmp_path, monkeypatch):
    from edge.inference.backends.tensorrt_backend import open_backend
    from edge.inference.engine_cache import EngineCache

    monkeypatch.setenv("SSUM_ENGINE_CACHE", str(tmp_path / "engines"))
    backend = open_backend(bundle, precision="fp32", max_batch=4)
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 1
    batch = np.random.default_rng(0).random((6, 1, 128, 128), dtype=np.float32)
    reference = load_backend(bundle).infer(batch)
    np.testing.assert_allclose(backend.infer(batch), reference, atol=1e-3)
    assert set(backend.last_timings) == {"h2d_ms", "compute_ms", "d2h_ms"}
    backend.close()
    engines = sorted((tmp_path / "engines").glob("*.engine"))
    again = open_backend(bundle, precision="fp32", max_batch=4)  # from the cache, no rebuild
    assert sorted((tmp_path / "engines").glob("*.engine")) == engines
    assert EngineCache(tmp_path / "engines").directory == tmp_path / "engines"
    again.close()
