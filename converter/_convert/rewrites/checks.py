"""``checks_on_demand``: onnx2tf's per-node checks, run only for a node that cannot be built without them.

Before translating, onnx2tf runs the whole ONNX graph in onnxruntime with every intermediate tensor as an output,
and then, even without strict mode, a MatMul, Add, Concat, Reshape, ... node whose output has a reference value
builds and runs the partial Keras model up to that node (``acquisition_of_validation_data`` → ``dummy_tf_inference``)
to search the transpositions of its inputs: quadratic in depth (vit_tiny: 11 of 22 s of translation; convnext_tiny:
8 s; resnet18: 2.3 of 3.3 s), and every intermediate tensor held in memory at once.

On a graph prepared for the fast route (full-rank broadcast constants) the default transposition is the right one
wherever the shapes leave no choice, and the sample check after the translation proves it. So under this patch the
up-front inference is deferred and a node gets reference values (computed once, on first demand, by onnx2tf's own
``dummy_onnx_inference`` with the arguments onnx2tf gave it) only when
- it is a MatMul of two activations with a size repeated past the batch axis (attention's ``q @ k^T`` on a square
  score map): the plain build can pick the wrong one of the equal axes without raising (seen: levit_128s, off by
  O(1) at its first attention, and failing two nodes later);
- or its plain build raised: it is built again with them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import types
from collections.abc import Iterator
from dataclasses import dataclass, field


class _Deferred(RuntimeError):
    """What onnx2tf sees from its up-front inference under the patch: it warns and goes on without reference values."""


@dataclass
class OnDemand:
    """Which nodes got onnx2tf's per-node checks under :func:`checks_on_demand`: ``checked`` up front (ambiguous
    attention MatMuls), ``rebuilt`` after their plain build raised."""

    checked: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)


def _ambiguous(node) -> bool:
    """A MatMul of two activations (attention's ``q @ k^T``, ``attn @ v``) where a size repeats past the batch axis:
    onnx2tf's plain build cannot tell which of the equal axes is which, and a wrong guess raises nothing."""
    import onnx_graphsurgeon as gs

    if node.op != "MatMul" or any(isinstance(t, gs.Constant) for t in node.inputs):
        return False
    for t in (*node.inputs, *node.outputs):
        dims = list(t.shape or [])[1:]
        if len(dims) >= 2 and len(set(dims)) < len(dims):
            return True
    return False


@contextlib.contextmanager
def checks_on_demand() -> Iterator[OnDemand]:
    """Context manager for one ``onnx2tf.convert`` call; see the module docstring. Yields an :class:`OnDemand`."""
    from unittest import mock

    import onnx2tf.onnx2tf as entry

    run_everything = entry.dummy_onnx_inference
    asked: dict = {}
    done = OnDemand()

    def deferred(**kwargs):
        asked.update(kwargs)
        raise _Deferred("reference values deferred until a node needs them")

    @functools.cache
    def references() -> dict:
        return dict(zip(asked["output_names"], run_everything(**asked)))

    def retrying(make_node):
        @functools.wraps(make_node)
        def make(**kwargs):
            if asked and kwargs.get("onnx_tensor_infos_for_validation") is None and _ambiguous(kwargs["graph_node"]):
                done.checked.append(kwargs["graph_node"].name)
                return make_node(**{**kwargs, "onnx_tensor_infos_for_validation": references()})
            try:
                return make_node(**kwargs)
            except Exception as plain:
                if not asked or kwargs.get("onnx_tensor_infos_for_validation") is not None:
                    raise
                try:
                    values = references()
                except Exception:
                    raise plain from None  # onnxruntime cannot run the graph: the node's own error stands
            done.rebuilt.append(kwargs["graph_node"].name)
            return make_node(**{**kwargs, "onnx_tensor_infos_for_validation": values})
        return make

    def import_op(name: str):
        op = importlib.import_module(name)
        return types.SimpleNamespace(make_node=retrying(op.make_node))

    shim = types.SimpleNamespace(import_module=import_op)
    with mock.patch.object(entry, "dummy_onnx_inference", deferred), mock.patch.object(entry, "importlib", shim):
        yield done
