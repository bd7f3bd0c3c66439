"""``sanitize_names``: node and tensor names TensorFlow accepts as op names."""

from __future__ import annotations

import re
from collections.abc import Callable

import onnx

from converter._convert.rewrites.graph import _copy

# What TensorFlow accepts as an op / name-scope name (tensorflow/python/framework/ops.py, _VALID_OP_NAME_REGEX).
_VALID_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_.\\/>-]")


def _valid(name: str) -> str:
    """``name`` mapped into TensorFlow's op-name alphabet: bad characters become '_', a bad first one is dropped."""
    cleaned = _INVALID_CHAR.sub("_", name).lstrip("_/\\>-")
    return cleaned or "t"


def _renamer(reserved: set[str]) -> Callable[[str], str]:
    """A memoised ``old -> new`` map into valid, unique names; names in ``reserved`` map to themselves."""
    taken = set(reserved)
    mapping: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in reserved:
            return name
        if name not in mapping:
            base = name if _VALID_NAME.match(name) else _valid(name)
            candidate, k = base, 1
            while candidate in taken:
                candidate, k = f"{base}_{k}", k + 1
            taken.add(candidate)
            mapping[name] = candidate
        return mapping[name]

    return rename


def sanitize_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename every node and every internal tensor to a unique name TensorFlow accepts as an op name.

    Without it: onnx2tf names TF ops and Keras layers after ONNX node/tensor names; TorchScript export produces
    names such as ``/stage2/stage2.1/Add`` or ``onnx::Conv_1157`` (and empty node names), which TensorFlow rejects
    with "A root scope name has to match the following pattern: ^[A-Za-z0-9.][A-Za-z0-9_.\\\\/>-]*$" when the
    model is traced or saved. Why general: names carry no semantics in ONNX; graph inputs and outputs keep their
    names because they are the user's interface.
    """
    model = _copy(model)
    graph = model.graph
    tensor = _renamer({i.name for i in graph.input} | {o.name for o in graph.output})
    node_name = _renamer(set())
    for index, node in enumerate(graph.node):
        node.name = node_name(node.name or f"{node.op_type}_{index}")
        for field in (node.input, node.output):
            renamed = [tensor(n) for n in field]
            del field[:]
            field.extend(renamed)
    for item in [*graph.initializer, *graph.value_info]:
        item.name = tensor(item.name)
    return model
