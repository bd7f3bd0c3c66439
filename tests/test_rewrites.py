"""Each rewrite on its own, on tiny synthetic graphs: still valid, same onnxruntime outputs, and the intended change.

Pure-graph tests need no TensorFlow; the two onnx2tf tests at the end check the offline guard and that a graph
onnx2tf mis-converts raw converts correctly after ``prepare_for_onnx2tf``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter._convert import rewrites

OPSET = 17


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _f32(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"/{name}/Constant", value=numpy_helper.from_array(np.asarray(value)))


def chunk_graph() -> onnx.ModelProto:
    """``x.chunk(2, dim=1)[1] * 2`` as the TorchScript exporter writes it: Shape→Gather→Add→Div→Mul→Slice."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="/Shape"),
        _const("axis", np.array([1], np.int64)),
        helper.make_node("Gather", ["shape", "axis"], ["c"], name="/Gather", axis=0),
        _const("one", np.array([1], np.int64)),
        helper.make_node("Add", ["c", "one"], ["c1"], name="/Add"),
        _const("two", np.array([2], np.int64)),
        helper.make_node("Div", ["c1", "two"], ["half"], name="/Div"),
        _const("big", np.array([1 << 30], np.int64)),
        helper.make_node("Slice", ["x", "half", "big", "axis"], ["second"], name="/Slice"),
        _const("scale", np.array(2.0, np.float32)),
        helper.make_node("Mul", ["second", "scale"], ["y"], name="/Mul"),
    ]
    return _model(nodes, [_f32("x", [1, 6, 3, 3])], [_f32("y", [1, 3, 3, 3])])


def dynamic_batch_graph(out_shape=("batch", 3, 18), channels: int | str = 6) -> onnx.ModelProto:
    """``x.reshape(n, c // 2, -1)`` with a symbolic batch: Shape→Gather(scalar 1) folds, Shape→Gather(0) stays."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="/Shape"),
        _const("i0", np.array(0, np.int64)),
        _const("i1", np.array(1, np.int64)),
        helper.make_node("Gather", ["shape", "i0"], ["n"], name="/Gather0", axis=0),
        helper.make_node("Gather", ["shape", "i1"], ["c"], name="/Gather1", axis=0),
        _const("two", np.array(2, np.int64)),
        helper.make_node("Div", ["c", "two"], ["half"], name="/Div"),
        _const("axes", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="/Unsqueeze0"),
        helper.make_node("Unsqueeze", ["half", "axes"], ["h1"], name="/Unsqueeze1"),
        _const("rest", np.array([-1], np.int64)),
        helper.make_node("Concat", ["n1", "h1", "rest"], ["target"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="/Reshape"),
    ]
    return _model(nodes, [_f32("x", ["batch", channels, 3, 3])], [_f32("y", list(out_shape))])


def normalize_graph(reader: str = "Div", leak: bool = False, a_shape=("batch", 4, 1)) -> onnx.ModelProto:
    """``F.normalize(x, dim=-1)`` with a symbolic batch as PyTorch exports it: ``x / Expand(clamp(norm), Shape(x))``
    (``reader``: the op reading the Expand; ``leak``: the Expand is a graph output too; ``a_shape``: the expanded
    tensor's shape, [batch, 4, 1] for the norm, [1, 4, 6] for one that widens the result)."""
    if a_shape == ("batch", 4, 1):
        head = [helper.make_node("ReduceL2", ["x"], ["norm"], name="/ReduceL2", axes=[-1], keepdims=1),
                _const("eps", np.array(1e-12, np.float32)),
                helper.make_node("Clip", ["norm", "eps"], ["a"], name="/Clip")]
        inits = []
    else:
        head = []
        inits = [numpy_helper.from_array(np.linspace(1, 2, 24, dtype=np.float32).reshape(a_shape), "a")]
    nodes = [*head, helper.make_node("Shape", ["x"], ["shape"], name="/Shape"),
             helper.make_node("Expand", ["a", "shape"], ["expanded"], name="/Expand"),
             helper.make_node(reader, ["expanded"] if reader == "Relu" else ["x", "expanded"], ["y"], name=f"/{reader}")]
    x = ["batch", 4, 1] if a_shape == (1, 4, 6) else ["batch", 4, 6]
    outputs = [_f32("y", ["batch", 4, 6])] + ([_f32("expanded", ["batch", 4, 6])] if leak else [])
    return _model(nodes, [_f32("x", x)], outputs, inits)


def batch_sized_graph(batch: int | str = "batch", cumsum_axis: int = 2, reader: str = "Add") -> onnx.ModelProto:
    """EdgeNeXt's positional encoding in miniature: ``x + sin(cumsum(ones((B, 4, 3)), axis))``, the ones built from
    ``x``'s batch size at run time (``cumsum_axis`` 0: rows that differ by batch; ``reader``: the op that meets
    ``x``)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="/Shape", end=1),
        _const("rest", np.array([4, 3], np.int64)),
        helper.make_node("Concat", ["shape", "rest"], ["dims"], name="/Concat", axis=0),
        helper.make_node("ConstantOfShape", ["dims"], ["ones"], name="/ConstantOfShape",
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        _const("axis", np.array(cumsum_axis, np.int64)),
        helper.make_node("CumSum", ["ones", "axis"], ["position"], name="/CumSum"),
        helper.make_node("Sin", ["position"], ["encoding"], name="/Sin"),
        helper.make_node(reader, ["x", "encoding"], ["y"], name=f"/{reader}Reader",
                         **({"axis": 2} if reader == "Concat" else {})),
    ]
    return _model(nodes, [_f32("x", [batch, 4, 3])], [_f32("y", [batch, 4, 6 if reader == "Concat" else 3])])


def dynamic_view_graph() -> onnx.ModelProto:
    """``x.view(x.size(0), 2, 3, 9)`` with a symbolic batch (after folding): Reshape(x, Concat(n, [2], [3], [9]))."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="/Shape"),
        _const("i0", np.array([0], np.int64)),
        helper.make_node("Gather", ["shape", "i0"], ["n"], name="/Gather", axis=0),
        _const("rest", np.array([2, 3, 9], np.int64)),
        helper.make_node("Concat", ["n", "rest"], ["target"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="/Reshape"),
    ]
    return _model(nodes, [_f32("x", ["batch", 6, 3, 3])], [_f32("y", ["batch", 2, 3, 9])])


def channel_shuffle_graph(batch: int | str = 1) -> onnx.ModelProto:
    """ShuffleNetV2's channel shuffle of (N, 6, 2, 2) in 3 groups: Reshape(N,3,2,2,2) → Transpose → Reshape back."""
    first = -1 if isinstance(batch, str) else batch
    inits = [
        numpy_helper.from_array(np.array([first, 3, 2, 2, 2], np.int64), "grouped"),
        numpy_helper.from_array(np.array([first, 6, 2, 2], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "grouped"], ["g"], name="/Reshape"),
        helper.make_node("Transpose", ["g"], ["t"], name="/Transpose", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "flat"], ["y"], name="/Reshape_1"),
    ]
    return _model(nodes, [_f32("x", [batch, 6, 2, 2])], [_f32("y", [batch, 6, 2, 2])], inits)


def pixel_unshuffle_graph() -> onnx.ModelProto:
    """Reshape → Transpose → Reshape that changes the shape (space-to-depth): not a single-axis permutation."""
    inits = [
        numpy_helper.from_array(np.array([1, 2, 2, 2, 2, 2], np.int64), "split"),
        numpy_helper.from_array(np.array([1, 8, 2, 2], np.int64), "merged"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "split"], ["s"], name="/Reshape"),
        helper.make_node("Transpose", ["s"], ["t"], name="/Transpose", perm=[0, 1, 3, 5, 2, 4]),
        helper.make_node("Reshape", ["t", "merged"], ["y"], name="/Reshape_1"),
    ]
    return _model(nodes, [_f32("x", [1, 2, 4, 4])], [_f32("y", [1, 8, 2, 2])], inits)


def conv_transpose_graph(kernel: int = 2, stride: int = 2, pads: tuple[int, ...] = (0, 0, 0, 0)) -> onnx.ModelProto:
    """ConvTranspose 3→4 channels on (batch, 3, 5, 5), with bias."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((3, 4, kernel, kernel)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
    ]
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="/up/ConvTranspose",
                            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=list(pads))
    size = (5 - 1) * stride + kernel - pads[0] - pads[2]
    return _model([node], [_f32("x", ["batch", 3, 5, 5])], [_f32("y", ["batch", 4, size, size])], inits)


def constant_output_graph() -> onnx.ModelProto:
    """A graph output computed from constants only (plus a real output)."""
    nodes = [
        _const("a", np.ones((2,), np.float32)),
        helper.make_node("Add", ["a", "a"], ["k"], name="/AddConst"),
        helper.make_node("Relu", ["x"], ["y"], name="/Relu"),
    ]
    return _model(nodes, [_f32("x", [1, 2])], [_f32("y", [1, 2]), _f32("k", [2])])


def buffer_output_graph() -> onnx.ModelProto:
    """Outputs that ignore the input: an initializer returned as is, and a constant computed from it and reused."""
    nodes = [
        helper.make_node("Mul", ["buf", "buf"], ["sq"], name="/Mul"),
        helper.make_node("Add", ["x", "sq"], ["y"], name="/Add"),
    ]
    buf = numpy_helper.from_array(np.arange(3, dtype=np.float32), "buf")
    return _model(nodes, [_f32("x", [1, 3])], [_f32("y", [1, 3]), _f32("buf", [3]), _f32("sq", [3])], [buf])


def constant_subgraph_graph() -> onnx.ModelProto:
    """A Hugging Face BERT's ``token_type_ids`` default, ``buffer[:, :T].expand(B, T)`` as the TorchScript exporter
    writes it (GatherElements of a 100-wide zero buffer → Expand), feeding the type embedding added to the token
    embedding of int64 ids: a constant subgraph that folding leaves (the reference evaluator's GatherElements fails
    beyond 64 elements on the gathered axis) and that raw onnx2tf turns into a Keras output it rejects."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "emb"),
        numpy_helper.from_array(rng.standard_normal((2, 8)).astype(np.float32), "types"),
        numpy_helper.from_array(np.zeros((1, 100), np.int64), "buf"),
        numpy_helper.from_array(np.arange(16, dtype=np.int64)[None], "pos"),
        numpy_helper.from_array(np.array([1, 16], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("GatherElements", ["buf", "pos"], ["tt"], name="/GatherElements", axis=1),
        helper.make_node("Expand", ["tt", "shape"], ["tte"], name="/Expand"),
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="/word/Gather"),
        helper.make_node("Gather", ["types", "tte"], ["t"], name="/type/Gather"),
        helper.make_node("Add", ["e", "t"], ["y"], name="/Add"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])],
                  [_f32("y", [1, 16, 8])], inits)


def int_buffer_output_graph() -> onnx.ModelProto:
    """Integer inputs only (token ids) and an output that ignores them (a buffer returned as is)."""
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["y"], name="/Gather")]
    inits = [numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "emb"),
             numpy_helper.from_array(np.arange(3, dtype=np.int64), "buf")]
    return _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
                  [_f32("y", [1, 5, 3]), helper.make_tensor_value_info("buf", TensorProto.INT64, [3])], inits)


def _every_op_input_dependent(m: onnx.ModelProto) -> bool:
    live = rewrites._input_dependent(m.graph)
    return all(set(n.output) <= live for n in m.graph.node if n.op_type != "Constant")


def _outputs_depend_on_inputs(m: onnx.ModelProto) -> bool:
    live = rewrites._input_dependent(m.graph)
    return all(o.name in live for o in m.graph.output) and [o.name for o in m.graph.output] == ["y", "buf", "sq"]


def big_expand_graph() -> onnx.ModelProto:
    """An Expand of a scalar to 1M elements: folding it would inflate the file, so it must stay an op."""
    nodes = [
        _const("s", np.array(1.0, np.float32)),
        _const("shape", np.array([1, 1024, 1024], np.int64)),
        helper.make_node("Expand", ["s", "shape"], ["e"], name="/Expand"),
        helper.make_node("Add", ["x", "e"], ["y"], name="/Add"),
    ]
    return _model(nodes, [_f32("x", [1, 1024, 1024])], [_f32("y", [1, 1024, 1024])])


def lstm_graph(direction: str = "forward", layout: int = 0, with_states: bool = False) -> onnx.ModelProto:
    """One LSTM over a (T=5, B=2, I=3) sequence (or (B, T, I) with layout=1), hidden 4."""
    rng = np.random.default_rng(0)
    d = 2 if direction == "bidirectional" else 1
    inits = [
        numpy_helper.from_array(rng.standard_normal((d, 16, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((d, 16, 4)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.standard_normal((d, 32)).astype(np.float32), "B"),
    ]
    inputs = ["x", "W", "R", "B"]
    if with_states:
        zeros = np.zeros((d, 2, 4) if layout == 0 else (2, d, 4), np.float32)
        inits += [numpy_helper.from_array(zeros, "h0"), numpy_helper.from_array(zeros, "c0")]
        inputs += ["", "h0", "c0"]
    node = helper.make_node(
        "LSTM", inputs, ["y"], name="/rnn/LSTM", hidden_size=4, direction=direction, layout=layout
    )
    x_shape = [5, 2, 3] if layout == 0 else [2, 5, 3]
    y_shape = [5, d, 2, 4] if layout == 0 else [2, 5, d, 4]
    return _model([node], [_f32("x", x_shape)], [_f32("y", y_shape)], inits)


def messy_names_graph() -> onnx.ModelProto:
    """TorchScript-style names: leading '/', 'onnx::' initializers, an empty node name, a clash after cleaning."""
    w = numpy_helper.from_array(np.full((1, 2), 0.5, np.float32), "onnx::Mul_12")
    nodes = [
        helper.make_node("Mul", ["in:0", "onnx::Mul_12"], ["/a/Mul_output_0"], name="/a/Mul"),
        helper.make_node("Relu", ["/a/Mul_output_0"], ["_a/Mul_output_0"], name=""),
        helper.make_node("Neg", ["_a/Mul_output_0"], ["out"], name="_a/Mul"),
    ]
    return _model(nodes, [_f32("in:0", [1, 2])], [_f32("out", [1, 2])], [w])


def pooled_stem_graph(producer: str | None = "Relu", ceil_mode: int = 0) -> onnx.ModelProto:
    """Conv -> (Relu | Clip(0, 6) | nothing) -> MaxPool(3, stride 2, pad 1): the ResNet/ShuffleNet stem."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi")]
    nodes = [_const("unused_scale", np.float32(1.0)),  # a node without inputs: rewrites must look before indexing
             helper.make_node("Conv", ["x", "w"], ["c"], name="/conv/Conv", pads=[1, 1, 1, 1])]
    if producer == "Relu":
        nodes.append(helper.make_node("Relu", ["c"], ["a"], name="/relu/Relu"))
    elif producer == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["a"], name="/relu6/Clip"))
    pooled_input = "c" if producer is None else "a"
    nodes.append(helper.make_node("MaxPool", [pooled_input], ["out"], name="/pool/MaxPool", kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=ceil_mode))
    size = 5 if ceil_mode else 4
    return _model(nodes, [_f32("x", [1, 3, 8, 8])], [_f32("out", [1, 4, size, size])], inits)


def sequence_head_graph(batch: int | str = "batch") -> onnx.ModelProto:
    """``x[B, 4, 6] @ W + bias[5]``: a Linear head on a [B, T, C] sequence."""
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "bias")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="/fc/MatMul"),
             helper.make_node("Add", ["h", "bias"], ["out"], name="/fc/Add")]
    return _model(nodes, [_f32("x", [batch, 4, 6])], [_f32("out", [batch, 4, 5])], inits)


def attention_scale_graph() -> onnx.ModelProto:
    """``q * (1 / sqrt(q.shape[-1]))`` under a dynamic batch: Shape → Slice(-1:) → Cast → Sqrt → Reciprocal."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="/attn/Shape"),
        _const("start", np.array([-1], np.int64)), _const("end", np.array([2 ** 62], np.int64)),
        helper.make_node("Slice", ["s", "start", "end"], ["d"], name="/attn/Slice"),
        helper.make_node("Cast", ["d"], ["df"], name="/attn/Cast", to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["df"], ["r"], name="/attn/Sqrt"),
        helper.make_node("Reciprocal", ["r"], ["k"], name="/attn/Reciprocal"),
        helper.make_node("Mul", ["x", "k"], ["out"], name="/attn/Mul"),
    ]
    return _model(nodes, [_f32("x", ["batch", 4, 16, 8])], [_f32("out", ["batch", 4, 16, 8])])


def seq_first_view_graph() -> onnx.ModelProto:
    """``x.view(T, B, 2, 3)`` of a seq-first ``x[4, B, 6]``, the target built from ``x.shape[:2]``."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="/view/Shape"),
        _const("zero", np.array([0], np.int64)), _const("two", np.array([2], np.int64)),
        helper.make_node("Slice", ["s", "zero", "two"], ["tb"], name="/view/Slice"),
        _const("rest", np.array([2, 3], np.int64)),
        helper.make_node("Concat", ["tb", "rest"], ["target"], name="/view/Concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["out"], name="/view/Reshape"),
    ]
    return _model(nodes, [_f32("x", [4, "batch", 6])], [_f32("out", [4, "batch", 2, 3])])


def position_slice_graph() -> onnx.ModelProto:
    """ids [1, seq] + positions[:, 0:seq] of a [1, 64] buffer: BERT's ``position_ids`` under a symbolic length."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, [1, "seq"])
    buffer = numpy_helper.from_array(np.arange(64, dtype=np.int64)[None] * 3, "positions")
    nodes = [
        helper.make_node("Shape", ["ids"], ["shape"], name="/Shape"),
        _const("one", np.array(1, np.int64)),
        helper.make_node("Gather", ["shape", "one"], ["length"], name="/Gather", axis=0),
        _const("zero_axis", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["length", "zero_axis"], ["end"], name="/Unsqueeze"),
        _const("start", np.array([0], np.int64)),
        _const("axis", np.array([1], np.int64)),
        helper.make_node("Slice", ["positions", "start", "end", "axis"], ["pos"], name="/Slice"),
        helper.make_node("Add", ["ids", "pos"], ["out"], name="/Add"),
    ]
    return _model(nodes, [ids], [out], [buffer])


def head_view_graph() -> onnx.ModelProto:
    """``q.view(*x.shape[:2], -1, 16).transpose(1, 2)`` of ``x[1, seq, 32]``: transformers' attention heads at a
    symbolic length, the target ``Concat(B, T, [-1], [16])`` read off ``Shape`` at run time."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="/Shape"),
        _const("zero", np.array(0, np.int64)), _const("one", np.array(1, np.int64)),
        helper.make_node("Gather", ["shape", "zero"], ["b"], name="/GatherB", axis=0),
        helper.make_node("Gather", ["shape", "one"], ["t"], name="/GatherT", axis=0),
        _const("axis0", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["b", "axis0"], ["b1"], name="/UnsqueezeB"),
        helper.make_node("Unsqueeze", ["t", "axis0"], ["t1"], name="/UnsqueezeT"),
        _const("rest", np.array([-1, 16], np.int64)),
        helper.make_node("Concat", ["b1", "t1", "rest"], ["target"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["heads"], name="/Reshape"),
        helper.make_node("Transpose", ["heads"], ["out"], name="/Transpose", perm=[0, 2, 1, 3]),
    ]
    return _model(nodes, [_f32("x", [1, "seq", 32])], [_f32("out", [1, 2, "seq", 16])])


def vmap_gather_graph(length="seq") -> onnx.ModelProto:
    """``x[rows, cols - 1]`` as ``torch.vmap`` exports it: GatherND on a stack of index grids (Concat of
    Unsqueeze(-1)); ``cols - 1`` reaches -1, which GatherND reads from the end."""
    rows = helper.make_tensor_value_info("rows", TensorProto.INT64, [1, length])
    cols = helper.make_tensor_value_info("cols", TensorProto.INT64, [1, length])
    nodes = [
        _const("one", np.array(1, np.int64)),
        helper.make_node("Sub", ["cols", "one"], ["shifted"], name="/Sub"),
        _const("last", np.array([-1], np.int64)),
        helper.make_node("Unsqueeze", ["rows", "last"], ["r1"], name="/UnsqueezeRows"),
        helper.make_node("Unsqueeze", ["shifted", "last"], ["c1"], name="/UnsqueezeCols"),
        helper.make_node("Concat", ["r1", "c1"], ["stack"], name="/Stack", axis=-1),
        helper.make_node("GatherND", ["x", "stack"], ["out"], name="/GatherND"),
    ]
    return _model(nodes, [_f32("x", [2, length]), rows, cols], [_f32("out", [1, length])])


def relative_distance_graph(dtype=TensorProto.INT64) -> onnx.ModelProto:
    """``abs(key_pos - query_pos)`` of T5's relative-position buckets, on positions in {0, 1} minus 1."""
    pos = helper.make_tensor_value_info("pos", dtype, [1, "seq"])
    out = helper.make_tensor_value_info("out", dtype, [1, "seq"])
    nodes = [
        _const("one", np.array(1, helper.tensor_dtype_to_np_dtype(dtype))),
        helper.make_node("Sub", ["pos", "one"], ["delta"], name="/Sub"),
        helper.make_node("Abs", ["delta"], ["out"], name="/Abs"),
    ]
    return _model(nodes, [pos], [out])


def bool_mask_expand_graph() -> onnx.ModelProto:
    """A [1, seq] mask expanded to [1, 1, seq, seq] as bool, as Hugging Face builds attention masks."""
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, [1, "seq"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, "seq", "seq"])
    nodes = [
        helper.make_node("Cast", ["mask"], ["flags"], name="/CastBool", to=TensorProto.BOOL),
        _const("axes", np.array([1, 2], np.int64)),
        helper.make_node("Unsqueeze", ["flags", "axes"], ["flags4"], name="/Unsqueeze"),
        helper.make_node("Shape", ["mask"], ["shape"], name="/Shape"),
        _const("one", np.array([1], np.int64)),
        helper.make_node("Gather", ["shape", "one"], ["length"], name="/Gather", axis=0),
        _const("ones", np.array([1, 1], np.int64)),
        helper.make_node("Concat", ["ones", "length", "length"], ["target"], name="/Concat", axis=0),
        helper.make_node("Expand", ["flags4", "target"], ["expanded"], name="/Expand"),
        helper.make_node("Cast", ["expanded"], ["out"], name="/CastFloat", to=TensorProto.FLOAT),
    ]
    return _model(nodes, [mask], [out])


def mlp_scale_graph(scale=0.5, second_reader: bool = False) -> onnx.ModelProto:
    """GELU's closing ``h * 0.5`` (a Constant node, as exported) in front of a Linear's MatMul; ``second_reader``:
    the scaled tensor is also a graph output."""
    rng = np.random.default_rng(4)
    weights = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "fc2.weight")
    nodes = [_const("half", np.asarray(scale, np.float32)),
             helper.make_node("Mul", ["x", "half"], ["h"], name="/act/Mul_1"),
             helper.make_node("MatMul", ["h", "fc2.weight"], ["y"], name="/fc2/MatMul")]
    outputs = [_f32("y", [2, 5, 3]), *([_f32("h", [2, 5, 4])] if second_reader else [])]
    return _model(nodes, [_f32("x", [2, 5, 4])], outputs, [weights])


def _bias_full_rank(m: onnx.ModelProto) -> bool:
    add = next(n for n in m.graph.node if n.op_type == "Add")
    bias = next(t for t in m.graph.initializer if t.name == add.input[1])
    return list(bias.dims) == [1, 1, 5]


# --------------------------------------------------------------------------------------------- checks


def _no_op(*ops: str) -> Callable[[onnx.ModelProto], bool]:
    return lambda m: not any(n.op_type in ops for n in m.graph.node)


def _has_op(op: str) -> Callable[[onnx.ModelProto], bool]:
    return lambda m: any(n.op_type == op for n in m.graph.node)


def _pool_padding_moved_to_zero_pad(m: onnx.ModelProto) -> bool:
    pool = next(n for n in m.graph.node if n.op_type == "MaxPool")
    pads = next(a.ints for a in pool.attribute if a.name == "pads")
    pad = next(n for n in m.graph.node if n.op_type == "Pad")
    return not any(pads) and pool.input[0] == pad.output[0] and len(pad.input) == 2  # no value input: pads 0


def _lstm_has_states(m: onnx.ModelProto) -> bool:
    lstm = next(n for n in m.graph.node if n.op_type == "LSTM")
    return len(lstm.input) >= 7 and all(lstm.input[i] for i in (5, 6))


def _names_valid(m: onnx.ModelProto) -> bool:
    g = m.graph
    internal = {t for n in g.node for t in [*n.input, *n.output] if t} - {"in:0", "out"}
    node_names = [n.name for n in g.node]
    return (
        all(rewrites._VALID_NAME.match(name) for name in [*node_names, *internal])
        and len(set(node_names)) == len(node_names)
        and [i.name for i in g.input] == ["in:0"]
        and [o.name for o in g.output] == ["out"]
    )


def _all_shapes_known(m: onnx.ModelProto) -> bool:
    known = {vi.name for vi in m.graph.value_info} | {o.name for o in m.graph.output}
    return all(o in known for n in m.graph.node for o in n.output)


def _reshape_targets(m: onnx.ModelProto) -> list[list[int]]:
    known = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return [known[n.input[1]].tolist() for n in m.graph.node if n.op_type == "Reshape" and n.input[1] in known]


def _int32_bounds(m: onnx.ModelProto) -> bool:
    """Every integer constant (the slice bounds among them) fits int32: TFLite casts strided_slice bounds to int32,
    where INT64_MAX becomes -1 (BERT's position slice came out empty in TFLite while TF was right)."""
    values = [numpy_helper.to_array(t) for t in m.graph.initializer if t.data_type == TensorProto.INT64]
    return bool(values) and all(np.abs(v).max() <= np.iinfo(np.int32).max for v in values if v.size)


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], onnx.ModelProto]
    rewrite: Callable[[onnx.ModelProto], onnx.ModelProto]
    expect: Callable[[onnx.ModelProto], bool]
    changes: bool = True
    atol: float = 0.0  # 0: bit-identical; > 0 only where a rewrite changes the summation order


CASES = [
    Case("fold_chunk_arithmetic", chunk_graph, rewrites.fold_constants, _no_op("Shape", "Gather", "Div", "Constant")),
    Case(
        "fold_static_dims_of_dynamic_batch", dynamic_batch_graph, rewrites.fold_constants,
        lambda m: _has_op("Shape")(m) and _no_op("Div")(m),
    ),
    Case(
        "wildcard_dynamic_reshape", lambda: rewrites.fold_constants(dynamic_view_graph()),
        rewrites.wildcard_dynamic_reshape, _no_op("Shape", "Gather", "Concat"),
    ),
    Case(  # (n, c // 2, -1) unfolded has two run-time entries: the proven output shape [batch, 3, 18] decides
        "wildcard_from_output_shape", dynamic_batch_graph, rewrites.wildcard_dynamic_reshape,
        lambda m: _reshape_targets(m) == [[-1, 3, 18]],
    ),
    Case(  # the same graph declaring [batch, c, 18]: ONNX's inference cannot prove c, onnxruntime's symbolic one can
        "wildcard_from_symbolic_inference", lambda: dynamic_batch_graph(out_shape=["batch", "c", 18]),
        rewrites.wildcard_dynamic_reshape, lambda m: _reshape_targets(m) == [[-1, 3, 18]],
    ),
    Case(
        # the batch and half the (symbolic) channels: two entries no inference can fix
        "wildcard_needs_one_unknown", lambda: dynamic_batch_graph(out_shape=["batch", "half", 18], channels="c"),
        rewrites.wildcard_dynamic_reshape, _has_op("Concat"), changes=False,
    ),
    Case("expand_as_broadcast", normalize_graph, rewrites.expand_as_broadcast, _no_op("Expand", "Shape")),
    Case("expand_as_broadcast_widening", lambda: normalize_graph("Sub", a_shape=(1, 4, 6)),
         rewrites.expand_as_broadcast, _no_op("Expand", "Shape")),  # x [N, 4, 1] - a [1, 4, 6]: [N, 4, 6] either way
    Case("expand_that_is_an_output_stays", lambda: normalize_graph(leak=True), rewrites.expand_as_broadcast,
         _has_op("Expand"), changes=False),
    Case("expand_read_alone_stays", lambda: normalize_graph("Relu"), rewrites.expand_as_broadcast,
         _has_op("Expand"), changes=False),  # nothing broadcasts it back
    Case("batch_invariant_as_constant", batch_sized_graph, rewrites.batch_invariant_as_constant,
         lambda m: _no_op("Shape", "ConstantOfShape", "CumSum")(m) and [list(t.dims) for t in m.graph.initializer]
         == [[1, 4, 3]]),
    Case("batch_invariant_needs_equal_rows", lambda: batch_sized_graph(cumsum_axis=0),
         rewrites.batch_invariant_as_constant, _has_op("CumSum"), changes=False),  # row b counts b + 1
    Case("batch_invariant_needs_a_broadcast", lambda: batch_sized_graph(reader="Concat"),
         rewrites.batch_invariant_as_constant, _has_op("CumSum"), changes=False),  # [1, 4, 3] would not concat
    Case("batch_invariant_needs_a_symbolic_batch", lambda: batch_sized_graph(batch=2),
         rewrites.batch_invariant_as_constant, _has_op("CumSum"), changes=False),  # fold_constants' job
    Case("shuffle_as_gather", channel_shuffle_graph, rewrites.shuffle_as_gather, _no_op("Reshape", "Transpose")),
    Case(
        "shuffle_as_gather_dynamic_batch", lambda: channel_shuffle_graph("batch"), rewrites.shuffle_as_gather,
        _no_op("Reshape", "Transpose"),
    ),
    Case(
        "shuffle_leaves_space_to_depth", pixel_unshuffle_graph, rewrites.shuffle_as_gather, _has_op("Transpose"),
        changes=False,
    ),
    Case(
        "patchwise_conv_transpose", conv_transpose_graph, rewrites.patchwise_conv_transpose,
        lambda m: _no_op("ConvTranspose")(m) and _has_op("DepthToSpace")(m), atol=1e-5,
    ),
    Case(
        "conv_transpose_overlapping_kernel_stays", lambda: conv_transpose_graph(kernel=3, pads=(1, 1, 1, 1)),
        rewrites.patchwise_conv_transpose, _has_op("ConvTranspose"), changes=False,
    ),
    Case("fold_keeps_constant_output_op", constant_output_graph, rewrites.fold_constants, _has_op("Add")),
    Case("fold_does_not_inflate", big_expand_graph, rewrites.fold_constants, _has_op("Expand")),
    Case("anchor_constant_outputs", buffer_output_graph, rewrites.anchor_constant_outputs, _outputs_depend_on_inputs),
    Case(
        "anchor_leaves_live_outputs", chunk_graph, rewrites.anchor_constant_outputs, lambda m: True, changes=False
    ),
    Case("anchor_outputs_of_integer_inputs", int_buffer_output_graph, rewrites.anchor_constant_outputs,
         lambda m: {o.name for o in m.graph.output} <= rewrites._input_dependent(m.graph)),
    Case("anchor_constant_subgraphs", constant_subgraph_graph, rewrites.anchor_constant_subgraphs,
         lambda m: _every_op_input_dependent(m) and _has_op("GatherElements")(m)),
    Case("anchor_subgraphs_leaves_live_graphs", chunk_graph, rewrites.anchor_constant_subgraphs, lambda m: True,
         changes=False),
    Case("lstm_states_forward", lstm_graph, rewrites.materialize_lstm_states, _lstm_has_states),
    Case(
        "lstm_states_bidirectional", lambda: lstm_graph("bidirectional"),
        rewrites.materialize_lstm_states, _lstm_has_states,
    ),
    Case(
        "lstm_states_already_present", lambda: lstm_graph(with_states=True),
        rewrites.materialize_lstm_states, _lstm_has_states, changes=False,
    ),
    Case("zero_pad_maxpool_after_relu", pooled_stem_graph, rewrites.zero_pad_nonnegative_maxpool,
         _pool_padding_moved_to_zero_pad),
    Case("zero_pad_maxpool_after_clip_0_6", lambda: pooled_stem_graph("Clip"), rewrites.zero_pad_nonnegative_maxpool,
         _pool_padding_moved_to_zero_pad),
    Case("maxpool_on_signed_input_stays", lambda: pooled_stem_graph(None), rewrites.zero_pad_nonnegative_maxpool,
         _no_op("Pad"), changes=False),
    Case("maxpool_ceil_mode_stays", lambda: pooled_stem_graph(ceil_mode=1), rewrites.zero_pad_nonnegative_maxpool,
         _no_op("Pad"), changes=False),
    Case("full_rank_bias_under_dynamic_batch", sequence_head_graph, rewrites.full_rank_broadcast_constants,
         _bias_full_rank),
    Case("static_batch_bias_stays", lambda: sequence_head_graph(1), rewrites.full_rank_broadcast_constants,
         lambda m: True, changes=False),
    Case("fold_static_slice_of_dynamic_shape", attention_scale_graph, rewrites.fold_constants,
         _no_op("Shape", "Slice", "Cast", "Sqrt", "Reciprocal")),
    Case("wildcard_from_partial_shape", lambda: rewrites.fold_constants(seq_first_view_graph()),
         rewrites.wildcard_dynamic_reshape, _no_op("Shape", "Slice", "Concat")),
    Case("wildcard_from_proven_output_shape", head_view_graph, rewrites.wildcard_dynamic_reshape,
         lambda m: _reshape_targets(m) == [[1, -1, 2, 16]] and _no_op("Shape", "Gather", "Concat")(m)),
    Case("gather_nd_as_flat_gather", vmap_gather_graph, rewrites.gather_nd_as_flat_gather,
         lambda m: _no_op("GatherND")(m) and _has_op("Gather")(m)),
    Case("gather_nd_at_static_shapes_stays", lambda: vmap_gather_graph(5), rewrites.gather_nd_as_flat_gather,
         lambda m: True, changes=False),
    Case("int64_abs_as_select", relative_distance_graph, rewrites.int64_abs_as_select,
         lambda m: _no_op("Abs")(m) and _has_op("Neg")(m)),
    Case("float_abs_stays", lambda: relative_distance_graph(TensorProto.FLOAT), rewrites.int64_abs_as_select,
         _has_op("Abs"), changes=False),
    Case("full_rank_dynamic_slice", position_slice_graph, rewrites.full_rank_dynamic_slices,
         lambda m: any(n.op_type == "Slice" and len(n.input) == 5 for n in m.graph.node) and _int32_bounds(m)),
    Case("static_slice_stays", chunk_graph, rewrites.full_rank_dynamic_slices, lambda m: True, changes=False),
    Case("expand_bool_as_int", bool_mask_expand_graph, rewrites.expand_bool_as_int,
         lambda m: sum(n.op_type == "Cast" for n in m.graph.node) == 4),
    Case("expand_of_floats_stays", big_expand_graph, rewrites.expand_bool_as_int, lambda m: True, changes=False),
    Case("scale_into_matmul", mlp_scale_graph, rewrites.scale_into_matmul,
         lambda m: _no_op("Mul")(m) and [t.name for t in m.graph.initializer] == ["fc2.weight/times_/act/Mul_1"]),
    Case("scale_into_matmul_rounds_once", lambda: mlp_scale_graph(0.3), rewrites.scale_into_matmul, _no_op("Mul"),
         atol=1e-6),
    Case("scale_with_a_second_reader_stays", lambda: mlp_scale_graph(second_reader=True), rewrites.scale_into_matmul,
         _has_op("Mul"), changes=False),
    Case("per_channel_scale_stays", lambda: mlp_scale_graph(np.array([0.5, 1.0, 2.0, 0.25])),
         rewrites.scale_into_matmul, _has_op("Mul"), changes=False),
    Case("sanitize_names", messy_names_graph, rewrites.sanitize_names, _names_valid),
    Case("infer_shapes", chunk_graph, rewrites.infer_shapes, _all_shapes_known),
]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)

    def value(info: onnx.ValueInfoProto) -> np.ndarray:
        shape = [d.dim_value or 2 for d in info.type.tensor_type.shape.dim]
        if info.type.tensor_type.elem_type == TensorProto.INT64:  # ids: rows of every table the graphs index
            return rng.integers(0, 2, shape).astype(np.int64)
        return rng.standard_normal(shape).astype(np.float32)

    return {i.name: value(i) for i in model.graph.input}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rewrite(case: Case) -> None:
    before = case.build()
    after = case.rewrite(before)
    onnx.checker.check_model(after, full_check=True)
    feeds = _feeds(before)
    for ref, got in zip(_run(before, feeds), _run(after, feeds), strict=True):
        np.testing.assert_allclose(got, ref, rtol=0, atol=case.atol)
    assert case.expect(after)
    changed = after.SerializeToString(deterministic=True) != before.SerializeToString(deterministic=True)
    assert changed == case.changes
    assert before.SerializeToString(deterministic=True) == case.build().SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    ("build", "applied"),
    [
        (chunk_graph, ("fold_constants", "sanitize_names", "infer_shapes")),
        (lstm_graph, ("materialize_lstm_states", "sanitize_names")),
        (constant_subgraph_graph, ("anchor_constant_subgraphs", "sanitize_names", "infer_shapes")),
    ],
    ids=["chunk", "lstm", "constant_subgraph"],
)
def test_prepare_records_applied(build: Callable[[], onnx.ModelProto], applied: tuple[str, ...], monkeypatch) -> None:
    """Each graph gets the rewrites it needs, computes the same, and costs one copy of the weights: the caller's
    graph is left as it was, and the rewrites edit that one private copy in place."""
    from converter._convert.rewrites import graph

    copies = []
    deep_copy = graph._deep_copy
    monkeypatch.setattr(graph, "_deep_copy", lambda m: copies.append(m) or deep_copy(m))
    model = build()
    prepared = rewrites.prepare_for_onnx2tf(model)
    assert len(copies) == 1
    assert model.SerializeToString(deterministic=True) == build().SerializeToString(deterministic=True)
    assert prepared.applied == applied
    names = [n.name for n in prepared.model.graph.node]  # what lets onnx2tf skip its sng4onnx naming pass
    assert all(names) and len(set(names)) == len(names)
    assert prepared.onnx2tf_kwargs["not_use_opname_auto_generate"] is True
    onnx.checker.check_model(prepared.model)
    feeds = _feeds(model)
    for ref, got in zip(_run(model, feeds), _run(prepared.model, feeds), strict=True):
        np.testing.assert_array_equal(ref, got)


def test_offline_patch_replaces_download_and_blocks_sockets() -> None:
    import socket

    import onnx2tf.onnx2tf
    import onnx2tf.utils.common_functions as common

    original = onnx2tf.onnx2tf.download_test_image_data
    with rewrites.patch_onnx2tf_offline():
        data = onnx2tf.onnx2tf.download_test_image_data()
        assert common.download_test_image_data().shape == data.shape
        with pytest.raises(rewrites.NetworkBlockedError):
            socket.create_connection(("github.com", 443), timeout=1)
        with pytest.raises(rewrites.NetworkBlockedError):
            socket.getaddrinfo("github.com", 443)
    assert data.shape == (20, 128, 128, 3) and data.dtype == np.float32
    assert 0.0 <= data.min() and data.max() <= 1.0 and data.std() > 0.1
    assert onnx2tf.onnx2tf.download_test_image_data is original


def test_offline_patch_uses_given_calibration() -> None:
    import onnx2tf.onnx2tf

    images = np.full((4, 32, 32, 3), 0.25, np.float32)
    with rewrites.patch_onnx2tf_offline(images):
        np.testing.assert_array_equal(onnx2tf.onnx2tf.download_test_image_data(), images)
    with pytest.raises(ValueError, match="NHWC"):
        with rewrites.patch_onnx2tf_offline(np.zeros((4, 3, 32, 32), np.float32)):
            pass


def channel_slice_graph() -> onnx.ModelProto:
    """Conv → ``y[:, 4:]`` (Slice with Constant-node inputs) → Conv, the pattern onnx2tf mis-slices raw."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["y"], name="/c1/Conv", pads=[1, 1, 1, 1]),
        _const("starts", np.array([4], np.int64)),
        _const("ends", np.array([8], np.int64)),
        _const("axes", np.array([1], np.int64)),
        helper.make_node("Slice", ["y", "starts", "ends", "axes"], ["s"], name="/Slice"),
        helper.make_node("Conv", ["s", "w2"], ["out"], name="/c2/Conv"),
    ]
    return _model(nodes, [_f32("x", [1, 3, 10, 10])], [_f32("out", [1, 2, 10, 10])], inits)


def test_prepared_graph_converts_correctly(tmp_path) -> None:
    import onnx2tf

    model = channel_slice_graph()
    prepared = rewrites.prepare_for_onnx2tf(model)
    x = np.random.default_rng(2).standard_normal((1, 3, 10, 10)).astype(np.float32)
    (ref,) = _run(model, {"x": x})
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with rewrites.patch_onnx2tf_offline():
            keras_model = onnx2tf.convert(
                onnx_graph=prepared.model, disable_model_save=True, non_verbose=True, **prepared.onnx2tf_kwargs
            )
    finally:
        os.chdir(cwd)
    got = np.asarray(keras_model(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("anchored", [True, False], ids=["anchored", "raw"])
def test_constant_subgraph_converts_only_anchored(tmp_path, monkeypatch, anchored: bool) -> None:
    """Without ``anchor_constant_subgraphs`` onnx2tf fails on the graph (the rest of the rewrites do not help);
    with it the Keras model computes exactly what onnxruntime does."""
    import onnx2tf

    if not anchored:
        monkeypatch.setattr(rewrites, "REWRITES",
                            tuple(r for r in rewrites.REWRITES if r[0] != "anchor_constant_subgraphs"))
    model = constant_subgraph_graph()
    prepared = rewrites.prepare_for_onnx2tf(model)
    ids = np.random.default_rng(3).integers(0, 50, (1, 16)).astype(np.int64)
    (ref,) = _run(model, {"ids": ids})
    monkeypatch.chdir(tmp_path)
    with rewrites.patch_onnx2tf_offline():
        if not anchored:  # the failure the rewrite exists for: if onnx2tf ever fixes it, this test says so
            with pytest.raises(ValueError, match="Output tensors of a Functional model must be the output"):
                onnx2tf.convert(onnx_graph=prepared.model, disable_model_save=True, non_verbose=True,
                                **prepared.onnx2tf_kwargs)
            return
        keras_model = onnx2tf.convert(onnx_graph=prepared.model, disable_model_save=True, non_verbose=True,
                                      **prepared.onnx2tf_kwargs)
    np.testing.assert_array_equal(np.asarray(keras_model(ids)), ref)


@pytest.mark.parametrize("rewritten", [True, False], ids=["rewritten", "raw"])
@pytest.mark.parametrize(("build", "rewrite", "failure"), [
    (position_slice_graph, "full_rank_dynamic_slices", "shape"),
    (bool_mask_expand_graph, "expand_bool_as_int", "DataType bool"),
], ids=["dynamic_slice", "bool_expand"])
def test_symbolic_length_graphs_convert_only_rewritten(tmp_path, monkeypatch, build, rewrite: str, failure: str,
                                                       rewritten: bool) -> None:
    """With a symbolic sequence length onnx2tf mistranslates these two graphs (a Slice of a buffer comes out with the
    wrong shape; a bool Expand cannot be multiplied); rewritten, the Keras model equals onnxruntime at two lengths."""
    import onnx2tf

    if not rewritten:
        monkeypatch.setattr(rewrites, "REWRITES", tuple(r for r in rewrites.REWRITES if r[0] != rewrite))
    model = build()
    prepared = rewrites.prepare_for_onnx2tf(model)
    name = model.graph.input[0].name
    monkeypatch.chdir(tmp_path)
    try:
        with rewrites.patch_onnx2tf_offline():
            keras_model = onnx2tf.convert(onnx_graph=prepared.model, disable_model_save=True, non_verbose=True,
                                          keep_shape_absolutely_input_names=[name], **prepared.onnx2tf_kwargs)
        results = []
        for steps in (7, 12):
            x = np.random.default_rng(steps).integers(0, 2, (1, steps)).astype(np.int64)
            (ref,) = _run(model, {name: x})
            got = np.asarray(keras_model(x))
            results.append(got.shape == ref.shape and np.array_equal(got, ref))
    except Exception as exc:  # the raw graph may fail inside onnx2tf or when Keras runs it
        assert not rewritten, exc
        assert failure in str(exc) or failure == "shape", exc
        return
    assert all(results) == rewritten, results


def test_lstm_states_follow_batch_first_layout() -> None:
    """onnxruntime cannot run layout=1 LSTMs, so this one is checked structurally: states are (B, dirs, hidden)."""
    model = rewrites.materialize_lstm_states(lstm_graph("bidirectional", layout=1))
    lstm = model.graph.node[0]
    states = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name in lstm.input[5:7]:
        assert states[name].shape == (2, 2, 4) and not states[name].any()


def test_unknown_ops_are_left_alone() -> None:
    """A custom-domain op (onnxruntime cannot run it) neither folds nor breaks shape inference or renaming."""
    nodes = [
        _const("k", np.ones((1, 2), np.float32)),
        helper.make_node("Foo", ["k"], ["f"], name="/Foo", domain="com.example"),
        helper.make_node("Add", ["x", "f"], ["y"], name="/Add"),
    ]
    graph = helper.make_graph(nodes, "g", [_f32("x", [1, 2])], [_f32("y", [1, 2])])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)]
    )
    prepared = rewrites.prepare_for_onnx2tf(model)
    assert [n.op_type for n in prepared.model.graph.node] == ["Foo", "Add"]
    assert all(rewrites._VALID_NAME.match(n.name) for n in prepared.model.graph.node)


def test_erf_as_polynomial_matches_erf_and_uses_only_tflite_builtins():
    """Exact GELU's Erf has no TFLite builtin; the replacement stays within 5e-7 of erf in float32."""
    import math

    import onnxruntime as ort
    from onnx import TensorProto, helper

    from converter._convert.rewrites.erf import MAX_ABS_ERROR, erf_as_polynomial

    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"], name="erf")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4001])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4001])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewritten = erf_as_polynomial(model)
    onnx.checker.check_model(rewritten)
    assert {n.op_type for n in rewritten.graph.node} <= {"Abs", "Mul", "Add", "Div", "Exp", "Neg", "Sub", "Sign"}
    x = np.linspace(-6, 6, 4001, dtype=np.float32)
    got = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    exact = np.array([math.erf(float(v)) for v in x])
    assert np.max(np.abs(got - exact)) <= MAX_ABS_ERROR  # measured 4.1e-7
    relu = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", graph.input, graph.output),
        opset_imports=[helper.make_opsetid("", 17)])
    assert erf_as_polynomial(relu) is relu  # no Erf: unchanged


@pytest.mark.parametrize("rewrite", [True, False], ids=["zero_pad", "raw"])
def test_full_int8_of_padded_maxpool_stem(tmp_path, rewrite: bool) -> None:
    """Raw onnx2tf pads the pool with -FLT_MAX: full-int8 TFLite then gets a ~1e36 scale and outputs garbage.
    With zero_pad_nonnegative_maxpool the same stem quantises to within a few percent of the float output."""
    import onnx2tf
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model = pooled_stem_graph()
    prepared = rewrites.prepare_for_onnx2tf(model).model if rewrite else model
    rng = np.random.default_rng(5)
    data = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(16)]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with rewrites.patch_onnx2tf_offline():
            keras_model = onnx2tf.convert(onnx_graph=prepared, disable_model_save=True, non_verbose=True,
                                          not_use_onnxsim=True)
    finally:
        os.chdir(cwd)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x.transpose(0, 2, 3, 1)] for x in data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    interpreter = Interpreter(model_content=converter.convert())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    cosines = []
    for x in data:
        (ref,) = _run(model, {"x": x})
        q, zero = inp["quantization"]
        feed = x.transpose(0, 2, 3, 1) if inp["dtype"] == np.float32 else np.clip(
            np.round(x.transpose(0, 2, 3, 1) / q + zero), -128, 127).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"]).astype(np.float32)
        q, zero = out["quantization"]
        if out["dtype"] != np.float32:
            got = (got - zero) * q
        got = got.transpose(0, 3, 1, 2).ravel()
        cosines.append(float(got @ ref.ravel() / (np.linalg.norm(got) * np.linalg.norm(ref) + 1e-30)))
    if rewrite:
        assert "PADV2" not in ops and min(cosines) > 0.99, (ops, min(cosines))
    else:  # the failure the rewrite exists for: if onnx2tf ever fixes it, this test says so
        assert "PADV2" in ops and min(cosines) < 0.9, (ops, min(cosines))


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """A Hugging Face BERT from a small config (``tests.toy_text:bert``) converted once, fp32 and fp16: (the finished
    command, its --out)."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("bert") / "out"
    result = run_cli("convert", "tests.toy_text:bert", "--input-shape", "1,16", "--input-dtype", "int64",
                     "--input-range", "0,1000", "--input-shape", "1,16", "--input-dtype", "int64", "--input-range",
                     "0,2", "--precision", "fp32,fp16", "--out", out)
    return result, out


def test_bert_from_config_converts_with_every_row_passing(bert_run) -> None:
    """Its ``token_type_ids`` buffer is the constant subgraph onnx2tf failed on before the anchoring."""
    import json

    result, out = bert_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "anchor_constant_subgraphs" in json.loads((out / "manifest.json").read_text())["rewrites"]
    report = json.loads((out / "parity.json").read_text())
    rows = {(r["runtime"], r["precision"]): r for r in report["runtimes"]}
    assert {("tflite", "fp32"), ("tflite", "fp16"), ("saved_model", "fp32"), ("onnxruntime", "fp32")} <= set(rows)
    assert report["passed"] and all(r["passed"] for r in rows.values()), rows
    assert rows[("saved_model", "fp32")]["max_rel_err"] < 1e-5 and rows[("tflite", "fp16")]["max_rel_err"] < 5e-3


def _weighted_reshape() -> onnx.ModelProto:
    """``Reshape(MatMul(x, w), shape)``: one big weight (64 x 8192) and one small shape constant."""
    w = numpy_helper.from_array(np.full((64, 8192), 0.5, np.float32), "w")
    shape = numpy_helper.from_array(np.array([2, 128, 64], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 128, 64])], [w, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_rewrites_convert_only_the_initializers_they_read(monkeypatch) -> None:
    """The rewrites' look-up of initializer values converts a weight to NumPy only when asked for it (each copy of
    every weight was 110 MB on convnext_tiny), and shape inference still sees the small constants' values and the
    weights' shapes, without copying the weights or touching the model it was given."""
    from converter._convert.rewrites import graph as graph_helpers

    model = _weighted_reshape()
    before = model.SerializeToString()
    converted: list[str] = []
    to_array = numpy_helper.to_array
    monkeypatch.setattr(graph_helpers.numpy_helper, "to_array", lambda t: converted.append(t.name) or to_array(t))
    known, _, _, shapes = graph_helpers._view(model)
    assert converted == [] and "w" in known and "shape" in known and "h" not in known and len(known) == 2
    assert known["shape"].tolist() == [2, 128, 64] and converted == ["shape"]
    known["h"] = np.zeros(1)  # a folded value sits beside the initializers
    assert "h" in known and len(known) == 3 and sorted(known) == ["h", "shape", "w"]
    assert shapes["h"] == (2, 8192) and shapes["y"] == (2, 128, 64)
    light = graph_helpers._weightless(model)
    assert [t.name for t in light.graph.initializer] == ["shape"] and "w" in {i.name for i in light.graph.input}
    assert model.SerializeToString() == before


def _gelu_graph(form: str) -> onnx.ModelProto:
    """One GELU of ``x`` [2, 5, 8] written as ``form`` says (see GELU_FORMS), then ``+ 0`` so no GELU tensor is a
    graph output unless the form makes one."""
    sqrt2, inv = np.float32(np.sqrt(2)), np.float32(1 / np.sqrt(2))
    consts = {"sqrt2": sqrt2, "inv": inv, "one": np.float32(1), "half": np.float32(0.5), "six": np.float32(0.6),
              "zero": np.float32(0)}
    node = helper.make_node
    scale = node("Div", ["x", "sqrt2"], ["u"]) if "div" in form else node("Mul", ["inv", "x"], ["u"])
    nodes = [scale, node("Erf", ["u"], ["e"]),
             node("Add", ["e", "one"] if "swapped" not in form else ["one", "e"], ["s"])]
    if "fusable" in form:
        nodes += [node("Mul", ["x", "half"], ["a"]), node("Mul", ["a", "s"], ["g"])]
    else:
        other = "y" if "other" in form else "x"
        nodes += [node("Mul", [other, "s"] if "swapped" not in form else ["s", other], ["a"]),
                  node("Mul", ["a", "six" if "0.6" in form else "half"], ["g"])]
    nodes.append(node("Add", ["g", "zero"], ["out"]))
    for k, n in enumerate(nodes):
        n.name = f"n{k}"
    spec = [2, 5, 8]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, spec)]
    if "leaked" in form:
        outputs.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, spec))
    if "constant nodes" in form:
        nodes = [node("Constant", [], [name], value=numpy_helper.from_array(v, name)) for name, v in consts.items()
                 ] + nodes
        inits = []
    else:
        inits = [numpy_helper.from_array(v, name) for name, v in consts.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, spec)
                                           for n in ("x", "y")], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


#: (form, reordered by gelu_as_fusable, Erf kept by erf_as_polynomial)
GELU_FORMS = [
    ("exported: x/sqrt2", True, True),  # PyTorch's nn.GELU(): (x * (erf(x / sqrt2) + 1)) * 0.5
    ("exported: swapped operands, x*(1/sqrt2)", True, True),
    ("exported: x/sqrt2, constant nodes", True, True),
    ("fusable: x/sqrt2", False, True),  # already (x * 0.5) * (erf + 1)
    ("not GELU: x/sqrt2, times 0.6", False, False),
    ("not GELU: x/sqrt2, other operand", False, False),
    ("exported: x/sqrt2, leaked product", False, False),  # x * (erf + 1) is also a graph output
]


@pytest.mark.parametrize(("form", "reordered", "kept"), GELU_FORMS, ids=[f[0] for f in GELU_FORMS])
def test_exact_gelu_is_reordered_for_tflites_fusion_and_keeps_its_erf(form: str, reordered: bool, kept: bool):
    """TFLite fuses only ``(x * 0.5) * (erf(x / sqrt2) + 1)`` into its GELU builtin; the reorder is exact (halving
    is exact in float32), and only the Erfs of such GELUs escape the polynomial."""
    from converter._convert.rewrites.erf import erf_as_polynomial
    from converter._convert.rewrites.gelu import gelu_as_fusable

    model = _gelu_graph(form)
    fused = gelu_as_fusable(model)
    assert (fused is not model) == reordered
    onnx.checker.check_model(fused)
    rng = np.random.default_rng(3)
    feeds = {n: (rng.standard_normal((2, 5, 8)) * 4).astype(np.float32) for n in ("x", "y")}

    def run(m: onnx.ModelProto) -> list[np.ndarray]:
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)

    assert all(np.array_equal(a, b) for a, b in zip(run(model), run(fused)))  # bit for bit
    final = erf_as_polynomial(fused)
    assert ("Erf" in [n.op_type for n in final.graph.node]) == kept
    prepared = rewrites.prepare_for_onnx2tf(model)
    assert ("gelu_as_fusable" in prepared.applied) == reordered
    assert ("erf_as_polynomial" in prepared.applied) == (not kept)


def _norm_graph(form: str, opset: int = 17) -> onnx.ModelProto:
    """``LayerNormalization`` of ``x`` [2, 5, 8] (scale and bias drawn at random) feeding what ``form`` names
    (see NORM_FORMS), ending in ``out``."""
    rng = np.random.default_rng(31)
    rank4 = form == "rank 4 (an image's channels)"
    shape = [2, 3, 5, 8] if rank4 else [2, 5, 8]
    bias = rng.standard_normal(8).astype(np.float32)
    if form == "zero bias, MatMul without Add":
        bias = np.zeros(8, np.float32)
    inits = {"scale": rng.standard_normal(8).astype(np.float32) + 1, "bias": bias,
             "w": rng.standard_normal((8, 6)).astype(np.float32), "c": rng.standard_normal(6).astype(np.float32),
             "w2": rng.standard_normal((8, 6)).astype(np.float32), "c2": rng.standard_normal((1, 6)).astype(np.float32)}
    outputs = ["y", "mean"] if form == "mean read" else ["y"]
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], outputs, axis=-1, epsilon=1e-5, name="/ln")]
    if form in ("MatMul + Add", "rank 4 (an image's channels)", "mean read"):
        nodes += [helper.make_node("MatMul", ["y", "w"], ["h"]), helper.make_node("Add", ["h", "c"], ["out"])]
    elif form == "zero bias, MatMul without Add" or form == "bias, MatMul without Add":
        nodes += [helper.make_node("MatMul", ["y", "w"], ["out"])]
    elif form == "two projections":
        nodes += [helper.make_node("MatMul", ["y", "w"], ["h"]), helper.make_node("Add", ["h", "c"], ["a"]),
                  helper.make_node("MatMul", ["y", "w2"], ["b0"]), helper.make_node("Add", ["c2", "b0"], ["b"]),
                  helper.make_node("Add", ["a", "b"], ["out"])]
    elif form == "projection and residual":
        inits["w"] = rng.standard_normal((8, 8)).astype(np.float32)
        inits["c"] = rng.standard_normal(8).astype(np.float32)
        nodes += [helper.make_node("MatMul", ["y", "w"], ["h"]), helper.make_node("Add", ["h", "c"], ["a"]),
                  helper.make_node("Add", ["a", "y"], ["out"])]
    if form == "mean read":
        nodes[-1].input[1] = "c"
        nodes.append(helper.make_node("Add", ["out_", "mean"], ["out"]))
        nodes[-2].output[0] = "out_"
    out_shape = [*shape[:-1], 8 if form == "projection and residual" else 6]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


#: (form, written out, scale and bias folded into the projections)
NORM_FORMS = [
    ("MatMul + Add", True, True),  # a pre-norm transformer block's QKV or MLP projection
    ("two projections", True, True),  # separate Q and K projections of one norm
    ("zero bias, MatMul without Add", True, True),
    ("bias, MatMul without Add", True, False),  # the bias has no constant to fold into: kept as an Add
    ("projection and residual", True, False),  # the norm's output is also read as is
    ("mean read", False, False),  # the node's second output is used
    ("rank 4 (an image's channels)", False, False),  # onnx2tf re-lays out 4-D tensors: left to it
]


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize(("form", "written", "folded"), NORM_FORMS, ids=[f[0] for f in NORM_FORMS])
def test_layer_norm_is_written_out_with_its_affine_folded_into_projections(form: str, written: bool, folded: bool,
                                                                         opset: int) -> None:
    """A token LayerNormalization becomes mean, centring, variance and one normalising product, its scale and bias
    folded into the projections that read it when every reader is one (else kept as a Mul and an Add after it); the
    graph computes what it did in onnxruntime, up to float32 rounding."""
    from converter._convert.rewrites import layer_norm_as_foldable

    model = _norm_graph(form, opset)
    rewritten = layer_norm_as_foldable(model)
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ("LayerNormalization" not in ops) == written, ops
    if not written:
        assert rewritten is model
        return
    scale_users = [n.op_type for n in rewritten.graph.node if "scale" in n.input]
    assert scale_users == ([] if folded else ["Mul"]), scale_users
    assert ({"scale", "bias"} & {t.name for t in rewritten.graph.initializer} == set()) == folded
    x = np.random.default_rng(5).standard_normal([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])
    x = (x * 3 + 1).astype(np.float32)
    want, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                 for m in (model, rewritten))
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max(), np.abs(got - want).max()


def test_batch_invariant_leaves_the_graph_when_onnxruntime_cannot_run_it(monkeypatch) -> None:
    """The batch-1 values come from onnxruntime; a graph it cannot run is left as it is, not a failed conversion."""
    def refuse(*args, **kwargs):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    model = batch_sized_graph()
    after = rewrites.batch_invariant_as_constant(model)
    assert after.SerializeToString(deterministic=True) == batch_sized_graph().SerializeToString(deterministic=True)
