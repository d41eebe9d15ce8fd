"""INT8 (explicit Q/DQ) and FP16 variants of a bundle's FP32 ONNX generator.

Both INT8 targets use symmetric int8 with zero-points 0 and per-channel weights, and keep the
precision-sensitive layers in float: the first and last convolutions, the output Tanh and the
sub-pixel DepthToSpace are never quantized.
- target "tensorrt": the layout TensorRT wants (NVIDIA's ModelOpt settings): only Conv inputs
  are quantized, Conv outputs are left to TensorRT's own fusion, LeakyRelu stays in float.
- target "cpu": Conv outputs, LeakyRelu, Pad and Add are quantized too, so ONNX Runtime fuses
  them into integer kernels (the Conv-inputs-only graph runs no faster than FP32 on a CPU).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from edge.errors import UserError

log = logging.getLogger(__name__)

METHODS = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
           "max": CalibrationMethod.MinMax}
TENSORRT_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": False,
    "OpTypesToExcludeOutputQuantization": ["Conv"],
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
}


class PatchReader(CalibrationDataReader):
    """Feeds calibration patches [N, 1, P, P] to ONNX Runtime's calibrator, `batch` at a time."""

    def __init__(self, patches: np.ndarray, input_name: str = "osr", batch: int = 4) -> None:
        self.patches, self.input_name, self.batch = patches, input_name, batch
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.patches), self.batch):
            yield {self.input_name: np.ascontiguousarray(self.patches[i : i + self.batch], np.float32)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def conv_nodes(model_path: str | Path) -> list[str]:
    """Names of the Conv nodes, in graph (topological) order."""
    return [n.name for n in onnx.load(str(model_path)).graph.node if n.op_type == "Conv"]


def input_side(model_path: str | Path, node_names: list[str]) -> list[str]:
    """The given nodes plus the Pad nodes that feed them (a quantized Pad would quantize the
    input of a Conv that is meant to stay in float)."""
    nodes = onnx.load(str(model_path)).graph.node
    producer = {o: n for n in nodes for o in n.output}
    by_name = {n.name: n for n in nodes}
    names = list(node_names)
    for name in node_names:
        node = producer.get(by_name[name].input[0])
        while node is not None and node.op_type == "Pad":
            names.append(node.name)
            node = producer.get(node.input[0])
    return names


TARGETS = {"cpu": ["Conv", "LeakyRelu", "Pad", "Add"], "tensorrt": ["Conv"]}


def quantize_int8(fp32_path: Path, out_path: Path, patches: np.ndarray, method: str = "entropy",
                  exclude: list[str] | None = None, target: str = "cpu") -> Path:
    """Write a Q/DQ INT8 model; `exclude` names further Conv nodes to keep in float."""
    if method not in METHODS:
        raise UserError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
    if target not in TARGETS:
        raise UserError(f"unknown INT8 target {target!r} (choose from {', '.join(TARGETS)})")
    convs = conv_nodes(fp32_path)
    keep_float = sorted(set(input_side(fp32_path, [convs[0], convs[-1], *(exclude or [])])))
    with tempfile.TemporaryDirectory(prefix="ssum-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        options: dict = dict(TENSORRT_OPTIONS)
        if target == "cpu":
            del options["OpTypesToExcludeOutputQuantization"]
        if method == "percentile":
            options["CalibPercentile"] = 99.999
        if method == "max":  # ranges merged every 4 batches: memory independent of the set size
            options["CalibMaxIntermediateOutputs"] = 4
        quantize_static(
            str(prepared), str(out_path), PatchReader(patches),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, per_channel=True, calibrate_method=METHODS[method],
            op_types_to_quantize=TARGETS[target], nodes_to_exclude=keep_float, extra_options=options,
        )
    log.info("INT8 Q/DQ model %s (%s target, %s calibration, %d of %d convs in float)", out_path,
             target, method, len(set(keep_float) & set(convs)), len(convs))
    return out_path


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """FP16 weights and activations inside, float32 input and output (same I/O contract)."""
    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path
