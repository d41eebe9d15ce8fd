"""The one converter of a bundle: raw image -> preprocessing -> patches -> backend -> blended image.

Every caller builds it with `Converter.from_bundle` (the daemon, `ssum convert`, the calibration
gate, the benchmarks); the daemon's pipeline uses its parts separately to batch patches across
tiles. The converter owns its backend: `close()` (or leaving a `with` block) releases it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import to_float01
from edge.inference.backends import BACKENDS, Backend, load_backend
from edge.inference.backends.base import BoundedBackend
from edge.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.inference.bundle import PRECISIONS, Bundle, load_bundle, sha256_file
from edge.inference.memory import return_freed_memory
from edge.inference.preprocess import PreprocessParams, preprocess, reach
from edge.inference.streaming import ReadRows, convert_rows
from edge.inference.tiling import WINDOWS, Tiler, TilerLike, convert_image
from edge.inference.trust import MIN_SIDE, Measurement, TrainingStatistics, TrustJudge, TrustResult

log = logging.getLogger(__name__)

PATCHING = ("auto", "fit", "fixed")
# max_batch 0 picks the batch for the device the backend runs on. On a CPU, ONNX Runtime converts
# a 512 px patch as fast alone as in any batch, and a batch of 8 is slower and 4 GB larger
# (bench/run.py's batch sweep); a GPU needs several patches per call to fill it.
CPU_BATCH = 1
GPU_BATCH = 8


def batch_for(max_batch: int, device: str) -> int:
    """max_batch, or when it is 0 the batch for `device` ("cpu", "cuda:0", ...)."""
    return max_batch or (CPU_BATCH if device.startswith("cpu") else GPU_BATCH)


@dataclass(frozen=True)
class ConverterSettings:
    """How to serve a bundle. patching: "fit" plans for each image the fewest, largest patches
    of at most max_pixels (one patch when the image fits), "fixed" uses patch_size patches
    (TensorRT's profile shape), "auto" is fixed for TensorRT or when patch_size is set, fit
    otherwise; max_pixels also bounds the input pixels of one inference call (the runtime's
    working memory grows with it); patch_size 0: the bundle's; overlap 0: the bundle's measured
    receptive margin; threads 0: all cores; max_batch 0: chosen for the device the backend runs
    on (`batch_for`); model_file: serve this ONNX file instead of the
    bundle's model of `precision` (the calibration gate scores candidates before they join the
    bundle); trust: also load what the trust score needs (the bundle's training statistics and
    its SEM->OSR generator, run on ONNX Runtime, when it has them; docs/trust.md): the daemon
    and `ssum convert` ask for it, callers that only convert do not; invert_input: the
    microscope shows the materials in the reverse order of brightness to the bundle's
    training data (metal dark on a bright oxide, say): every input is taken as 1 - x before
    anything else, the trust score included (docs/conversion.md#input-polarity)."""

    backend: str = "onnxruntime"
    precision: str = "fp32"
    device: str = ""
    threads: int = 0
    max_batch: int = 0
    window: str = "hann"
    patch_size: int = 0
    overlap: int = 0
    patching: str = "auto"
    max_pixels: int = 4 * 2**20
    model_file: Path | None = None
    trust: bool = False
    invert_input: bool = False

    def __post_init__(self) -> None:
        for name, value, choices in (("backend", self.backend, BACKENDS),
                                     ("precision", self.precision, PRECISIONS),
                                     ("window", self.window, WINDOWS),
                                     ("patching", self.patching, PATCHING)):
            if value not in choices:
                raise UserError(f"unknown {name} {value!r} (choose from {', '.join(choices)})")
        if self.max_batch < 0:
            raise UserError(f"the batch size must be at least 1 (or 0: chosen for the device), "
                            f"got {self.max_batch}")
        if self.max_pixels < 1:
            raise UserError(f"the pixels per patch must be at least 1, got {self.max_pixels}")


@dataclass
class Converter:
    """Raw pixels -> `prepare` -> tiler.split -> backend.infer -> tiler.merge."""

    backend: Backend
    tiler: TilerLike
    prepare: Callable[[np.ndarray], np.ndarray]  # raw pixels -> the network's input
    name: str
    sha256: str
    max_batch: int = 8
    prepare_margin: int | None = 0  # rows `prepare` reads around a row; None: the whole image
    judge: TrustJudge | None = None  # the trust score's, when the settings ask for it
    measured: Callable[[np.ndarray], np.ndarray] = to_float01  # raw pixels -> float [0, 1]

    @classmethod
    def from_bundle(cls, bundle: Bundle | str | Path,
                    settings: ConverterSettings = ConverterSettings()) -> Converter:
        """Load (and verify) the bundle and the backend the settings name."""
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        params = PreprocessParams.from_dict(bundle.preprocessing)
        backend, sha256 = _open_backend(bundle, settings)
        try:
            tiler = _tiler(bundle.io, settings, backend.name)
        except UserError:
            backend.close()
            raise

        measured = _inverted if settings.invert_input else to_float01

        def prepare(raw: np.ndarray) -> np.ndarray:
            return preprocess(measured(np.asarray(raw)), params)

        converter = cls(BoundedBackend(backend, settings.max_pixels), tiler, prepare,
                        bundle.name, sha256, batch_for(settings.max_batch, backend.device),
                        reach(params), measured=measured)
        if settings.trust:
            try:
                converter.judge = _judge(bundle, settings)
            except BaseException:
                converter.close()
                raise
        return converter

    @property
    def label(self) -> str:
        """`name@sha256-prefix`, the model identity carried in converted-tile headers."""
        return f"{self.name}@{self.sha256[:12]}"

    @property
    def model_info(self) -> dict[str, str]:
        """The labels of the daemon's model_info metric."""
        backend = self.backend
        return {"name": self.name, "sha256": self.sha256, "backend": backend.name,
                "precision": backend.precision, "device": str(backend.device or "")}

    def convert(self, raw: np.ndarray) -> np.ndarray:
        """One image of any size, float32 (H, W); values are the network's, not clipped."""
        return convert_image(self.prepare(raw), self.backend, self.tiler, self.max_batch)

    def convert_rows(self, read: ReadRows, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        """The same image as consecutive blocks of rows, read (`read(y0, y1)`: raw rows) and
        converted one band of patches at a time (edge.inference.streaming); in one block when
        the preprocessing needs the whole image."""
        if self.prepare_margin is None or not isinstance(self.tiler, Tiler):
            yield self.convert(read(0, shape[0]))
            return
        yield from convert_rows(read, shape, self.prepare, self.prepare_margin, self.backend,
                                self.tiler, self.max_batch)

    def trust(self, raw: np.ndarray, converted: np.ndarray,
              with_map: bool = True) -> TrustResult | None:
        """The trust score of a converted image (and its block map); None when the bundle has no
        training statistics, trust was not asked for, or the image is under MIN_SIDE px."""
        judge = self.judge
        if judge is None or judge.statistics is None or min(np.shape(raw)) < MIN_SIDE:
            return None
        return judge.judge(self.measured(np.asarray(raw)), self.prepare(raw), converted, with_map)

    def measure(self, raw: np.ndarray) -> Measurement:
        """What the trust score measures on an image (converting it only when the cycle needs
        the output): how `ssum bundle stats` records the training data's figures."""
        if self.judge is None:
            raise UserError("this converter was loaded without trust (ConverterSettings.trust)")
        converted = self.convert(raw) if self.judge.cycles else None
        return self.judge.measure(self.measured(np.asarray(raw)), self.prepare(raw), converted)

    def warm_up(self, shape: tuple[int, int] | None = None) -> float:
        """One full batch of patches of `shape` (default: the fixed patch): the first run of a
        shape allocates the runtime's memory arena (GBs at 512 px on the CPU), which would
        otherwise slow the first tiles. Seconds."""
        size = int(getattr(self.tiler, "patch_size", 0))
        height, width = shape or (size, size)
        if not height or not width:
            return 0.0
        bound = int(getattr(self.backend, "max_pixels", 0)) // (height * width)
        count = max(1, min(self.max_batch, bound) if bound else self.max_batch)
        start = time.monotonic()
        self.backend.infer(np.zeros((count, 1, height, width), np.float32))
        seconds = time.monotonic() - start
        log.info("backend warmed up with a batch of %d patches of %dx%d px in %.2f s", count,
                 height, width, seconds)
        return seconds

    def close(self) -> None:
        """Release the backend and give its memory back (a daemon swaps models for weeks)."""
        self.backend.close()
        if self.judge is not None:
            self.judge.close()
        return_freed_memory()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _tiler(io: dict, settings: ConverterSettings, backend: str) -> Tiler:
    """The tiler of the settings; the context is the receptive margin the bundle measured."""
    margin = int(io.get("receptive_margin", io["overlap"]))
    fit = settings.patching == "fit" or (settings.patching == "auto" and backend != "tensorrt"
                                         and not settings.patch_size)
    tiler = Tiler(settings.patch_size or int(io["patch_size"]), settings.overlap or margin,
                  multiple=int(io["spatial_multiple"]), window=settings.window,
                  fit_pixels=settings.max_pixels if fit else 0)
    if tiler.overlap < margin:
        log.warning("tiling overlap %d px is below the model's receptive margin (%d px): "
                    "patch seams will not match whole-image conversion", tiler.overlap, margin)
    return tiler


def _judge(bundle: Bundle, settings: ConverterSettings) -> TrustJudge:
    """The trust judge of a bundle: its training statistics (None: measure only) and its
    SEM->OSR generator, served like the forward one but always on ONNX Runtime fp32."""
    data = bundle.manifest.get("trust")
    statistics = None
    if data is not None:
        statistics = TrainingStatistics.from_manifest(data, f"bundle {bundle.path}: trust")
    entry = bundle.reverse
    if entry is None or (statistics is not None and statistics.cycle_tile is None):
        return TrustJudge(statistics)
    backend = OnnxRuntimeBackend(entry.path, "fp32", settings.device or None,
                                 settings.threads or None)
    margin = int(entry.entry.get("receptive_margin", bundle.io.get("receptive_margin", 0)))
    io = {**bundle.io, "receptive_margin": margin, "overlap": max(margin, bundle.io["overlap"])}
    reverse = Converter(BoundedBackend(backend, settings.max_pixels),
                        _tiler(io, settings, backend.name), _unit_range, bundle.name,
                        entry.sha256, batch_for(settings.max_batch, backend.device))
    return TrustJudge(statistics, reverse.convert, reverse.close)


def _inverted(raw: np.ndarray) -> np.ndarray:
    return 1.0 - to_float01(raw)


def _unit_range(image: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(image, np.float32), 0.0, 1.0)


def _open_backend(bundle: Bundle, settings: ConverterSettings) -> tuple[Backend, str]:
    """The backend and the sha256 of the model file it serves."""
    backend: Backend
    if settings.model_file is not None:
        backend = OnnxRuntimeBackend(settings.model_file, settings.precision,
                                     settings.device or None, settings.threads or None)
        return backend, sha256_file(settings.model_file)
    backend = load_backend(bundle, settings.backend, settings.precision, settings.device or None,
                           settings.threads or None, settings.max_batch or GPU_BATCH)
    try:
        served = bundle.model("onnx", backend.precision)
    except UserError:
        served = bundle.model("onnx", "fp32")
    return backend, served.sha256
