"""``anchor_constant_subgraphs``: ops that compute from constants alone are made to depend on an input.

Also the anchor both constant-anchoring rewrites share (:func:`anchor_condition`): a boolean scalar that is false for
every input value yet, for onnx2tf, is a tensor computed from a graph input.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from converter._convert.rewrites.graph import _copy, _input_dependent, _sort_topologically

_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)


def anchor_condition(graph: onnx.GraphProto) -> tuple[str, list[onnx.NodeProto]] | None:
    """The name of a boolean scalar ``IsNaN(ReduceMin(x))`` over the first float graph input (or, when every input
    is an integer or bool tensor, ``IsNaN(ReduceMin(Cast<float>(x)))`` over the first input, which is never NaN),
    and the nodes that compute it; None for a graph without inputs. ``Where(cond, c, c)`` equals ``c`` exactly for
    any value of ``cond``, so it is ``c`` for every input, NaN included, and it is an op whose output depends on
    ``x``. When the graph already computes this anchor, no nodes are returned and the same name is reused."""
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs:
        return None
    floats = [i for i in inputs if i.type.tensor_type.elem_type in _FLOATS]
    source = (floats or inputs)[0].name
    if any(f"{source}_anchor_isnan" in n.output for n in graph.node):
        return f"{source}_anchor_isnan", []  # already there (the other anchoring rewrite ran first)
    nodes = []
    if not floats:
        nodes.append(helper.make_node("Cast", [source], [f"{source}_anchor_float"], name=f"{source}_anchor/Cast",
                                      to=TensorProto.FLOAT))
    reduced = nodes[-1].output[0] if nodes else source
    nodes += [
        helper.make_node("ReduceMin", [reduced], [f"{source}_anchor_min"], name=f"{source}_anchor/ReduceMin",
                         keepdims=0),
        helper.make_node("IsNaN", [f"{source}_anchor_min"], [f"{source}_anchor_isnan"], name=f"{source}_anchor/IsNaN"),
    ]
    return f"{source}_anchor_isnan", nodes


def anchor_constant_subgraphs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make every op that still computes from constants alone after folding depend on a graph input: its first
    constant operand ``c`` becomes ``Where(cond, c, c)`` (:func:`anchor_condition`), which is ``c`` exactly.

    Without it: onnx2tf evaluates such an op eagerly to a TensorFlow constant; the next op's translator, in its
    strict-mode check, builds a Keras model whose output is that constant and fails with "Output tensors of a
    Functional model must be the output of a TensorFlow Layer … Found: [[0 0 … 0]]". Folding leaves such ops when
    the ONNX reference evaluator cannot run them (its GatherElements fails beyond 64 elements on the gathered axis:
    a Hugging Face BERT's ``token_type_ids`` buffer, ``buffer[:, :T].expand(B, T)``, is GatherElements → Expand) or
    when the result would inflate the graph (a large Expand). Why general: it keys only on data flow (ops with no
    path from any input), anchors only the roots of such subgraphs (ops whose operands are all initializers or
    Constant outputs), so everything downstream becomes input-dependent, and ``Where(cond, c, c)`` is the
    constant itself for every input. Ops with no operands at all (random generators) and custom-domain ops (which
    onnx2tf cannot translate anyway) are left alone.
    """
    model = _copy(model)
    graph = model.graph
    live = _input_dependent(graph)
    produced_by_op = {o for n in graph.node if n.op_type != "Constant" for o in n.output}
    roots = [n for n in graph.node
             if n.op_type != "Constant" and n.domain in ("", "ai.onnx") and any(n.input)
             and not live.intersection(n.output) and not produced_by_op.intersection(n.input)]
    anchor = anchor_condition(graph) if roots else None
    if anchor is None:
        return model
    cond, nodes = anchor
    anchored: dict[str, str] = {}
    for node in roots:
        position = next(k for k, name in enumerate(node.input) if name)
        constant = node.input[position]
        if constant not in anchored:
            anchored[constant] = f"{constant}_anchored"
            nodes.append(helper.make_node("Where", [cond, constant, constant], [anchored[constant]],
                                          name=f"{constant}_anchor/Where"))
        node.input[position] = anchored[constant]
    # the anchor ops go first, then every op after its producers (a Constant node or a reused condition they read)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])
    _sort_topologically(graph)
    return model
