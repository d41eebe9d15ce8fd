import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge.errors import UserError
from edge.inference.bundle import load_bundle
from ssum.cli import main
from trainer.export import export_bundle, measure_receptive_field, unit_range_model
from trainer.presets import preset
from trainer.toy import write_toy_pairs
from trainer.train import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    pairs = write_toy_pairs(root / "pairs", n=4, size=48, seed=5)
    train(preset("tiny", epochs=1), pairs, root / "run")
    out = root / "bundle"
    assert main(["export", "--checkpoint", str(root / "run" / "checkpoints" / "best.pt"),
                 "--out", str(out), "--name", "tiny-test", "--patch-size", "64"]) == 0
    return out


def test_bundle_validates_and_describes_the_model(bundle):
    b = load_bundle(bundle)
    assert b.name == "tiny-test"
    io = b.io
    assert (io["input_name"], io["output_name"], io["spatial_multiple"]) == ("osr", "sem", 4)
    assert io["overlap"] % 4 == 0 and io["overlap"] >= io["receptive_margin"] > 0
    assert {m.kind for m in b.models()} == {"onnx", "torch_export", "torchscript"}
    assert b.manifest["training"]["epochs"] == 1
    assert b.manifest["architecture"]["blocks"] == 1


def test_onnx_graph_is_clean_and_matches_torch_export_program(bundle):
    graph = onnx.load(str(bundle / "generator.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "BatchNormalization" not in ops and {"Conv", "DepthToSpace", "Tanh"} <= ops
    session = ort.InferenceSession(str(bundle / "generator.onnx"),
                                   providers=["CPUExecutionProvider"])
    program = torch.export.load(str(bundle / "generator.pt2")).module()
    x = np.random.default_rng(0).random((3, 1, 52, 100), dtype=np.float32)
    onnx_out = session.run(["sem"], {"osr": x})[0]
    torch_out = program(torch.from_numpy(x)).detach().numpy()
    assert onnx_out.shape == x.shape
    assert 0.0 <= onnx_out.min() and onnx_out.max() <= 1.0
    assert np.abs(onnx_out - torch_out).max() < 1e-4


def test_sha256_check_catches_a_modified_file(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with open(copy / "generator.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserError, match="sha256"):
        load_bundle(copy)


def test_a_cyclegan_exports_its_reverse_generator_and_the_trust_statistics(bundle):
    b = load_bundle(bundle)
    reverse = b.reverse
    assert reverse is not None and reverse.path.name == "reverse.onnx"
    assert reverse.entry["direction"] == "sem->osr" and reverse.entry["receptive_margin"] > 0
    session = ort.InferenceSession(str(reverse.path), providers=["CPUExecutionProvider"])
    assert ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]) \
        == (["sem"], ["osr"])
    trust = b.manifest["trust"]
    assert trust["images"] == 4 and "cycle" in trust  # the run's own training pairs
    assert trust["source"]["data"] == b.manifest["training"]["data"]


def test_measured_margin_bounds_the_influence_of_an_input_pixel(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    margin = manifest["io"]["receptive_margin"]
    session = ort.InferenceSession(str(bundle / "generator.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, 1, 128, 128), dtype=np.float32)
    base = session.run(["sem"], {"osr": x})[0]
    poked = x.copy()
    poked[0, 0, 64, 64] = 1.0 - poked[0, 0, 64, 64]
    diff = np.abs(session.run(["sem"], {"osr": poked})[0] - base)[0, 0]
    ys, xs = np.nonzero(diff > 0)
    reach = max(np.abs(ys - 64).max(), np.abs(xs - 64).max())
    assert 0 < reach <= margin


def test_export_bundle_api_on_untrained_generator(tmp_path):
    from trainer.models import Generator, init_weights

    torch.manual_seed(0)
    g = Generator(4, 1)
    init_weights(g)
    out = export_bundle(g.eval(), tmp_path / "b", "api", 10.0, {"kind": "identity"},
                        patch_size=64)
    b = load_bundle(out)
    assert b.manifest["preprocessing"] == {"kind": "identity"}
    field, margin = measure_receptive_field(unit_range_model(g))
    assert b.io["receptive_field"] == field and field == 2 * margin + 1


def test_export_rejects_a_non_checkpoint(tmp_path):
    bogus = tmp_path / "x.pt"
    torch.save({"hello": 1}, bogus)
    assert main(["export", "--checkpoint", str(bogus), "--out", str(tmp_path / "o")]) == 2
