"""An INT8 Q/DQ model as integer operators, for ONNX Runtime on CPU.

The bundle's INT8 model is in the Q/DQ layout (TensorRT's, and ONNX Runtime's too): every
quantized tensor is a `QuantizeLinear` followed by `DequantizeLinear`, around float operators.
ONNX Runtime fuses `DQ -> Conv -> Q` and `DQ -> LeakyRelu -> Q` into integer kernels, but on CPU it
runs the residual `Add` and the reflect `Pad` in float between a dequantize and a quantize: on the
shipped generator, a quarter of the INT8 kernel time (bench/bench_int8.py). `integer_operators`
writes the model as ONNX Runtime's operator-oriented layout instead:

- symmetric int8 activations (zero-point 0) become uint8 with zero-point 128, the same scale
  (u8 = s8 + 128 exactly: the layout of ONNX Runtime's own fast CPU kernels);
- `DQ -> Conv -> Q` with a Q/DQ weight becomes `QLinearConv` (int8 weights per channel, the float
  bias as int32 at the input scale times the weight scale, as ONNX Runtime's fusion does);
- `DQ -> LeakyRelu -> Q` becomes `QLinearLeakyRelu`, `DQ, DQ -> Add -> Q` becomes `QLinearAdd`;
- `DQ -> Pad(reflect | edge) -> Q` and `DQ -> DepthToSpace -> Q` of one scale run on the uint8
  tensor (copies of values: exact); before a float operator, the dequantize moves after them;
- a sub-pixel `DepthToSpace` after an integer convolution is computed channels-last, as moves of
  whole pixels (the convolution's output channels reordered to match).

The output is ONNX Runtime's own for the Q/DQ model, bit for bit (tests/test_onnx_rewrite.py).
What is left of the Q/DQ layout (the float first and last layers) stays as it was. The bundle's
file is not changed; a model with an asymmetric activation, or with no Q/DQ at all, is returned
as it came.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.inference.onnx_rewrite import node_attributes

MS = "com.microsoft"
COPYING_PAD_MODES = (b"reflect", b"edge")


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = list(model.graph.node)
        self.init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        self.new_inits: dict[str, np.ndarray] = {}

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type and name not in self.outputs:
            return users[0]
        return None

    def value(self, name: str) -> np.ndarray:
        return self.new_inits[name] if name in self.new_inits else self.init[name]

    def add_init(self, name: str, value: np.ndarray) -> str:
        self.new_inits[name] = value
        return name


def _is_weight_dq(g: _Graph, dq: onnx.NodeProto) -> bool:
    q = g.op(dq.input[0], "QuantizeLinear")
    return dq.input[0] in g.init or (q is not None and q.input[0] in g.init)


def _activation_qdq(g: _Graph) -> list[onnx.NodeProto] | None:
    """The Q and DQ nodes of activations, or None when one of them is not symmetric int8."""
    quantize = [n for n in g.nodes if n.op_type == "QuantizeLinear" and n.input[0] not in g.init]
    dequantize = [n for n in g.nodes if n.op_type == "DequantizeLinear" and not _is_weight_dq(g, n)]
    found = quantize + dequantize
    for node in found:
        zero = g.init.get(node.input[2]) if len(node.input) > 2 else None
        scale = g.init.get(node.input[1])
        if zero is None or zero.dtype != np.int8 or zero.any() or scale is None or scale.size != 1:
            return None
    return found


def _to_uint8(g: _Graph, nodes: list[onnx.NodeProto]) -> None:
    for node in nodes:
        node.input[2] = g.add_init(f"{node.input[2]}_u8", np.array(128, np.uint8))


def _weight(g: _Graph, dq: onnx.NodeProto) -> tuple[str, str, str]:
    """The int8 weight of a weight DQ (folding its QuantizeLinear), its scale and zero-point."""
    q = g.op(dq.input[0], "QuantizeLinear")
    if q is None:
        return dq.input[0], dq.input[1], dq.input[2]
    w, scale = g.init[q.input[0]], g.init[q.input[1]]
    shape = (-1,) + (1,) * (w.ndim - 1) if scale.ndim else ()
    q_w = np.clip(np.rint(w / scale.reshape(shape)), -128, 127).astype(np.int8)
    return g.add_init(f"{q.input[0]}_int8", q_w), q.input[1], q.input[2]


def _conv(g: _Graph, conv: onnx.NodeProto, q: onnx.NodeProto) -> onnx.NodeProto | None:
    x_dq, w_dq = g.op(conv.input[0], "DequantizeLinear"), g.op(conv.input[1], "DequantizeLinear")
    if x_dq is None or w_dq is None or not _is_weight_dq(g, w_dq):
        return None
    w, w_scale, w_zero = _weight(g, w_dq)
    inputs = [*x_dq.input[:3], w, w_scale, w_zero, *q.input[1:3]]
    if len(conv.input) > 2 and conv.input[2]:
        bias = g.init.get(conv.input[2])
        if bias is None:
            return None
        step = g.value(x_dq.input[1]) * g.value(w_scale)
        inputs.append(g.add_init(f"{conv.input[2]}_int32", np.rint(bias / step).astype(np.int32)))
    return helper.make_node("QLinearConv", inputs, [q.output[0]], name=f"{conv.name}_qlinear",
                            **node_attributes(conv))


def _leaky_relu(g: _Graph, node: onnx.NodeProto, q: onnx.NodeProto) -> onnx.NodeProto | None:
    dq = g.op(node.input[0], "DequantizeLinear")
    if dq is None:
        return None
    alpha = node_attributes(node).get("alpha", 0.01)
    return helper.make_node("QLinearLeakyRelu", [*dq.input[:3], *q.input[1:3]], [q.output[0]],
                            name=f"{node.name}_qlinear", domain=MS, alpha=alpha)


def _add(g: _Graph, node: onnx.NodeProto, q: onnx.NodeProto) -> onnx.NodeProto | None:
    a, b = (g.op(name, "DequantizeLinear") for name in node.input)
    if a is None or b is None or _is_weight_dq(g, a) or _is_weight_dq(g, b):
        return None  # a quantized constant stays int8
    return helper.make_node("QLinearAdd", [*a.input[:3], *b.input[:3], *q.input[1:3]],
                            [q.output[0]], name=f"{node.name}_qlinear", domain=MS)


def _same_quantization(g: _Graph, dq: onnx.NodeProto, q: onnx.NodeProto) -> bool:
    return all(np.array_equal(g.value(a), g.value(b)) for a, b in zip(dq.input[1:3], q.input[1:3]))


def _moves_values(node: onnx.NodeProto) -> bool:
    """An operator that only copies values (so that it commutes with a dequantize)."""
    if node.op_type == "DepthToSpace":
        return True
    mode = node_attributes(node).get("mode", b"")
    return node.op_type == "Pad" and mode in COPYING_PAD_MODES and len(node.input) <= 3


def _move(g: _Graph, node: onnx.NodeProto, q: onnx.NodeProto | None) -> list[onnx.NodeProto] | None:
    """`DQ -> node -> Q` of one scale: the node on the uint8 tensor. `DQ -> node -> float`: the
    node on the uint8 tensor, then the dequantize (a quarter of the bytes moved)."""
    dq = g.op(node.input[0], "DequantizeLinear")
    if dq is None or _is_weight_dq(g, dq) or not _moves_values(node):
        return None
    moved = onnx.NodeProto()
    moved.CopyFrom(node)
    moved.name, moved.input[0] = f"{node.name}_uint8", dq.input[0]
    if q is not None:
        if not _same_quantization(g, dq, q):
            return None
        moved.output[0] = q.output[0]
        return [moved]
    if len(g.consumers.get(dq.output[0], [])) != 1:
        return None
    moved.output[0] = f"{node.output[0]}_uint8"
    return [moved, helper.make_node("DequantizeLinear", [moved.output[0], *dq.input[1:]],
                                    [node.output[0]], name=f"{dq.name}_after_{node.name}")]


QUANTIZED = {"Conv": _conv, "LeakyRelu": _leaky_relu, "Add": _add}  # DQ -> op -> Q only
MOVES = ("Pad", "DepthToSpace")


def integer_operators(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of `model` written with integer operators where its Q/DQ layout allows (see the
    module); and how many float operators were replaced. A model without QuantizeLinear comes
    back itself, uncopied (the FP32 and FP16 models pass here at every load)."""
    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out)
    activations = _activation_qdq(g)
    if not activations:
        return out, 0
    _to_uint8(g, activations)
    replaced: dict[int, list[onnx.NodeProto]] = {}
    dropped: set[int] = set()
    for node in g.nodes:
        q = g.only_consumer(node.output[0], "QuantizeLinear")
        new: list[onnx.NodeProto] | None = None
        if node.op_type in QUANTIZED and q is not None:
            fused = QUANTIZED[node.op_type](g, node, q)
            new = [fused] if fused is not None else None
        elif node.op_type in MOVES:
            new = _move(g, node, q)
        if new is not None:
            replaced[id(node)] = new
            if q is not None and new[-1].output[0] == q.output[0]:
                dropped.add(id(q))
    nodes = [m for n in g.nodes if id(n) not in dropped for m in replaced.get(id(n), [n])]
    nodes, subpixel = _channels_last_subpixel(g, _live(nodes, g.outputs))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    del out.graph.value_info[:]  # intermediate types changed (int8 to uint8)
    used = {name for node in nodes for name in node.input}
    inits = {**g.init, **g.new_inits}
    del out.graph.initializer[:]
    out.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items() if k in used)
    if not any(op.domain == MS for op in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS, 1))
    return out, len(replaced) + subpixel


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """The nodes that contribute to the graph's outputs, in their order."""
    needed, live = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(node.input)
    return live[::-1]


def _int64(g: _Graph, name: str, values: list[int]) -> str:
    return g.add_init(name, np.array(values, np.int64))


def _dcr_order(g: _Graph, conv: onnx.NodeProto, r: int) -> onnx.NodeProto:
    """`conv` with its output channels reordered from DepthToSpace's CRD order to DCR."""
    out_channels = g.value(conv.input[3]).shape[0]
    depth = out_channels // (r * r)
    order = np.arange(out_channels).reshape(depth, r, r).transpose(1, 2, 0).ravel()
    new = onnx.NodeProto()
    new.CopyFrom(conv)
    for index in (3, 4, 5, 8):  # weights, their scales and zero-points, bias
        if index < len(conv.input) and g.value(conv.input[index]).shape[:1] == (out_channels,):
            new.input[index] = g.add_init(f"{conv.input[index]}_dcr", g.value(conv.input[index])[order])
    return new


def _subpixel_nodes(g: _Graph, d2s: onnx.NodeProto, r: int, depth: int) -> list[onnx.NodeProto]:
    """DepthToSpace (DCR) as channels-last moves of whole pixels: [N, r*r*C, H, W] -> NHWC ->
    [N, H, W, r, r*C] -> [N, H, r, W, r*C] -> [N, H*r, W*r, C] -> NCHW. ONNX Runtime runs the
    integer convolutions channels-last, so the first transpose cancels against its own."""
    x, y, t = d2s.input[0], d2s.output[0], f"{d2s.name}_nhwc"
    return [
        helper.make_node("Transpose", [x], [f"{t}0"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", [f"{t}0", _int64(g, f"{t}_split", [0, 0, 0, r, r * depth])],
                         [f"{t}1"]),
        helper.make_node("Transpose", [f"{t}1"], [f"{t}2"], perm=[0, 1, 3, 2, 4]),
        helper.make_node("Shape", [x], [f"{t}_shape"]),
        helper.make_node("Slice", [f"{t}_shape", _int64(g, f"{t}_0", [0]), _int64(g, f"{t}_1", [1])],
                         [f"{t}_n"]),
        helper.make_node("Slice", [f"{t}_shape", _int64(g, f"{t}_2", [2]), _int64(g, f"{t}_4", [4])],
                         [f"{t}_hw"]),
        helper.make_node("Mul", [f"{t}_hw", _int64(g, f"{t}_r", [r, r])], [f"{t}_hw_r"]),
        helper.make_node("Concat", [f"{t}_n", f"{t}_hw_r", _int64(g, f"{t}_c", [depth])],
                         [f"{t}_out_shape"], axis=0),
        helper.make_node("Reshape", [f"{t}2", f"{t}_out_shape"], [f"{t}3"]),
        helper.make_node("Transpose", [f"{t}3"], [y], perm=[0, 3, 1, 2]),
    ]


def _channels_last_subpixel(g: _Graph, nodes: list[onnx.NodeProto]
                            ) -> tuple[list[onnx.NodeProto], int]:
    """Every `QLinearConv -> DepthToSpace` pair with the DepthToSpace computed channels-last
    (ONNX Runtime's DepthToSpace on uint8 is an element-wise copy, 14 ms for the generator's
    last upsampler at 512 px; this moves pixels of r*C bytes, about 2 ms). On the FP32 model,
    whose convolutions run in ONNX Runtime's blocked layout, the same gains nothing."""
    producer = {o: n for n in nodes for o in n.output}
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    swap: dict[int, list[onnx.NodeProto]] = {}
    for d2s in nodes:
        conv = producer.get(d2s.input[0]) if d2s.op_type == "DepthToSpace" else None
        if conv is None or conv.op_type != "QLinearConv" or uses[d2s.input[0]] != 1:
            continue
        attrs = node_attributes(d2s)
        r, mode = int(attrs["blocksize"]), attrs.get("mode", b"DCR")
        depth = g.value(conv.input[3]).shape[0] // (r * r)
        swap[id(conv)] = [_dcr_order(g, conv, r) if mode == b"CRD" else conv]
        swap[id(d2s)] = _subpixel_nodes(g, d2s, r, depth)
    return [m for n in nodes for m in swap.get(id(n), [n])], len(swap) // 2
