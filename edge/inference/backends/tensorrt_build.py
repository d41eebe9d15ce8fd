"""Build TensorRT engines from a bundle's ONNX (TensorRT 10 API, valid on 11).

Strongly typed network: precision comes from the ONNX itself (Q/DQ nodes for INT8, float16
tensors for FP16); no precision builder flags and no calibrators. One optimisation profile
covers the daemon's batches of patches; a persistent timing cache speeds up rebuilds.
Lives in edge/ because the daemon builds a missing engine at start-up.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import UserError
from edge.inference.bundle import Bundle
from edge.inference.engine_cache import EngineCache, EngineKey

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE = 1 << 30


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max NCHW shapes of the input tensor."""

    input_name: str
    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    @classmethod
    def for_patches(cls, input_name: str, patch_size: int, max_batch: int) -> ShapeProfile:
        return cls(input_name, (1, 1, patch_size, patch_size),
                   (max_batch, 1, patch_size, patch_size), (max_batch, 1, patch_size, patch_size))


def require_tensorrt() -> None:
    """UserError naming what is missing when TensorRT or pycuda cannot be imported."""
    try:
        importlib.import_module("tensorrt")
        importlib.import_module("pycuda.driver")
    except (ImportError, OSError) as exc:
        raise UserError(f"TensorRT and pycuda are needed to build engines ({exc}); install the "
                        "GPU extra on the edge box (docs/tensorrt.md)") from exc


def gpu_facts(device_index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") via pycuda."""
    import pycuda.driver as cuda

    cuda.init()
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    return str(device.name()), f"{major}.{minor}"


def engine_key(bundle: Bundle, precision: str, profile: ShapeProfile, workspace_bytes: int,
               device_index: int = 0) -> EngineKey:
    import tensorrt as trt

    gpu_name, capability = gpu_facts(device_index)
    return EngineKey(bundle.model("onnx", precision).sha256, gpu_name, capability, trt.__version__,
                     precision, (profile.min, profile.opt, profile.max), workspace_bytes,
                     (("network", "strongly_typed"),))


def build_engine(onnx_path: Path, profile: ShapeProfile, workspace_bytes: int,
                 timing_cache_path: Path) -> bytes:
    """Serialized engine for the ONNX model; RuntimeError with the parser's errors on failure."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    shapes = builder.create_optimization_profile()
    shapes.set_shape(profile.input_name, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)),
                     trt.Dims(list(profile.max)))
    config.add_optimization_profile(shapes)
    _load_timing_cache(config, timing_cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see its log)")
    timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
    timing_cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _load_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    """Reuse earlier tactic timings; a cache from another GPU or TensorRT is replaced."""
    previous = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(previous)
    if cache is None or not config.set_timing_cache(cache, False):
        log.warning("timing cache %s does not fit this GPU or TensorRT; starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


def ensure_engine(bundle: Bundle, precision: str, max_batch: int, cache: EngineCache,
                  workspace_bytes: int = DEFAULT_WORKSPACE, device_index: int = 0) -> tuple[Path, EngineKey]:
    """The cached engine for this bundle, precision, GPU and profile; built and stored if absent."""
    io = bundle.io
    profile = ShapeProfile.for_patches(str(io["input_name"]), int(io["patch_size"]), max_batch)
    key = engine_key(bundle, precision, profile, workspace_bytes, device_index)
    found = cache.lookup(key)
    if found is not None:
        return found, key
    start = time.monotonic()
    log.info("building the TensorRT engine for %s (%s, batch <= %d); this takes minutes",
             bundle.name, precision, max_batch)
    engine = build_engine(bundle.model("onnx", precision).path, profile, workspace_bytes,
                          cache.timing_cache_path())
    path = cache.store(key, engine)
    log.info("engine %s built in %.0f s", path, time.monotonic() - start)
    return path, key
