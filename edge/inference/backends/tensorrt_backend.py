"""TensorRT backend: an engine from the daemon's own cache, run with pycuda.

The primary CUDA context is retained once and pushed around each call's GPU work (the daemon
calls `infer` from its inference thread, not the thread that loaded the engine). Pinned host
buffers (of the engine's I/O types) and device buffers are allocated once at the profile's
maximum batch; each batch takes the next of a few streams; events time the stages.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edge.inference.backends.base import check_batch
from edge.inference.bundle import Bundle
from edge.inference.engine_cache import EngineCache

log = logging.getLogger(__name__)
STREAMS = 2


def open_backend(bundle: Bundle, precision: str = "fp16", device: str | None = None,
                 max_batch: int = 8) -> TensorRTBackend:
    """Load (building it first if the cache has none) the engine for this bundle and GPU."""
    import tensorrt  # noqa: F401  (ImportError here means: fall back)

    from edge.inference.backends.tensorrt_build import ensure_engine

    index = int((device or "cuda:0").partition(":")[2] or 0)
    path, _ = ensure_engine(bundle, precision, max_batch, EngineCache(), device_index=index)
    return TensorRTBackend(path, precision, index, max_batch, int(bundle.io["patch_size"]))


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, engine_path: Path, precision: str, device_index: int, max_batch: int,
                 patch_size: int) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        cuda.init()
        self._cuda = cuda
        self.context = cuda.Device(device_index).retain_primary_context()
        self.device, self.precision = f"cuda:{device_index}", precision
        self.max_batch, self.patch_size = max_batch, patch_size
        self._lock = threading.Lock()
        self.context.push()
        try:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not load the engine {engine_path}")
            self.execution = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.input_name = inputs[0]
            self.output_name = next(n for n in names if n not in inputs)
            shape = (max_batch, 1, patch_size, patch_size)
            in_type = trt.nptype(self.engine.get_tensor_dtype(self.input_name))
            out_type = trt.nptype(self.engine.get_tensor_dtype(self.output_name))
            self.host_in = cuda.pagelocked_empty(shape, in_type)
            self.host_out = cuda.pagelocked_empty(shape, out_type)
            self.dev_in = cuda.mem_alloc(self.host_in.nbytes)
            self.dev_out = cuda.mem_alloc(self.host_out.nbytes)
            self.streams = [cuda.Stream() for _ in range(STREAMS)]
            self.events = [cuda.Event() for _ in range(4)]
        finally:
            self.context.pop()
        self._next = 0
        self._closed = False
        self.last_timings: dict[str, float] = {}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        array = check_batch(batch)
        if array.shape[2:] != (self.patch_size, self.patch_size):
            raise ValueError(f"this engine takes {self.patch_size}x{self.patch_size} patches, "
                             f"got {array.shape[2]}x{array.shape[3]}")
        parts = [self._infer(array[i : i + self.max_batch])
                 for i in range(0, len(array), self.max_batch)]
        return np.concatenate(parts)

    def _infer(self, array: np.ndarray) -> np.ndarray:
        n = len(array)
        with self._lock:
            self.context.push()
            try:
                stream = self.streams[self._next % STREAMS]
                self._next += 1
                return self._run(array, n, stream)
            finally:
                self.context.pop()

    def _run(self, array: np.ndarray, n: int, stream: Any) -> np.ndarray:
        cuda, (start, copied, computed, done) = self._cuda, self.events
        self.host_in[:n] = array
        self.execution.set_input_shape(self.input_name, array.shape)
        self.execution.set_tensor_address(self.input_name, int(self.dev_in))
        self.execution.set_tensor_address(self.output_name, int(self.dev_out))
        start.record(stream)
        cuda.memcpy_htod_async(self.dev_in, self.host_in[:n], stream)
        copied.record(stream)
        if not self.execution.execute_async_v3(stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        computed.record(stream)
        cuda.memcpy_dtoh_async(self.host_out[:n], self.dev_out, stream)
        done.record(stream)
        stream.synchronize()
        self.last_timings = {"h2d_ms": copied.time_since(start),
                             "compute_ms": computed.time_since(copied),
                             "d2h_ms": done.time_since(computed)}
        return np.array(self.host_out[:n], dtype=np.float32)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.context.push()
        try:
            self.dev_in.free()
            self.dev_out.free()
        finally:
            self.context.pop()
            self.context.detach()
