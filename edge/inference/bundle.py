"""The model bundle: a directory with manifest.json and model files, each pinned by sha256.

Contract between trainer (writes it), calibration (adds quantized variants) and edge (reads it).
See docs/bundle.md for every manifest key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.files import read_json
from edge.inference.signing import drop_signature, load_trusted_keys, verify_bundle

MANIFEST = "manifest.json"
FORMAT = "ssum-bundle"
FORMAT_VERSION = 1
MODEL_KINDS = ("onnx", "torch_export", "torchscript")
PRECISIONS = ("fp32", "fp16", "int8")
REQUIRED_IO_KEYS = (
    "input_name", "output_name", "channels", "value_range", "spatial_multiple",
    "patch_size", "overlap", "receptive_field",
)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_bundle_path() -> Path:
    """The bundle used when none is named: $SSUM_BUNDLE, else models/default of this checkout."""
    env = os.environ.get("SSUM_BUNDLE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models" / "default"


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str
    precision: str
    kind: str
    entry: dict[str, Any]


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def io(self) -> dict[str, Any]:
        return dict(self.manifest["io"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.manifest.get("preprocessing", {}))

    def models(self) -> list[ModelFile]:
        return [_model_file(self.path, m) for m in self.manifest["models"]]

    @property
    def reverse(self) -> ModelFile | None:
        """The SEM->OSR generator (`reverse`), which the trust score's cycle runs; not served."""
        entry = self.manifest.get("reverse")
        return _model_file(self.path, entry) if entry else None

    def files(self) -> list[ModelFile]:
        """Every model file the manifest pins: the served ones and the reverse generator."""
        reverse = self.reverse
        return self.models() + ([reverse] if reverse is not None else [])

    def model(self, kind: str = "onnx", precision: str = "fp32") -> ModelFile:
        for model in self.models():
            if model.kind == kind and model.precision == precision:
                return model
        have = ", ".join(f"{m.kind}/{m.precision}" for m in self.models())
        raise UserError(f"bundle {self.path} has no {kind} model in {precision} (it has: {have})")

    def label(self, model: ModelFile | None = None) -> str:
        """`name@sha256-prefix`, the model identity carried in converted-tile headers."""
        model = model or self.model()
        return f"{self.name}@{model.sha256[:12]}"


def _model_file(root: Path, entry: dict[str, Any]) -> ModelFile:
    return ModelFile(root / entry["file"], entry["sha256"], entry["precision"], entry["kind"],
                     dict(entry))


def _entry_problems(entry: Any, where: str) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where} is not an object"]
    problems = [f"{where}.{key} must be a string" for key in ("file", "sha256", "precision", "kind")
                if not isinstance(entry.get(key), str)]
    if entry.get("kind") not in MODEL_KINDS:
        problems.append(f"{where}.kind must be one of {MODEL_KINDS}")
    if entry.get("precision") not in PRECISIONS:
        problems.append(f"{where}.precision must be one of {PRECISIONS}")
    return problems


def validate_manifest(manifest: Any) -> list[str]:
    """Problems with a manifest's structure (empty when valid); files are not checked here."""
    if not isinstance(manifest, dict):
        return ["manifest is not a JSON object"]
    problems = []
    if manifest.get("format") != FORMAT:
        problems.append(f"format must be {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version must be {FORMAT_VERSION}")
    if not isinstance(manifest.get("name"), str) or not manifest.get("name"):
        problems.append("name must be a non-empty string")
    io = manifest.get("io")
    if not isinstance(io, dict):
        problems.append("io must be an object")
    else:
        problems += [f"io.{k} is missing" for k in REQUIRED_IO_KEYS if k not in io]
    models = manifest.get("models")
    if not isinstance(models, list) or not models:
        return problems + ["models must be a non-empty list"]
    for i, entry in enumerate(models):
        problems += _entry_problems(entry, f"models[{i}]")
    if manifest.get("reverse") is not None:
        problems += _entry_problems(manifest["reverse"], "reverse")
        if isinstance(manifest["reverse"], dict) and manifest["reverse"].get("kind") != "onnx":
            problems.append("reverse.kind must be 'onnx'")
    if manifest.get("trust") is not None and not isinstance(manifest["trust"], dict):
        problems.append("trust must be an object")
    return problems


def load_bundle(path: str | Path, verify: bool = True,
                trusted_keys: Path | None = None) -> Bundle:
    """Read and validate a bundle; with verify, every model file must match its sha256; with
    trusted_keys (a *.sign.pub file or a directory of them), the manifest must be signed by one."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{path}: not a model bundle (no {MANIFEST})")
    manifest = read_json(manifest_path, "a model bundle manifest")
    problems = validate_manifest(manifest)
    if problems:
        raise UserError(f"{manifest_path}: " + "; ".join(problems))
    bundle = Bundle(path, manifest)
    if verify:
        for model in bundle.files():
            if not model.path.is_file():
                raise UserError(f"bundle {path}: model file {model.path.name} is missing")
            actual = sha256_file(model.path)
            if actual != model.sha256:
                raise UserError(
                    f"bundle {path}: {model.path.name} does not match its sha256 "
                    f"(manifest {model.sha256[:12]}, file {actual[:12]}); refusing to load it"
                )
    if trusted_keys is not None:
        verify_bundle(path, load_trusted_keys(trusted_keys))
    return bundle


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:
    problems = validate_manifest(manifest)
    if problems:
        raise ValueError("invalid manifest: " + "; ".join(problems))
    target = Path(path) / MANIFEST
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    if target.is_file() and target.read_text() != text:
        drop_signature(Path(path))
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    return target


def model_entry(path: str | Path, precision: str, kind: str, **extra: Any) -> dict[str, Any]:
    """A manifest `models` entry for a file inside the bundle directory."""
    path = Path(path)
    return {"file": path.name, "sha256": sha256_file(path), "precision": precision,
            "kind": kind, **extra}


def add_model(bundle_dir: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Add or replace (same kind and precision) a model entry in a bundle's manifest."""
    bundle = load_bundle(bundle_dir, verify=False)
    manifest = dict(bundle.manifest)
    manifest["models"] = [
        m for m in manifest["models"]
        if (m["kind"], m["precision"]) != (entry["kind"], entry["precision"])
    ] + [entry]
    write_manifest(bundle_dir, manifest)
    return manifest
