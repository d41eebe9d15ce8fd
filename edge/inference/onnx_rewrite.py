"""Graph rewrites applied to a bundle's ONNX model before ONNX Runtime loads it on CPU.

A convolution with one output channel and a large kernel (the generator's last 7x7 layer, 64
maps to 1) is 3 % of the network's FLOPs but about a quarter of its CPU time in ONNX Runtime:
its kernels are built for many output channels. `split_single_channel_convs` computes it as a
1x1 convolution to k*k maps (one per kernel tap: a well-shaped matrix product) followed by the
sum of the k*k maps, each shifted by its tap. The arithmetic is the same (the order of the sums
differs: outputs agree to float rounding); the bundle's files are not changed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MIN_KERNEL = 3  # smaller kernels gain nothing


def node_attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _splittable(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or node.input[1] not in weights:
        return False
    w, attrs = weights[node.input[1]], node_attributes(node)
    square = w.ndim == 4 and w.shape[0] == 1 and w.shape[2] == w.shape[3] >= MIN_KERNEL
    plain = (attrs.get("group", 1) == 1 and set(attrs.get("strides", [1, 1])) == {1}
             and set(attrs.get("dilations", [1, 1])) == {1} and not any(attrs.get("pads", [0]))
             and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))
    bias_ok = len(node.input) < 3 or not node.input[2] or node.input[2] in weights
    return square and plain and bias_ok


def _split(node: onnx.NodeProto, weights: dict[str, np.ndarray], tag: str
           ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    w = weights[node.input[1]]
    k = w.shape[2]
    taps = np.ascontiguousarray(w[0].transpose(1, 2, 0).reshape(k * k, w.shape[1], 1, 1))
    maps = f"{tag}_taps"
    inits = [numpy_helper.from_array(taps.astype(w.dtype), f"{tag}_taps_w")]
    nodes = [helper.make_node("Conv", [node.input[0], inits[0].name], [maps], name=f"{tag}_1x1")]
    shifted = []
    for t in range(k * k):
        i, j = divmod(t, k)
        ends = [t + 1, -(k - 1 - i) or np.iinfo(np.int64).max, -(k - 1 - j) or np.iinfo(np.int64).max]
        names = [f"{tag}_s{t}_{p}" for p in ("starts", "ends", "axes")]
        for name, values in zip(names, ([t, i, j], ends, [1, 2, 3]), strict=True):
            inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        shifted.append(f"{tag}_tap{t}")
        nodes.append(helper.make_node("Slice", [maps, *names], [shifted[-1]], name=f"{tag}_slice{t}"))
    if len(node.input) > 2 and node.input[2]:
        bias = weights[node.input[2]].reshape(1, 1, 1, 1)
        inits.append(numpy_helper.from_array(bias.astype(w.dtype), f"{tag}_bias"))
        shifted.append(inits[-1].name)
    nodes.append(helper.make_node("Sum", shifted, list(node.output), name=f"{tag}_sum"))
    return nodes, inits


def split_single_channel_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` with every single-output-channel k x k Conv (k >= 3, unit stride and
    dilation, no padding of its own, constant weights) split as the module says; and how many."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    weights = {init.name: numpy_helper.to_array(init) for init in out.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in out.graph.node:
        if _splittable(node, weights):
            new_nodes, inits = _split(node, weights, f"split{count}")
            nodes.extend(new_nodes)
            out.graph.initializer.extend(inits)
            count += 1
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {name for node in out.graph.node for name in node.input}
    kept = [init for init in out.graph.initializer if init.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out, count
