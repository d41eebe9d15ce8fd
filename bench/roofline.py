"""What the hardware could do: the network's FLOP per pixel, counted from the ONNX graph, and
the CPU's FP32 peak, estimated from its clock and vector width."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort


def conv_flop_per_pixel(onnx_path: Path, size: int = 256) -> float:
    """FLOP per input pixel of the graph's Conv nodes (2 per multiply-add: weights x output
    positions), from their output shapes on one size x size input. The other nodes (pads,
    activations, adds) are below 1 % and not counted."""
    model = onnx.load(str(onnx_path))
    weights = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n.output[0],
                                                                 onnx.TensorProto.FLOAT, None)
                              for n in convs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run([n.output[0] for n in convs],
                          {session.get_inputs()[0].name: np.zeros((1, 1, size, size), np.float32)})
    flop = sum(2 * weights[n.input[1]] * out.shape[2] * out.shape[3]
               for n, out in zip(convs, outputs))
    return flop / size**2


def cpu_peak() -> dict[str, Any]:
    """FP32 peak of the cores this process may use: cores x clock x lanes x 2 (FMA) x 2 FMA
    units per core (assumed: true of current server cores, half that on some)."""
    flags: set[str] = set()
    mhz = 0.0
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "cpu MHz" and not mhz:
            mhz = float(value)
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    cores = len(os.sched_getaffinity(0))
    return {"gflops": cores * mhz / 1000 * lanes * 2 * 2, "cores": cores, "mhz": mhz,
            "fp32_lanes": lanes, "fma_units_assumed": 2,
            "formula": "cores x GHz x lanes x 2 (FMA) x 2 FMA units"}
