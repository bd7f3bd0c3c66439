"""Graph helpers shared by the rewrites: copying, opset, shape inference without the weights, producer and
consumer look-ups, dead-code removal and tensor renaming."""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

_SMALL = 4096  # initializers up to this many elements are kept (with values) for shape inference


class Initializers(MutableMapping):
    """Initializer name -> NumPy value, converted on first look-up and kept; values set here (a folded node's
    outputs) sit beside them. A rewrite asks for a few shape-like constants: converting every weight up front
    copied all of them once more (110 MB on convnext_tiny) in each rewrite that looks values up."""

    def __init__(self, initializers) -> None:
        self._protos = {t.name: t for t in initializers}
        self._values: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._values:
            self._values[name] = numpy_helper.to_array(self._protos[name])
        return self._values[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._values[name] = value

    def __delitem__(self, name: str) -> None:
        found = self._protos.pop(name, None) is not None
        if self._values.pop(name, None) is None and not found:
            raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._protos

    def __iter__(self) -> Iterator[str]:
        yield from self._protos
        yield from (name for name in self._values if name not in self._protos)

    def __len__(self) -> int:
        return len(self._protos) + sum(name not in self._protos for name in self._values)


_owned: ContextVar[bool] = ContextVar("rewrites_owned", default=False)


@contextmanager
def owned() -> Iterator[None]:
    """Inside this block every rewrite edits the graph it is given instead of a copy: for a caller that holds a
    private copy and keeps only the result (``prepare_for_onnx2tf``). Each copy of convnext_tiny is 110 MB of
    weights, and a dozen of them, each left on the heap, peaked the translation ~0.4 GiB higher."""
    token = _owned.set(True)
    try:
        yield
    finally:
        _owned.reset(token)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A rewrite's working graph: a deep copy (the caller's graph stays as it was), or ``model`` itself inside
    :func:`owned`."""
    return model if _owned.get() else _deep_copy(model)


def _deep_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every initializer above ``_SMALL`` elements turned into a typed graph input: shape inference
    then serialises kilobytes instead of the weights, and still sees every small (shape-like) constant's value."""
    light = onnx.ModelProto(ir_version=model.ir_version)  # everything inference reads, but the big weights: they are
    light.opset_import.extend(model.opset_import)        # not copied only to be dropped (110 MB on convnext_tiny)
    light.functions.extend(model.functions)
    source, graph = model.graph, light.graph
    graph.name = source.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, field).extend(getattr(source, field))
    big = [t for t in source.initializer if int(np.prod(t.dims)) > _SMALL]
    graph.initializer.extend(t for t in source.initializer if int(np.prod(t.dims)) <= _SMALL)
    declared = {i.name for i in graph.input}
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big
                       if t.name not in declared)
    return light


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Tensor name -> inferred shape, ``None`` for dimensions that are symbolic (a dynamic batch) or unknown.

    Once a runtime shape meets a ``-1`` (``x.flatten(2)`` under a dynamic batch: ``Reshape(x, [N, C, -1])``), ONNX's
    inference loses the static dimensions after it, and all of them in a graph with a symbolic dimension past the
    batch; onnxruntime's symbolic inference fills in the ones it proves. Only in a graph with a symbolic input
    dimension: it costs seconds per translation and imports sympy (bert_tiny at a fixed size: +2.4 s, +0.24 GiB,
    for unknown sizes of its mask arithmetic that every rewrite already did without)."""
    light = _weightless(model)
    shapes = _dims(onnx.shape_inference.infer_shapes(light, data_prop=True).graph)
    if _symbolic_past_batch(model) or (_symbolic_inputs(model) and any(None in dims[1:] for dims in shapes.values())):
        for name, dims in _symbolic_shapes(light).items():
            old = shapes.get(name)
            if old is None:
                shapes[name] = dims
            elif len(old) == len(dims):
                shapes[name] = tuple(o if o is not None else d for o, d in zip(old, dims))
    return shapes


def _dims(graph: onnx.GraphProto) -> dict[str, tuple[int | None, ...]]:
    shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    return shapes


def _symbolic_shapes(light: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Shapes from onnxruntime's symbolic shape inference, which carries a symbolic dimension (``seq``) through
    Shape -> Gather -> Concat -> Reshape and keeps the static ones around it ([1, seq, 2, 16] where ONNX's own
    inference gives [unk, unk, unk, 16]); empty if it cannot run on this graph."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        return _dims(SymbolicShapeInference.infer_shapes(light, auto_merge=True).graph)
    except Exception:  # an op it has no rule for: ONNX's own inference stands
        return {}


def _symbolic_inputs(model: onnx.ModelProto) -> bool:
    """Whether a graph input has a symbolic dimension (``--dynamic-batch`` or ``--dynamic-dim``)."""
    return bool(_symbolic_input_axes(model))


def _symbolic_past_batch(model: onnx.ModelProto) -> bool:
    """Whether a graph input has a symbolic dimension past the batch (``--dynamic-dim``)."""
    return any(k > 0 for k in _symbolic_input_axes(model))


def _symbolic_input_axes(model: onnx.ModelProto) -> set[int]:
    """The axes at which some graph input (not an initializer) has a symbolic dimension."""
    inits = {t.name for t in model.graph.initializer}
    return {k for i in model.graph.input if i.name not in inits for k, d in enumerate(i.type.tensor_type.shape.dim)
            if not (d.HasField("dim_value") and d.dim_value > 0)}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> inferred ONNX element type (``TensorProto.INT64``, ...), initializers included."""
    inferred = onnx.shape_inference.infer_shapes(_weightless(model)).graph
    types = {i.name: i.type.tensor_type.elem_type for i in [*inferred.input, *inferred.value_info, *inferred.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


def _constant(name: str, known: dict[str, np.ndarray], producers: dict[str, onnx.NodeProto]) -> np.ndarray | None:
    """The value of ``name`` when it is an initializer or a ``Constant`` node's output, else None."""
    if name in known:
        return known[name]
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _float_scalar(name: str, initializers: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto],
                  max_ndim: int | None = None) -> float | None:
    """The value of ``name`` when it is a one-element float32 constant (an initializer or a ``Constant`` node's
    output) of rank at most ``max_ndim``, else None. Only a one-element initializer is converted, never a weight."""
    tensor = initializers.get(name)
    if tensor is not None:
        value = numpy_helper.to_array(tensor) if int(np.prod(tensor.dims)) == 1 else None
    else:
        value = _constant(name, {}, producers)
    if value is None or value.dtype != np.float32 or value.size != 1 or (max_ndim is not None and value.ndim > max_ndim):
        return None
    return float(value.reshape(()))


def _view(model: onnx.ModelProto) -> tuple[Initializers, dict[str, onnx.NodeProto], dict[str, int],
                                          dict[str, tuple[int | None, ...]]]:
    """What the pattern rewrites look up: initializer values, each tensor's producer, each tensor's consumer
    count, and the inferred shapes."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    return Initializers(graph.initializer), producers, _consumers(graph), _shapes(model)


def _consumers(graph: onnx.GraphProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
    for out in graph.output:
        counts[out.name] = counts.get(out.name, 0) + 1
    return counts


def _readers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> the positions (in ``graph.node``) of the nodes reading it, once per input slot."""
    readers: dict[str, list[int]] = {}
    for k, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(k)
    return readers


def _remove_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes none of whose outputs is used, and initializers nothing reads, until nothing changes."""
    while True:
        used = _consumers(graph)
        if not _keep_only(graph.node, lambda n: any(used.get(o, 0) for o in n.output if o)):
            break
    used = _consumers(graph)
    graph_inputs = {i.name for i in graph.input}
    _keep_only(graph.initializer, lambda t: used.get(t.name, 0) or t.name in graph_inputs)


def _keep_only(field, keep: Callable) -> bool:
    """Delete the items of a repeated message field ``keep`` rejects, in place; whether any went. In place, not
    cleared and extended: extending copies every kept message into the graph's protobuf arena, where the old ones
    stay until the whole graph is freed (a copy of every weight per call: 110 MB on convnext_tiny)."""
    dead = [k for k, item in enumerate(field) if not keep(item)]
    for k in reversed(dead):
        del field[k]
    return bool(dead)


def _input_dependent(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors whose value depends on at least one graph input."""
    initializers = {t.name for t in graph.initializer}
    live = {i.name for i in graph.input if i.name not in initializers}
    for node in graph.node:
        if live.intersection(node.input):
            live.update(node.output)
    return live


def _rename_internal(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere except in the graph's output list."""
    for item in [*graph.initializer, *graph.value_info]:
        if item.name == old:
            item.name = new
    for node in graph.node:
        for names in (node.input, node.output):
            renamed = [new if n == old else n for n in names]
            del names[:]
            names.extend(renamed)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` in place so every node follows the producers of its inputs, keeping the given order
    wherever it already allows (Kahn's algorithm, the lowest position first)."""
    import heapq

    nodes = list(graph.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    waiting = [len({producer[i] for i in n.input if i in producer and producer[i] != k}) for k, n in enumerate(nodes)]
    consumers: dict[int, set[int]] = {}
    for k, n in enumerate(nodes):
        for i in n.input:
            if i in producer and producer[i] != k:
                consumers.setdefault(producer[i], set()).add(k)
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for c in consumers.get(k, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, c)
    if len(order) != len(nodes):  # a cycle (not a valid graph): leave it as it was
        return
    del graph.node[:]
    graph.node.extend(nodes[k] for k in order)
