"""The CPU graph rewrite: a single-output-channel k x k convolution computed as a 1x1
convolution to k*k maps and a sum of shifted maps gives the same output, and only such
convolutions are rewritten."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.inference.bundle import load_bundle
from edge.inference.onnx_rewrite import split_single_channel_convs
from edge.inference.qdq_rewrite import integer_operators


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _conv_model(out_channels: int, kernel: int, strides: int = 1, pads: int = 0,
                bias: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(kernel + out_channels)
    w = rng.normal(size=(out_channels, 5, kernel, kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=out_channels).astype(np.float32), "b"))
        inputs.append("b")
    conv = helper.make_node("Conv", inputs, ["y"], strides=[strides] * 2, pads=[pads] * 4)
    graph = helper.make_graph(
        [conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(("kernel", "bias"), [(7, True), (3, False), (5, True)])
def test_a_single_channel_conv_is_split_and_gives_the_same_output(kernel, bias):
    model = _conv_model(1, kernel, bias=bias)
    split, count = split_single_channel_convs(model)
    assert count == 1 and "Sum" in {n.op_type for n in split.graph.node}
    assert "w" not in {init.name for init in split.graph.initializer}  # the old weight is gone
    onnx.checker.check_model(split)
    x = np.random.default_rng(0).normal(size=(2, 5, 23, 31)).astype(np.float32)
    np.testing.assert_allclose(_run(split, x), _run(model, x), rtol=0, atol=2e-5)


@pytest.mark.parametrize("model", [_conv_model(2, 7), _conv_model(1, 1), _conv_model(1, 7, strides=2),
                                   _conv_model(1, 7, pads=3)])
def test_other_convs_are_left_as_they_are(model):
    split, count = split_single_channel_convs(model)
    assert count == 0 and [n.op_type for n in split.graph.node] == ["Conv"]


def test_the_cpu_backend_runs_the_rewritten_generator_to_the_bundles_output(tiny_bundle_source):
    path = load_bundle(tiny_bundle_source).model("onnx", "fp32").path
    assert split_single_channel_convs(onnx.load(str(path)))[1] == 1  # the generator's last layer
    x = np.random.default_rng(1).random((2, 1, 64, 96), dtype=np.float32)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = plain.run(None, {plain.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(OnnxRuntimeBackend(path).infer(x), expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def int8_generator(tmp_path_factory, tiny_bundle_source):
    """The tiny generator quantized as `ssum calibrate` does for the CPU (symmetric int8 Q/DQ)."""
    from calibration.quantize import quantize_int8

    path = load_bundle(tiny_bundle_source).model("onnx", "fp32").path
    patches = np.random.default_rng(3).random((8, 1, 64, 64), dtype=np.float32)
    return quantize_int8(path, tmp_path_factory.mktemp("int8") / "int8.onnx", patches, "max")


def test_the_int8_model_as_integer_operators_gives_onnxruntimes_own_output(int8_generator):
    model = onnx.load(str(int8_generator))
    rewritten, count = integer_operators(model)
    ops = [n.op_type for n in rewritten.graph.node]
    assert count > 0 and {"QLinearConv", "QLinearLeakyRelu", "QLinearAdd"} <= set(ops)
    assert "DepthToSpace" not in ops and ops.count("Transpose") == 6  # both upsamplers channels-last
    producer = {o: n for n in rewritten.graph.node for o in n.output}
    pads = [n for n in rewritten.graph.node if n.op_type == "Pad"]
    assert any(producer.get(p.input[0]) is not None
               and producer[p.input[0]].op_type in ("QLinearLeakyRelu", "QLinearAdd") for p in pads)
    assert ops.count("DequantizeLinear") < [n.op_type for n in model.graph.node].count("DequantizeLinear")
    x = np.random.default_rng(4).random((2, 1, 64, 96), dtype=np.float32)
    np.testing.assert_array_equal(_run(rewritten, x), _run(model, x))


def test_a_model_without_symmetric_int8_activations_is_left_as_it_is(int8_generator):
    model = onnx.load(str(int8_generator))
    zero = next(n.input[2] for n in model.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in {i.name for i in model.graph.initializer})
    for init in model.graph.initializer:
        if init.name == zero:
            init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zero))
    rewritten, count = integer_operators(model)
    assert count == 0 and [n.op_type for n in rewritten.graph.node] == [n.op_type for n in model.graph.node]
    assert integer_operators(_conv_model(2, 3))[1] == 0  # a float model
