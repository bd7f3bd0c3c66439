"""``incremental_checks``: onnx2tf's per-node checks without re-running the Keras model from its inputs each time.

To check a node (the fast route's ambiguous attention MatMuls, see :mod:`.fastroute`), onnx2tf needs the TF values
of the node's inputs: ``acquisition_of_validation_data`` builds a ``tf_keras.Model`` from the graph's inputs to them
and runs it on its dummy input. Each check therefore costs the whole depth of the graph so far, and a model's checks
cost its depth squared (vit_tiny: 24 checks, 4.6 of 10 s of translation). Here the values of the Keras tensors are
computed once each, layer by layer as onnx2tf's functional model would (``Node.map_arguments`` then the layer's
call), and kept for the next check; the input data is what onnx2tf's ``dummy_tf_inference`` would feed, taken from
that very function. Anything this cannot evaluate goes to onnx2tf's own code.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
from collections.abc import Iterator

#: onnx2tf op modules that import ``acquisition_of_validation_data`` by name
CHECKING_OPS = ("Add", "Concat", "Einsum", "GridSample", "MatMul", "Tile")


@contextlib.contextmanager
def incremental_checks(shape_hints: list[str] | None = None) -> Iterator[None]:
    """Context manager for one ``onnx2tf.convert`` call; see the module docstring. ``shape_hints``: the input shapes
    onnx2tf's checks are fed at (read at the first check; the fast route fills it in when it computes the
    references), as its ``shape_hints`` option gives them."""
    from unittest import mock

    import onnx2tf.utils.common_functions as common

    original = common.acquisition_of_validation_data
    values = _KerasValues()

    def acquisition_of_validation_data(*, input_tensor_1, input_tensor_2, graph_node_output, tf_layers_dict,
                                       **kwargs):
        reference = kwargs["onnx_tensor_infos_for_validation"]
        tensors = (input_tensor_1, input_tensor_2)
        symbolic = [_is_symbolic(t) for t in tensors]
        if reference is not None and reference.get(graph_node_output.name) is not None and any(symbolic):
            try:
                inputs = common.get_tf_model_inputs(tf_layers_dict=tf_layers_dict)
                values.bind(inputs, _dummy_inputs(common, inputs, kwargs, shape_hints))
                data = [values.of(t) if s else copy.deepcopy(t) for t, s in zip(tensors, symbolic)]
                return {graph_node_output.name: reference[graph_node_output.name]}, data[0], data[1]
            except Exception:  # noqa: BLE001  onnx2tf's own way below, whatever it makes of this node
                pass
        return original(input_tensor_1=input_tensor_1, input_tensor_2=input_tensor_2,
                        graph_node_output=graph_node_output, tf_layers_dict=tf_layers_dict, **kwargs)

    with contextlib.ExitStack() as patches:
        for op in CHECKING_OPS:
            module = importlib.import_module(f"onnx2tf.ops.{op}")
            patches.enter_context(mock.patch.object(module, "acquisition_of_validation_data",
                                                    acquisition_of_validation_data))
        yield


class _Unsupported(Exception):
    pass


def _is_symbolic(tensor) -> bool:
    import numpy as np

    return not isinstance(tensor, np.ndarray) and not hasattr(tensor, "numpy")


def _dummy_inputs(common, inputs: list, kwargs: dict, shape_hints: list[str] | None = None) -> dict:
    """What onnx2tf's ``dummy_tf_inference`` feeds ``inputs`` (by input name), as its validation calls it."""
    fed: dict = {}

    class Capture:
        outputs: list = []

        def __call__(self, inputs, training=False):
            fed.update(inputs)
            return []

    common.dummy_tf_inference(model=Capture(), inputs=inputs, test_data_nhwc=kwargs["test_data_nhwc"],
                              custom_input_op_name_np_data_path=kwargs["custom_input_op_name_np_data_path"],
                              shape_hints=list(shape_hints) if shape_hints else None)
    return fed


class _KerasValues:
    """The eager values of a functional Keras graph's tensors on one input, each computed once."""

    def __init__(self) -> None:
        # str(id(keras tensor)) -> (the tensor, kept alive so ids stay unique; value)
        self._values: dict[str, tuple] = {}
        self._fed: dict | None = None

    def bind(self, inputs: list, fed: dict) -> None:
        import numpy as np

        if self._fed is not None:
            same = fed.keys() == self._fed.keys() and all(np.array_equal(fed[k], self._fed[k]) for k in fed)
            if same:
                return
            self._values.clear()
        self._fed = fed
        for kt in inputs:
            self._values[str(id(kt))] = (kt, _as_input(kt, fed[kt.name]))

    def of(self, tensor):
        """``tensor``'s value as numpy, evaluating the layers it needs that were not evaluated yet."""
        import tensorflow as tf

        stack = [tensor]
        while stack:
            kt = stack[-1]
            if self._known(kt):
                stack.pop()
                continue
            history = getattr(kt, "_keras_history", None)
            if history is None:
                raise _Unsupported(f"{kt!r} has no Keras history")
            node = history.layer._inbound_nodes[history.node_index]
            missing = [t for t in node.keras_inputs if not self._known(t)]
            if missing:
                stack.extend(missing)
                continue
            flat = copy.copy(node._flat_arguments)  # noqa: SLF001  (what Node.map_arguments fills in)
            for kt_id, index in node._keras_inputs_ids_and_indices:  # noqa: SLF001
                flat[index] = self._values[kt_id][1]
            args, kwargs = tf.nest.pack_sequence_as((node.call_args, node.call_kwargs.values()), flat)
            kwargs = dict(zip(node.call_kwargs.keys(), kwargs))
            if getattr(node.layer, "_expects_training_arg", False):
                kwargs.setdefault("training", False)  # as onnx2tf's dummy_tf_inference calls its model
            outputs = node.layer(*args, **kwargs)
            for kt_out, value in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
                self._values[str(id(kt_out))] = (kt_out, value)
            if not self._known(kt):
                raise _Unsupported(f"evaluating {node.layer.name} did not give {kt!r}")
        return self._values[str(id(tensor))][1].numpy()

    def _known(self, kt) -> bool:
        entry = self._values.get(str(id(kt)))
        return entry is not None and entry[0] is kt


def _as_input(kt, data):
    import tensorflow as tf

    value = tf.convert_to_tensor(data)
    return value if value.dtype == kt.dtype else tf.cast(value, kt.dtype)
