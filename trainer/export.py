"""Export of a trained generator as a model bundle (`ssum export`, the tests' tiny bundles).

The bundle holds generator.onnx (for onnxruntime/TensorRT) and generator.pt2 (a torch.export
program for the daemon's PyTorch backend), both of a wrapper whose input "osr" and output "sem"
are float32 NCHW in [0, 1], with BatchNorm folded into the convolutions and dynamic batch,
height and width (multiples of 4). A CycleGAN checkpoint also gives reverse.onnx, its SEM->OSR
generator (input "sem", output "osr"), which the trust score's cycle runs; the training data's
trust statistics are recorded in the manifest (`record_statistics`, also `ssum bundle stats`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edge.errors import UserError
from edge.inference.bundle import Bundle, load_bundle, model_entry, write_manifest
from edge.inference.converter import Converter, ConverterSettings
from edge.inference.rdf import stamp_onnx, write_rdf
from edge.inference.trust import TrainingStatistics

log = logging.getLogger(__name__)

ALLOWED_ONNX_OPS = {"Conv", "LeakyRelu", "DepthToSpace", "Add", "Tanh", "Pad", "Mul", "Sub",
                    "Div", "Constant", "Identity", "Reshape", "Transpose", "Shape", "Slice",
                    "Concat", "Unsqueeze", "Gather", "Cast", "ConstantOfShape"}
VERIFY_SHAPES = ((1, 1, 64, 64), (2, 1, 96, 128), (1, 1, 132, 76))
FORWARD_NAMES, REVERSE_NAMES = ("osr", "sem"), ("sem", "osr")  # ONNX (input, output)
REVERSE_FILE = "reverse.onnx"


def export_checkpoint(checkpoint: Path, out_dir: Path, name: str | None = None,
                      patch_size: int = 256, data: Path | None = None) -> Path:
    """The bundle of a training checkpoint's OSR->SEM generator (and of its SEM->OSR one, when
    the checkpoint has it); name defaults to the run's. The trust statistics are recorded from
    `data` (default: the folder the run was trained on), when it is there."""
    import torch

    path = Path(checkpoint)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != "ssum-train-checkpoint":
        raise UserError(f"{path}: not an ssum training checkpoint")
    generator = generator_from_checkpoint(state)
    reverse = generator_from_checkpoint(state, "g_ba") if "g_ba" in state["nets"] else None
    training = {**state["training"], "checkpoint": str(path)}
    if "data_origin" not in training:  # checkpoints written before data_origin was recorded
        from trainer.train import data_origin

        training.pop("data_seed", None)
        training["data_origin"] = data_origin(Path(training.get("data", "")))
    bundle = export_bundle(generator, Path(out_dir), name or path.resolve().parents[1].name,
                           state["pixel_size_nm"], state["preprocessing"],
                           state.get("evaluation") or None, training, patch_size, reverse)
    data = data or (Path(training["data"]) if training.get("data") else None)
    if data is not None and data.is_dir():
        record_statistics(bundle, data)
    else:
        log.warning("no training data at %s: the bundle has no trust statistics (record them: "
                    "ssum bundle stats %s --data PAIRS)", data, bundle)
    return bundle


def generator_from_checkpoint(state: dict[str, Any], net: str = "g_ab") -> Any:
    """The checkpoint's generator `net` (g_ab: OSR->SEM, g_ba: SEM->OSR), in eval mode."""
    from trainer.models import build_generator
    from trainer.presets import TrainConfig

    generator = build_generator(TrainConfig.from_dict(state["config"]))
    generator.load_state_dict(state["nets"][net])
    return generator.eval()


def unit_range_model(generator: Any) -> Any:
    """The eval-mode generator, BatchNorm folded, mapping [0, 1] -> [-1, 1] -> tanh -> [0, 1]."""
    from torch import nn

    from trainer.models import fold_batchnorm

    class UnitRange(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, osr: Any) -> Any:
            return (self.net(osr * 2.0 - 1.0) + 1.0) * 0.5

    return UnitRange(fold_batchnorm(generator)).eval()


def measure_receptive_field(model: Any, multiple: int = 4, start: int = 64) -> tuple[int, int]:
    """(receptive field, margin) in px, measured from the network: the gradient of a
    multiple x multiple block of output pixels (every phase of the stride-4 grid) with respect
    to a mid-grey input; margin is how far the nonzero gradient reaches beyond the block, the
    worst case over phases, and the field is 2 * margin + 1. The input grows until the
    footprint no longer reaches its border."""
    import torch

    size = start
    while True:
        x = torch.full((1, 1, size, size), 0.5, requires_grad=True)
        c = size // 2
        model(x)[0, 0, c:c + multiple, c:c + multiple].sum().backward()
        assert x.grad is not None
        rows, cols = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
        last = c + multiple - 1
        margin = int(max(c - rows.min(), rows.max() - last, c - cols.min(), cols.max() - last))
        if margin < c - multiple:
            return 2 * margin + 1, margin
        size *= 2


def export_bundle(generator: Any, out_dir: Path, name: str, pixel_size_nm: float,
                  preprocessing: dict, evaluation: dict | None = None,
                  training: dict | None = None, patch_size: int = 256,
                  reverse: Any = None) -> Path:
    """Write generator.onnx, generator.pt2 (torch.export), generator.torchscript.pt,
    manifest.json and the BioImage Model Zoo rdf.yaml into out_dir (with `reverse`, the SEM->OSR
    generator, also reverse.onnx); verify the ONNX models against PyTorch at several sizes.
    Returns out_dir."""
    import torch

    start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = unit_range_model(generator.cpu())
    field, margin = measure_receptive_field(model)
    overlap = int(math.ceil(margin / 4) * 4)
    program = _export_program(model)
    torch.export.save(program, out_dir / "generator.pt2")
    onnx_path = _export_onnx(program, out_dir / "generator.onnx")
    max_diff = verify_onnx(model, onnx_path)
    scripted = out_dir / "generator.torchscript.pt"
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 1, 64, 64)), str(scripted))
    manifest = {
        "format": "ssum-bundle", "format_version": 1, "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": [model_entry(onnx_path, "fp32", "onnx", opset=_opset(onnx_path)),
                   model_entry(out_dir / "generator.pt2", "fp32", "torch_export",
                               torch_version=torch.__version__),
                   model_entry(scripted, "fp32", "torchscript", torch_version=torch.__version__)],
        "io": {"input_name": "osr", "output_name": "sem", "channels": 1, "value_range": [0, 1],
               "spatial_multiple": 4, "patch_size": patch_size, "overlap": overlap,
               "receptive_field": field, "receptive_margin": margin},
        "pixel_size_nm": pixel_size_nm,
        "preprocessing": preprocessing,
        "architecture": generator.describe() if hasattr(generator, "describe") else {},
        "training": training or {},
        "evaluation": evaluation or {},
        "export": {"onnx_max_abs_diff": max_diff, "duration_s": round(time.monotonic() - start, 1)},
    }
    stamp_onnx(onnx_path, manifest)  # metadata only: the weights, and their outputs, are the same
    manifest["models"][0] = model_entry(onnx_path, "fp32", "onnx", opset=_opset(onnx_path))
    if reverse is not None:
        manifest["reverse"] = export_reverse(reverse, out_dir)
    write_manifest(out_dir, manifest)
    write_rdf(load_bundle(out_dir), scripted, torch.__version__)
    log.info("bundle %s: receptive field %d px, overlap %d px, ONNX max |diff| %.2e",
             out_dir, field, overlap, max_diff)
    return out_dir


def export_reverse(generator: Any, out_dir: Path) -> dict[str, Any]:
    """reverse.onnx, the SEM->OSR generator as the forward one is exported; its manifest entry
    (with its own measured receptive field)."""
    model = unit_range_model(generator.cpu())
    field, margin = measure_receptive_field(model)
    path = _export_onnx(_export_program(model), out_dir / REVERSE_FILE, REVERSE_NAMES)
    max_diff = verify_onnx(model, path, names=REVERSE_NAMES)
    return model_entry(path, "fp32", "onnx", opset=_opset(path), direction="sem->osr",
                       receptive_field=field, receptive_margin=margin,
                       onnx_max_abs_diff=max_diff)


def record_statistics(bundle_dir: Path, data_dir: Path,
                      settings: ConverterSettings | None = None) -> dict[str, Any]:
    """Measure the trust statistics of the OSR images of a pairs folder (osr/, sem/; the data
    the model was trained on) with the bundle's own code, and record them in its manifest
    (`trust`). With a reverse generator the cycle of each image is measured too (each is
    converted). A changed manifest loses its signature (sign it again). Returns `trust`."""
    from trainer.data import load_pairs
    from trainer.train import data_origin

    data_dir = Path(data_dir)
    loaded = load_bundle(bundle_dir)
    pairs = load_pairs(data_dir)
    origin = data_origin(data_dir)
    trained_on = loaded.manifest.get("training", {}).get("data_origin")
    if trained_on and trained_on != origin:
        log.warning("%s is not the data the model was trained on (%s, manifest: %s): the trust "
                    "score will measure the distance to it instead", data_dir, origin, trained_on)
    unrecorded = Bundle(loaded.path, {k: v for k, v in loaded.manifest.items() if k != "trust"})
    start = time.monotonic()
    serving = replace(settings or ConverterSettings(), trust=True)
    with Converter.from_bundle(unrecorded, serving) as converter:
        assert converter.judge is not None
        cycles = converter.judge.cycles
        measurements = [converter.measure(image) for image in pairs.osr]
    statistics = TrainingStatistics.of(measurements)
    trust = statistics.to_manifest({
        "data": str(data_dir), "data_origin": origin, "cycle": cycles,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - start, 1)})
    write_manifest(loaded.path, {**loaded.manifest, "trust": trust})
    log.info("bundle %s: trust statistics of %d images (%d blocks)%s from %s", loaded.path,
             statistics.images, statistics.blocks, ", with the cycle" if cycles else "",
             data_dir)
    return trust


def _export_program(model: Any) -> Any:
    import torch
    from torch.export import Dim

    batch, h4, w4 = Dim("batch", min=1, max=1024), Dim("h4", min=2, max=4096), \
        Dim("w4", min=2, max=4096)
    example = torch.rand(2, 1, 64, 64)
    return torch.export.export(model, (example,),
                               dynamic_shapes={"osr": {0: batch, 2: 4 * h4, 3: 4 * w4}})


def _export_onnx(program: Any, path: Path, names: tuple[str, str] = FORWARD_NAMES) -> Path:
    import torch

    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.onnx.export(program, (torch.rand(2, 1, 64, 64),), str(path), input_names=[names[0]],
                      output_names=[names[1]], opset_version=18, dynamo=True,
                      external_data=False, optimize=True)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    unexpected = ops - ALLOWED_ONNX_OPS
    if unexpected:
        raise RuntimeError(f"unexpected ONNX ops in the exported generator: {sorted(unexpected)}")
    return path


def _opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def verify_onnx(model: Any, onnx_path: Path, shapes: tuple = VERIFY_SHAPES,
                tolerance: float = 1e-4, names: tuple[str, str] = FORWARD_NAMES) -> float:
    """Largest |onnxruntime - PyTorch| over random inputs of several shapes; raises above
    tolerance."""
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng, worst = np.random.default_rng(0), 0.0
    for shape in shapes:
        x = rng.random(shape, dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run([names[1]], {names[0]: x})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst >= tolerance:
        raise RuntimeError(f"ONNX output differs from PyTorch by {worst:.2e} (>= {tolerance})")
    return worst
