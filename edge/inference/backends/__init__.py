"""Inference backends behind one interface, chosen by name; fallback to ONNX Runtime on CPU.

`load_backend` never imports torch or TensorRT unless that backend is asked for."""

from __future__ import annotations

import importlib
import logging

from edge.errors import UserError
from edge.inference.backends.base import Backend, check_batch
from edge.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.inference.bundle import Bundle

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torch", "tensorrt")
__all__ = ["BACKENDS", "Backend", "check_batch", "load_backend"]


def load_backend(bundle: Bundle, name: str = "onnxruntime", precision: str = "fp32",
                 device: str | None = None, threads: int | None = None,
                 max_batch: int = 8) -> Backend:
    """The backend `name` for the bundle's model of `precision`.

    ONNX Runtime is the default and the fallback: when torch or TensorRT cannot load (not
    installed, no GPU, no engine), a WARNING names the reason and ONNX Runtime fp32 on the CPU
    serves instead (its .name and .precision say so, and `fallback_from` names the backend asked for).
    max_batch is the largest batch the caller will pass (TensorRT's optimisation profile)."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "onnxruntime":
        return _onnxruntime(bundle, precision, device, threads)
    try:
        if name == "torch":
            from edge.inference.backends.torch_backend import TorchBackend

            program = bundle.model("torch_export", "fp32")
            return TorchBackend(program.path, device=device, fp16=precision == "fp16",
                                threads=threads)
        module = importlib.import_module("edge.inference.backends.tensorrt_backend")
        return module.open_backend(  # type: ignore[no-any-return]
            bundle, precision=precision, device=device, max_batch=max_batch)
    except (ImportError, RuntimeError, OSError, UserError, AttributeError) as exc:
        log.warning("backend %s (%s) cannot load here: %s; falling back to ONNX Runtime fp32 on CPU",
                    name, precision, exc)
        backend = _onnxruntime(bundle, "fp32", None, threads)
        backend.fallback_from = name  # type: ignore[attr-defined]
        return backend


def _onnxruntime(bundle: Bundle, precision: str, device: str | None, threads: int | None) -> Backend:
    model = bundle.model("onnx", precision)
    return OnnxRuntimeBackend(model.path, precision=precision, device=device, threads=threads)
