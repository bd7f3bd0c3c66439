"""``fast_route``: onnx2tf without strict mode, with its per-node checks only where they are needed and the layout
of equal-sized tensors recorded right.

Strict mode costs the time it does because it checks every ambiguous node by building and running the partial Keras
model up to it (quadratic in depth). The fast route (``disable_strict_mode`` on a graph whose broadcast constants
are full-rank, judged afterwards on the sample) still paid two costs and had one blind spot; under this context
manager:

1. **Per-node checks only where needed.** Before translating, onnx2tf runs the whole ONNX graph in onnxruntime with
   every intermediate tensor as an output, and then, even without strict mode, every MatMul (and some Concat,
   Einsum, Tile nodes) builds and runs the partial Keras model to search the transpositions of its inputs
   (``acquisition_of_validation_data``; vit_tiny: 11 of 22 s of translation, convnext_tiny 8 s, resnet18 2.3 of
   3.3 s; every intermediate tensor held in memory at once). Here that inference is deferred, and a node gets the
   reference values (computed once, on first demand, by onnx2tf's own ``dummy_onnx_inference`` with the arguments
   onnx2tf gave it) only when
   - it is a MatMul of two activations with a size repeated past the batch axis (attention's ``q @ k^T`` on a
     square score map): the plain build can pick the wrong one of the equal axes without raising (seen: levit_128s,
     off by O(1) at its first attention, failing two nodes later);
   - or its plain build raised: it is built again with them.
   A check needs the TF values of the node's inputs; they come from one evaluation of the Keras graph shared by all
   checks (:mod:`.kerasvalues`), not from a partial model run from the inputs for each (vit_tiny: 4.6 of 10 s).
2. **The layout of equal-sized tensors.** onnx2tf records for every tensor whether its TF layout is transposed
   against ONNX's (``before_op_output_shape_trans``), by comparing shapes. When every axis past the batch has the same
   size the shapes cannot tell, and onnx2tf then assumes "transposed": right for a Conv's NHWC output, wrong for a
   Reshape, whose output is in ONNX's layout by construction. Seen: mobilevit's tokens ``[4, 64, 64]``, whose
   LayerNorm then normalised the token axis (relative error 0.12 on the sample; strict mode corrects it with its
   partial-model runs, 40 s). Here an equal-sized Reshape output is recorded as in ONNX's layout, and a Transpose or
   an elementwise op whose activation inputs are all in ONNX's layout passes that on. Under a symbolic batch the
   sizes past it are compared (TF's ``None`` and ONNX's named batch cannot be): without that, MobileViT's tokens
   went unrecorded under ``--dynamic-batch``, its attention's checks leaked the sample's batch into the graph and
   the model was mapped over the batch.
3. **Scalar tests without Keras layers.** Add, Sub, Mul and Div ask ``tf.rank(x) == 0`` of both inputs to spot a
   scalar; on an activation (a Keras symbolic tensor) that builds two throw-away Keras layers whose answer is then
   ignored (only an eager result counts). Here ``rank`` of a symbolic tensor answers its static rank as a Python int,
   which onnx2tf ignores the same way (convnext_tiny: 2.5 of 11 s of translation).
4. **Weight products as 2-D GEMMs.** An activation of rank 3 or more times a constant matrix (every Linear on
   tokens or on a channels-last map) was a broadcasting ``BatchMatMulV2``, which TensorFlow runs as one small
   product per leading index: 2.4-3.6x slower than one 2-D product in a micro-benchmark. Here it is reshaped to
   ``[-1, K]``, multiplied once and reshaped back (all static sizes past the batch). TFLite's converter folds the
   reshapes into the same FULLY_CONNECTED as before; convnext_tiny's SavedModel runs a sample in 81 instead of
   156 ms.
5. **Depthwise convolutions of tensors held in ONNX's layout.** A Conv whose TF input still has ONNX's NCHW shape
   (it follows a literal ``Transpose`` back to channels-first: torchvision ConvNeXt's ``LayerNorm2d``) is
   transposed to NHWC inside onnx2tf's translation, but onnx2tf decides "depthwise" from the shape *before* that
   transposition, so a depthwise Conv there became a grouped ``Conv2D`` (filters ``[7, 7, 1, 96]``), which
   TensorFlow's CPU kernels run ~10x slower than ``DepthwiseConv2dNative``: 28 of convnext_tiny's 68 ms per sample.
   Here such a Conv is handed its input already transposed to NHWC, so onnx2tf's own test sees the channels and
   builds the depthwise op.
6. **Channel shuffles as reshapes.** ``shuffle_as_gather`` makes ShuffleNet's Reshape -> Transpose -> Reshape one
   ONNX Gather (onnx2tf loses the layout through the rank-5 original under a dynamic batch); a TFLite GATHER of
   activations is not an XNNPACK op, so each one split the delegated graph (shufflenet_v2_x0_5's TFLite file: 1.49x
   litert-torch's latency at batch 1). Here a gather of a constant permutation that is a shuffle (indices
   ``arange(a·b).reshape(a, b).T``) along an axis past the batch is built as the reshape to ``(a, b)``, the swap of
   those two axes and the reshape back: the same values moved the same way, ops XNNPACK runs.

7. **Checks at a batch of 2 under a symbolic batch.** onnx2tf feeds its checks a batch of 1 for a symbolic batch,
   where moving the batch axis changes no value: a check can keep a transposition that puts it elsewhere. Seen:
   wav2vec2's attention MatMul took scores ``[B, 4, 199, 199]`` as ``[4, 199, B, 199]``, right at batch 1 and a shape
   error at 2, so the model was mapped over the batch. Here, when onnx2tf feeds its own all-ones data (no test
   images), the references and the Keras values the checks compare are computed at a batch of 2
   (``shape_hints``), where the batch axis is told apart by its size.

Everything it changes is judged afterwards like any fast translation: the sample check, then parity.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import types
from collections.abc import Iterator
from dataclasses import dataclass, field

from converter._convert.rewrites.kerasvalues import incremental_checks

#: onnx2tf op modules that see :class:`_TensorFlowForOps` as ``tf``: the ones whose make_node tests each input with
#: ``tf.rank(x) == 0`` (point 3 of the module docstring), MatMul (point 4) and Gather (point 6)
PATCHED_TF = ("Add", "Sub", "Mul", "Div", "MatMul", "Gather")

#: onnx2tf's per-tensor record: is the TF layout transposed against ONNX's (NCHW -> NHWC and so on)?
TRANSPOSED = "before_op_output_shape_trans"

#: ops whose output is laid out like their activation inputs
LAYOUT_PRESERVING = frozenset({
    "Transpose", "Identity", "Cast", "Dropout",
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg", "Abs", "Exp", "Erf", "Tanh", "Relu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Clip", "Gelu", "Softmax", "LayerNormalization",
})


class _Deferred(RuntimeError):
    """What onnx2tf sees from its up-front inference here: it warns and goes on without reference values."""


@dataclass
class FastRoute:
    """What :func:`fast_route` did: the nodes that got onnx2tf's per-node checks up front (``checked``: ambiguous
    attention MatMuls) or after their plain build raised (``rebuilt``), and the equal-sized tensors recorded as in
    ONNX's layout (``relabelled``)."""

    checked: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    relabelled: list[str] = field(default_factory=list)
    #: depthwise Convs handed their input in NHWC (point 5)
    channels_last: list[str] = field(default_factory=list)


@contextlib.contextmanager
def fast_route() -> Iterator[FastRoute]:
    """Context manager for one ``onnx2tf.convert(disable_strict_mode=True)`` call; see the module docstring."""
    from unittest import mock

    import onnx2tf.onnx2tf as entry

    run_everything = entry.dummy_onnx_inference
    asked: dict = {}
    done = FastRoute()

    def deferred(**kwargs):
        asked.update(kwargs)
        raise _Deferred("reference values deferred until a node needs them")

    hints: list[str] = []  # onnx2tf's shape hints for the checks' inputs, shared with incremental_checks

    @functools.cache
    def references() -> dict:
        hints[:] = _batch_of_two(asked)
        fed = {**asked, "shape_hints": list(hints)} if hints else asked
        return dict(zip(asked["output_names"], run_everything(**fed)))

    def build(make_node, kwargs: dict):
        node = kwargs["graph_node"]
        if kwargs.get("onnx_tensor_infos_for_validation") is not None or not asked:
            return make_node(**kwargs)
        if _ambiguous(node):
            done.checked.append(node.name)
            return make_node(**{**kwargs, "onnx_tensor_infos_for_validation": references()})
        try:
            return make_node(**kwargs)
        except Exception as plain:
            try:
                values = references()
            except Exception:
                raise plain from None  # onnxruntime cannot run the graph: the node's own error stands
        done.rebuilt.append(node.name)
        return make_node(**{**kwargs, "onnx_tensor_infos_for_validation": values})

    def patched(make_node):
        @functools.wraps(make_node)
        def make(**kwargs):
            if "graph_node" not in kwargs:  # the graph inputs
                return make_node(**kwargs)
            with _channels_last_depthwise(kwargs["graph_node"], kwargs["tf_layers_dict"]) as moved:
                result = build(make_node, kwargs)
            if moved:
                done.channels_last.append(kwargs["graph_node"].name)
            done.relabelled += _relabel(kwargs["graph_node"], kwargs["tf_layers_dict"])
            return result
        return make

    def import_op(name: str):
        return types.SimpleNamespace(make_node=patched(importlib.import_module(name).make_node))

    shim = types.SimpleNamespace(import_module=import_op)
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(entry, "dummy_onnx_inference", deferred))
        patches.enter_context(mock.patch.object(entry, "importlib", shim))
        patches.enter_context(incremental_checks(hints))
        for op in PATCHED_TF:
            module = importlib.import_module(f"onnx2tf.ops.{op}")
            patches.enter_context(mock.patch.object(module, "tf", _TensorFlowForOps(module.tf)))
        yield done


class _TensorFlowForOps:
    """``tensorflow`` as the ``PATCHED_TF`` op modules see it; everything but two functions is TensorFlow's:

    - ``rank`` of a Keras symbolic tensor is its static rank, a Python int, instead of a Keras layer (point 3 of the
      module docstring; only Add/Sub/Mul/Div call it, in their scalar test);
    - ``matmul`` of an activation of rank 3 or more and a constant matrix is one 2-D product between two reshapes
      instead of a broadcasting BatchMatMulV2 (point 4; MatMul's translation)."""

    def __init__(self, tf) -> None:
        self._tf = tf

    def __getattr__(self, name: str):
        return getattr(self._tf, name)

    def rank(self, x, name=None):
        from tf_keras.src.engine.keras_tensor import KerasTensor

        return x.shape.rank if isinstance(x, KerasTensor) else self._tf.rank(x, name)

    def matmul(self, a, b, **kwargs):
        from tf_keras.src.engine.keras_tensor import KerasTensor

        tf = self._tf
        dims = list(a.shape) if isinstance(a, KerasTensor) and a.shape.rank is not None else []
        flat = (len(dims) >= 3 and hasattr(b, "numpy") and b.shape.rank == 2 and dims[-1] is not None
                and None not in dims[1:] and set(kwargs) <= {"output_type", "name"})
        if not flat:
            return tf.matmul(a, b, **kwargs)
        product = tf.matmul(tf.reshape(a, [-1, dims[-1]]), b, **kwargs)
        return tf.reshape(product, [-1, *dims[1:-1], int(b.shape[1])])

    def gather(self, params, indices, axis=None, **kwargs):
        tf = self._tf
        split = _shuffle_split(params, indices, axis) if set(kwargs) <= {"name"} else None
        if split is None:
            return tf.gather(params, indices, axis=axis, **kwargs)
        dims, axis, (a, b) = list(params.shape), split[0], split[1]
        grouped = tf.reshape(params, [-1, *dims[1:axis], a, b, *dims[axis + 1:]])
        order = list(range(len(dims) + 1))
        order[axis], order[axis + 1] = axis + 1, axis
        return tf.reshape(tf.transpose(grouped, order), [-1, *dims[1:]])


def _shuffle_split(params, indices, axis) -> tuple[int, tuple[int, int]] | None:
    """``(axis, (a, b))`` when gathering ``indices`` along ``axis`` of ``params`` is a channel shuffle: a constant
    permutation equal to ``arange(a·b).reshape(a, b).T.ravel()`` (a, b > 1) along an axis past the batch, every size
    past the batch static; None for any other gather (point 6 of the module docstring)."""
    import numpy as np
    from tf_keras.src.engine.keras_tensor import KerasTensor

    if not isinstance(params, KerasTensor) or params.shape.rank is None or not hasattr(indices, "numpy"):
        return None
    dims = list(params.shape)
    axis = int(axis or 0) % len(dims) if dims else 0
    order = np.asarray(indices.numpy())
    if axis == 0 or None in dims[1:] or order.ndim != 1 or order.size != dims[axis]:
        return None
    size = order.size
    for a in range(2, size // 2 + 1):
        if size % a == 0 and np.array_equal(order, np.arange(size).reshape(a, size // a).T.ravel()):
            return axis, (a, size // a)
    return None


def _batch_of_two(asked: dict) -> list[str]:
    """onnx2tf's shape hints (``name:2,d1,...``) that feed its checks a batch of 2 when every input has a symbolic
    batch and static sizes past it, and onnx2tf's own all-ones data is fed (no test images); else none (point 7 of
    the module docstring)."""
    if asked.get("test_data_nhwc") is not None or asked.get("custom_input_op_name_np_data_path"):
        return []
    graph = asked["onnx_graph"].graph
    initializers = {t.name for t in graph.initializer}
    hints = []
    for info in graph.input:
        if info.name in initializers:
            continue
        dims = info.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value") or not all(d.HasField("dim_value") for d in dims[1:]):
            return []
        hints.append(f"{info.name}:" + ",".join(["2", *(str(d.dim_value) for d in dims[1:])]))
    return hints


def _ambiguous(node) -> bool:
    """A MatMul of two activations (attention's ``q @ k^T``, ``attn @ v``) where a size repeats past the batch axis:
    onnx2tf's plain build cannot tell which of the equal axes is which, and a wrong guess raises nothing."""
    import onnx_graphsurgeon as gs

    if node.op != "MatMul" or any(isinstance(t, gs.Constant) for t in node.inputs):
        return False
    return any(_repeats(list(t.shape or [])[1:]) for t in (*node.inputs, *node.outputs))


def _repeats(dims: list) -> bool:
    return len(dims) >= 2 and len(set(dims)) < len(dims)


def _relabel(node, tensors: dict) -> list[str]:
    """Record the equal-sized outputs of ``node`` that are in ONNX's layout as such (point 2 of the module docstring);
    returns their names."""
    import onnx_graphsurgeon as gs

    if node.op != "Reshape" and node.op not in LAYOUT_PRESERVING:
        return []
    if node.op != "Reshape":
        marks = {tensors[t.name].get(TRANSPOSED, True) for t in node.inputs
                 if isinstance(t, gs.Variable) and t.name in tensors}
        if marks != {False}:
            return []
    changed = []
    for out in node.outputs:
        record = tensors.get(out.name, {})
        onnx_shape = list(out.shape or [])
        symbolic_batch = bool(onnx_shape) and not isinstance(onnx_shape[0], int)  # --dynamic-batch: compare the rest
        if (len(onnx_shape) >= 3 and len(set(onnx_shape[1:])) == 1 and record.get(TRANSPOSED) is True
                and _static_shape(record.get("tf_node"), past_batch=symbolic_batch)
                == onnx_shape[1 if symbolic_batch else 0:]):
            record[TRANSPOSED] = False
            changed.append(out.name)
    return changed


@contextlib.contextmanager
def _channels_last_depthwise(node, tensors: dict) -> Iterator[bool]:
    """While onnx2tf translates ``node``: if it is a depthwise 2-D Conv whose input's TF tensor has ONNX's NCHW
    shape, that tensor is seen transposed to NHWC (point 5 of the module docstring); yields whether it was."""
    import onnx_graphsurgeon as gs

    record = tensors.get(node.inputs[0].name, {}) if node.op == "Conv" and node.inputs else {}
    onnx_shape, weights = list(node.inputs[0].shape or []) if record else [], node.inputs[1] if record else None
    held = record.get("tf_node")
    past_batch = onnx_shape[1:]  # the batch may be symbolic (--dynamic-batch): only the other sizes are compared
    depthwise = (len(onnx_shape) == 4 and isinstance(weights, gs.Constant) and len(weights.shape) == 4
                 and weights.shape[1] == 1 and all(isinstance(d, int) for d in past_batch)
                 and node.attrs.get("group", 1) == past_batch[0] > 1 and len(set(past_batch)) > 1
                 and _static_shape(held, past_batch=True) == past_batch)
    if not depthwise:
        yield False
        return
    import tensorflow as tf

    record["tf_node"] = tf.transpose(held, [0, 2, 3, 1])
    try:
        yield True
    finally:
        record["tf_node"] = held


def _static_shape(tensor, past_batch: bool = False) -> list[int] | None:
    try:
        return [int(d) for d in tensor.shape[1 if past_batch else 0:]]
    except (AttributeError, TypeError, ValueError):  # no tensor, unknown rank or a None dimension
        return None
