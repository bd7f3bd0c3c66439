"""``materialize_lstm_states``: explicit zero initial states for LSTMs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter._convert.rewrites.graph import _copy, _shapes


def materialize_lstm_states(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every LSTM whose ``initial_h`` / ``initial_c`` input is absent an explicit all-zero initializer.

    Without it: onnx2tf 1.28.8 passes ``initial_state=[]`` to its Keras RNN when an LSTM has no initial state and
    fails with "An `initial_state` was passed that is not compatible with `cell.state_size`. Received
    `state_spec`=ListWrapper([])" (a bidirectional one fails indexing ``None``). Removing torch's zero states,
    the obvious clean-up, therefore *breaks* conversion; zero states must be present and constant (fold_constants
    turns the exporter's Shape→Expand zeros into initializers). Why general: ONNX defines a missing initial state
    as zeros, so adding explicit zeros of shape [num_directions, batch, hidden] is an identity for any LSTM.
    """
    model = _copy(model)
    graph = model.graph
    shapes = _shapes(model)
    names = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    for index, node in enumerate(graph.node):
        if node.op_type != "LSTM" or node.input[0] not in shapes:
            continue
        inputs = list(node.input) + [""] * (7 - len(node.input))
        if inputs[5] and inputs[6]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        directions = 2 if attrs.get("direction", b"forward") == b"bidirectional" else 1
        batch = shapes[node.input[0]][0 if attrs.get("layout", 0) == 1 else 1]
        if batch is None:
            continue  # a dynamic batch: zeros would need ops; the exporter's own zero states are left alone
        zeros = np.zeros((batch, directions, attrs["hidden_size"]), np.float32)
        if attrs.get("layout", 0) == 0:
            zeros = zeros.transpose(1, 0, 2)
        for slot, label in ((5, "initial_h"), (6, "initial_c")):
            if not inputs[slot]:
                name = f"{node.name or 'lstm'}_{index}_{label}"
                while name in names:
                    name += "_"
                names.add(name)
                graph.initializer.append(numpy_helper.from_array(zeros, name))
                inputs[slot] = name
        del node.input[:]
        node.input.extend(inputs)
    return model
