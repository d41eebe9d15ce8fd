"""Backends: ONNX Runtime and PyTorch agree; fallback and errors are explicit; no torch import."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import numpy as np
import pytest

from edge.errors import UserError
from edge.inference.backends import load_backend
from edge.inference.bundle import load_bundle


@pytest.fixture(scope="module")
def bundle(tiny_bundle_source):
    return load_bundle(tiny_bundle_source)


def test_onnxruntime_and_torch_backends_agree(bundle):
    batch = np.random.default_rng(0).random((3, 1, 64, 96), dtype=np.float32)
    ort_backend = load_backend(bundle, "onnxruntime")
    torch_backend = load_backend(bundle, "torch", device="cpu")
    assert (ort_backend.name, torch_backend.name) == ("onnxruntime", "torch")
    a, b = ort_backend.infer(batch), torch_backend.infer(batch)
    assert a.shape == b.shape == batch.shape and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_tensorrt_absent_falls_back_to_onnxruntime_with_a_warning(bundle, caplog):
    with caplog.at_level(logging.WARNING, logger="edge.inference.backends"):
        backend = load_backend(bundle, "tensorrt", "fp16")
    assert (backend.name, backend.precision, backend.fallback_from) == ("onnxruntime", "fp32", "tensorrt")
    assert "falling back to ONNX Runtime" in caplog.text


def test_bad_input_and_missing_variants_are_clear_errors(bundle):
    backend = load_backend(bundle)
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        backend.infer(np.zeros((2, 64, 64), np.float32))
    with pytest.raises(ValueError, match="multiples of 4"):
        backend.infer(np.zeros((1, 1, 62, 64), np.float32))
    with pytest.raises(UserError, match="no onnx model in int8"):
        load_backend(bundle, "onnxruntime", "int8")
    with pytest.raises(UserError, match="unknown backend"):
        load_backend(bundle, "openvino")


def test_the_edge_never_imports_torch_unless_asked():
    code = ("import sys, edge.inference.backends, edge.inference.tiling, edge.serve.daemon, edge.tools.convert, edge.inference.preprocess; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_default_batch_is_chosen_for_the_device(bundle):
    from edge.inference.converter import (
        CPU_BATCH,
        GPU_BATCH,
        Converter,
        ConverterSettings,
        batch_for,
    )

    assert (batch_for(0, "cpu"), batch_for(0, "cuda:1"), batch_for(3, "cpu")) == (1, 8, 3)
    assert (CPU_BATCH, GPU_BATCH) == (1, 8)
    with Converter.from_bundle(bundle, ConverterSettings()) as converter:
        assert converter.backend.device == "cpu" and converter.max_batch == CPU_BATCH
    with Converter.from_bundle(bundle, ConverterSettings(max_batch=5)) as converter:
        assert converter.max_batch == 5
    with pytest.raises(UserError, match="batch size"):
        ConverterSettings(max_batch=-1)


@pytest.mark.parametrize(("configured", "shown"), [(0, "0 (1 on this device)"), (3, "3")])
def test_a_warm_up_out_of_memory_names_the_batch_as_configured(tiny_bundle_source, monkeypatch,
                                                               configured, shown):
    from edge.inference.converter import Converter
    from edge.serve.config_file import build_config
    from edge.serve.loader import load_converter

    def out_of_memory(self, shape=None):
        raise MemoryError

    monkeypatch.setattr(Converter, "warm_up", out_of_memory)
    config = build_config({"model": {"bundle": str(tiny_bundle_source), "threads": 1},
                           "batching": {"max_batch": configured}}, "edge.toml")
    with pytest.raises(UserError, match=rf"edge.toml: \[batching\] max_batch = {re.escape(shown)}:"):
        load_converter(config)


def test_onnxruntime_threads_do_not_spin_between_calls(tiny_bundle_source):
    from edge.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

    path = load_bundle(tiny_bundle_source).model("onnx", "fp32").path
    options = OnnxRuntimeBackend(path).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
