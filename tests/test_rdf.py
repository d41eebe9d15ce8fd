"""Bundles in the field's format: the exported rdf.yaml validates with the BioImage Model Zoo's
own validator, its test tensors are what the model computes, and the ONNX files carry the
manifest's key fields."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edge.inference.bundle import load_bundle
from edge.inference.rdf import RDF
from ssum.cli import main


def test_the_exported_rdf_validates(tiny_bundle_source):
    spec = pytest.importorskip("bioimageio.spec", reason="bioimageio.spec is not installed")
    description = spec.load_description(tiny_bundle_source / RDF, perform_io_checks=True)
    assert type(description).__name__ == "ModelDescr", description.validation_summary
    assert set(description.weights.model_fields_set) >= {"onnx", "torchscript"}
    halo = description.outputs[0].axes[2].halo
    assert halo == load_bundle(tiny_bundle_source).io["receptive_margin"]


def test_the_test_tensors_are_what_the_model_computes(tiny_bundle_source):
    rdf = json.loads((tiny_bundle_source / RDF).read_text())  # JSON is YAML
    x = np.load(tiny_bundle_source / rdf["inputs"][0]["test_tensor"]["source"])
    y = np.load(tiny_bundle_source / rdf["outputs"][0]["test_tensor"]["source"])
    session = ort.InferenceSession(str(tiny_bundle_source / rdf["weights"]["onnx"]["source"]),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["sem"], {"osr": x})[0], y, atol=1e-6)
    assert rdf["inputs"][0]["axes"][2] | {"size": None} == {
        "type": "space", "id": "y", "unit": "nanometer", "scale": 10.0, "size": None}


def test_the_onnx_files_carry_the_manifests_key_fields(tiny_bundle_source):
    bundle = load_bundle(tiny_bundle_source)
    session = ort.InferenceSession(str(bundle.model("onnx", "fp32").path),
                                   providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["ssum.name"] == bundle.name
    assert json.loads(meta["ssum.io.receptive_margin"]) == bundle.io["receptive_margin"]
    assert json.loads(meta["ssum.pixel_size_nm"]) == 10.0


def test_bundle_rdf_writes_it_for_an_existing_bundle(tiny_bundle, capsys):
    (tiny_bundle / RDF).unlink()
    assert main(["bundle", "rdf", str(tiny_bundle)]) == 0
    assert (tiny_bundle / RDF).is_file()
    assert main(["bundle", "info", str(tiny_bundle)]) == 0
    assert "with rdf.yaml" in capsys.readouterr().out
