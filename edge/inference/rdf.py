"""A bundle in the field's format: a BioImage Model Zoo resource description (`rdf.yaml`,
model format 0.5) beside the manifest, with a test input and output, and the manifest's key
fields in the ONNX files' `metadata_props`.

rdf.yaml is written as JSON, which is YAML: every YAML reader reads it. The description names
the ONNX weights (and TorchScript weights when the export made them), the axes with their unit
and pixel size, the halo from the measured receptive margin, the value range, and the test
tensors that tools check the model against (`bioimageio test`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edge.inference.bundle import Bundle

RDF = "rdf.yaml"
FORMAT_VERSION = "0.5.4"
TEST_SIDE = 64  # at least; more when the halo needs it
CITE = {"text": "Sun et al., Microsystems & Nanoengineering 11, 252 (2025): high depth-of-field "
                "SEM-like imaging with a scanning superlens microscope and a CycleGAN",
        "url": "https://www.nature.com/micronano/"}
METADATA_KEYS = ("name", "pixel_size_nm", "io.spatial_multiple", "io.value_range",
                 "io.receptive_margin", "io.patch_size", "preprocessing")


def onnx_metadata(manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest's key fields as ONNX metadata_props (strings; nested values as JSON)."""
    out = {}
    for key in METADATA_KEYS:
        value: Any = manifest
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            out[f"ssum.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def stamp_onnx(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest's key fields into an ONNX file's metadata_props (weights untouched)."""
    model = onnx.load(str(path))
    fields = onnx_metadata(manifest)
    kept = [p for p in model.metadata_props if p.key not in fields]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in fields.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "ssum-edge"
    onnx.save(model, str(path))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file(path: Path) -> dict[str, str]:
    return {"source": path.name, "sha256": _sha256(path)}


def _min_side(io: dict[str, Any]) -> int:
    """The smallest input side with something left after the halo on both sides."""
    step = int(io["spatial_multiple"])
    return -(-(2 * int(io.get("receptive_margin", 0)) + step) // step) * step


def _test_tensors(bundle: Bundle) -> tuple[Path, Path]:
    """A deterministic test input and the FP32 ONNX model's output for it, as .npy files."""
    rng = np.random.default_rng(0)
    side = max(TEST_SIDE, _min_side(bundle.io))
    x = rng.random((1, 1, side, side), dtype=np.float32)
    session = ort.InferenceSession(str(bundle.model("onnx", "fp32").path),
                                   providers=["CPUExecutionProvider"])
    io = bundle.io
    (y,) = session.run([str(io["output_name"])], {str(io["input_name"]): x})
    inputs, outputs = bundle.path / "test_input.npy", bundle.path / "test_output.npy"
    np.save(inputs, x)
    np.save(outputs, np.asarray(y, np.float32))
    return inputs, outputs


def _axes(io: dict[str, Any], pixel_nm: float, output: bool) -> list[dict[str, Any]]:
    step = int(io["spatial_multiple"])
    space = []
    for axis in ("y", "x"):
        entry: dict[str, Any] = {"type": "space", "id": axis, "unit": "nanometer",
                                 "scale": pixel_nm}
        if output:
            entry["size"] = {"tensor_id": str(io["input_name"]), "axis_id": axis}
            entry["halo"] = int(io.get("receptive_margin", 0))
        else:
            entry["size"] = {"min": _min_side(io), "step": step}
        space.append(entry)
    name = str(io["output_name" if output else "input_name"])
    return [{"type": "batch"}, {"type": "channel", "channel_names": [name]}, *space]


def write_rdf(bundle: Bundle, torchscript: Path | None = None, torch_version: str = "") -> Path:
    """Write rdf.yaml and the test tensors into the bundle directory; returns rdf.yaml.
    `torchscript`: TorchScript weights of the same network (default: the manifest's entry)."""
    if torchscript is None:
        entry = next((m for m in bundle.models() if m.kind == "torchscript"), None)
        if entry is not None:
            torchscript, torch_version = entry.path, str(entry.entry.get("torch_version", ""))
    manifest, io = bundle.manifest, bundle.io
    pixel_nm = float(manifest.get("pixel_size_nm", 10.0))
    test_in, test_out = _test_tensors(bundle)
    onnx_model = bundle.model("onnx", "fp32")
    data = {"type": "float32", "range": [float(v) for v in io["value_range"]]}
    weights: dict[str, Any] = {"onnx": {"source": onnx_model.path.name,
                                        "sha256": onnx_model.sha256,
                                        "opset_version": int(onnx_model.entry.get("opset", 18))}}
    if torchscript is not None:
        weights["torchscript"] = {**_file(torchscript), "pytorch_version": torch_version}
    rdf = {
        "format_version": FORMAT_VERSION, "type": "model", "name": bundle.name,
        "description": "Optical super-resolution (SSUM) tile to SEM-like image, one channel "
                       "in [0, 1]; the OSR->SEM generator of a CycleGAN (ssum-edge bundle).",
        "authors": [{"name": "ssum-edge"}], "cite": [CITE], "license": "MIT",
        "documentation": "README.md", "tags": ["super-resolution", "image-to-image", "sem",
                                               "semiconductor", "cyclegan", "2d"],
        "version": str(manifest.get("created", "1"))[:10].replace("-", "."),
        "inputs": [{"id": str(io["input_name"]), "axes": _axes(io, pixel_nm, False),
                    "test_tensor": _file(test_in),
                    "data": data}],
        "outputs": [{"id": str(io["output_name"]), "axes": _axes(io, pixel_nm, True),
                     "test_tensor": _file(test_out),
                     "data": data}],
        "weights": weights,
        "config": {"ssum-edge": {"manifest": "manifest.json",
                                 "preprocessing": bundle.preprocessing}},
    }
    readme = bundle.path / "README.md"
    if not readme.is_file():
        readme.write_text(f"# {bundle.name}\n\nAn ssum-edge model bundle: manifest.json lists "
                          "its files with their sha256; rdf.yaml describes it for BioImage "
                          "Model Zoo tools.\n\n# Validation\n\nThe figures the model was "
                          "released with are in manifest.json (`evaluation`) and, for the "
                          "shipped model, in the project's docs/results.md.\n")
    target = bundle.path / RDF
    target.write_text(json.dumps(rdf, indent=2) + "\n")
    return target
