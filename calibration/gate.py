"""The quality gate: a quantized variant must stay within a PSNR budget of the FP32 model.

Every variant converts the held-out OSR images through the serving path (the bundle's converter)
and is scored by the evaluation harness against the SEM reference; its loss is the FP32 model's
mean PSNR to the SEM minus the variant's. PSNR to the FP32 output is reported too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edge.inference.bundle import Bundle
from edge.inference.converter import Converter, ConverterSettings
from trainer.evaluation.harness import evaluate_arrays
from trainer.evaluation.metrics import psnr


def convert_holdout(bundle: Bundle, model_path: Path,
                    holdout: list[tuple[str, np.ndarray, np.ndarray]],
                    threads: int = 0) -> list[np.ndarray]:
    """The held-out OSR images converted by the bundle's serving path with this ONNX file."""
    settings = ConverterSettings(threads=threads, model_file=model_path)
    with Converter.from_bundle(bundle, settings) as converter:
        return [converter.convert(osr) for _, osr, _ in holdout]


def score(outputs: list[np.ndarray], holdout: list[tuple[str, np.ndarray, np.ndarray]],
          pixel_size_nm: float, reference_outputs: list[np.ndarray] | None = None) -> dict[str, float]:
    """Mean harness figures against the SEM, and mean PSNR to the FP32 outputs when given."""
    rows = [evaluate_arrays(np.clip(out, 0, 1), osr, sem, pixel_size_nm)
            for out, (_, osr, sem) in zip(outputs, holdout)]
    result = {"psnr_sem_db": float(np.mean([r["psnr"] for r in rows])),
              "ssim_sem": float(np.mean([r["ssim"] for r in rows]))}
    if reference_outputs is not None:
        result["psnr_fp32_db"] = float(np.mean([psnr(np.clip(a, 0, 1), np.clip(b, 0, 1))
                                                for a, b in zip(outputs, reference_outputs)]))
    return result


def layer_sensitivity(fp32_path: Path, int8_path: Path, patches: np.ndarray) -> dict[str, float]:
    """Per-Conv error the INT8 graph adds: for each Conv output (in graph order), its relative
    RMS error against FP32 minus the largest error among the Convs before it."""
    names = [n.output[0] for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "Conv"]
    node_of = {n.output[0]: n.name for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "Conv"}
    outputs = []
    for path in (fp32_path, int8_path):
        model = onnx.load(str(path))
        have = {o for n in model.graph.node for o in n.output}
        model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                                  for name in names if name in have)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        wanted = [o.name for o in session.get_outputs()[1:]]
        outputs.append(dict(zip(wanted, session.run(wanted, {"osr": patches}))))
    sensitivity, worst_so_far = {}, 0.0
    for name in names:
        if name not in outputs[0] or name not in outputs[1]:
            continue
        ref, got = outputs[0][name], outputs[1][name]
        error = float(np.sqrt(np.mean((got - ref) ** 2)) / (np.sqrt(np.mean(ref**2)) + 1e-12))
        sensitivity[node_of[name]] = max(0.0, error - worst_so_far)
        worst_so_far = max(worst_so_far, error)
    return sensitivity


def verdict(fp32: dict[str, float], variant: dict[str, float], threshold_db: float) -> dict[str, Any]:
    loss = fp32["psnr_sem_db"] - variant["psnr_sem_db"]
    return {**variant, "psnr_loss_db": loss, "threshold_db": threshold_db,
            "passed": bool(loss <= threshold_db)}
