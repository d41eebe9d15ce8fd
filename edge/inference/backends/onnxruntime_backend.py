"""ONNX Runtime backend: CPU by default, the CUDA provider when installed and asked for."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edge.errors import UserError
from edge.inference.backends.base import check_batch
from edge.inference.onnx_rewrite import split_single_channel_convs
from edge.inference.qdq_rewrite import integer_operators

log = logging.getLogger(__name__)


def cpu_graph(model_path: str | Path) -> bytes:
    """The model as ONNX Runtime runs it on CPU: single-output-channel convolutions split into
    shapes its kernels run fast (edge/inference/onnx_rewrite.py), an INT8 Q/DQ model written with
    integer operators (edge/inference/qdq_rewrite.py)."""
    model, count = split_single_channel_convs(onnx.load(str(model_path)))
    model, integer = integer_operators(model)
    if count or integer:
        log.debug("%s: %d single-channel convolution(s) split, %d operator(s) made integer, "
                  "for the CPU", model_path, count, integer)
    return model.SerializeToString()


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model_path: str | Path, precision: str = "fp32", device: str | None = None,
                 threads: int | None = None, rewrite: bool = True,
                 options: ort.SessionOptions | None = None) -> None:
        """rewrite: run the CPU graph rewrite (on by default; benches turn it off to compare);
        options: session options to start from (e.g. with profiling on)."""
        options = options or ort.SessionOptions()
        options.intra_op_num_threads = int(threads or 0)
        options.inter_op_num_threads = 1
        # Batch sizes vary (partial batches at deadlines and scan ends); with memory patterns on,
        # ONNX Runtime re-plans on every shape change, which cost ~1.6 s on a 512 px batch of 8.
        options.enable_mem_pattern = False
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ONNX Runtime's threads spin after each call by default; in the daemon they would take
        # the cores from the stages that publish the tile just converted (p99 added latency
        # 7.4-7.8 ms spinning, 3.8-4.0 ms not, inference time the same: docs/results.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
        self.device = "cpu"
        if device and device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = int(device.partition(":")[2] or 0)
                providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
                self.device = f"cuda:{index}"
            else:
                log.warning("ONNX Runtime has no CUDA provider here; running on the CPU")
        try:
            cpu = self.device == "cpu" and rewrite
            model = cpu_graph(model_path) if cpu else str(model_path)
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as exc:  # onnx and onnxruntime raise their own exception types
            raise UserError(f"{model_path}: ONNX Runtime cannot load it ({exc})") from exc
        self.precision = precision
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{model_path}: expected one input and one output")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32

    def infer(self, batch: np.ndarray) -> np.ndarray:
        array = check_batch(batch).astype(self.input_dtype, copy=False)
        (out,) = self.session.run([self.output_name], {self.input_name: array})
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
