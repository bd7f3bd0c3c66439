"""Copy the PyTorch reference net's weights into the Keras net (same layer names, different layouts).

Two layout differences, both handled here and nowhere else:

- conv kernels: PyTorch ``OIHW`` -> Keras ``HWIO``;
- flatten order before ``fc1``: PyTorch flattens the pooled map as (C, H, W), Keras (NHWC) as (H, W, C),
  so the rows of ``fc1``'s weight matrix are permuted to the Keras order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from reference_models.mnist_cnn import CONV_CHANNELS, POOLED, build_keras_model


def keras_weights(state: Mapping[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> ``set_weights`` list, from a PyTorch ``state_dict`` of NumPy arrays."""
    conv_w = np.transpose(np.asarray(state["conv1.weight"]), (2, 3, 1, 0))  # OIHW -> HWIO
    fc1 = np.asarray(state["fc1.weight"])  # [128, C*H*W] in torch's (C, H, W) flatten order
    hidden = fc1.shape[0]
    fc1_hwc = fc1.reshape(hidden, CONV_CHANNELS, POOLED, POOLED).transpose(0, 2, 3, 1).reshape(hidden, -1)
    return {
        "conv1": [conv_w, np.asarray(state["conv1.bias"])],
        "fc1": [fc1_hwc.T, np.asarray(state["fc1.bias"])],
        "fc2": [np.asarray(state["fc2.weight"]).T, np.asarray(state["fc2.bias"])],
    }


def state_to_keras(state: Mapping[str, np.ndarray], keras_module=None):
    """A Keras functional net holding the weights of a PyTorch ``state_dict`` given as NumPy arrays
    (what the converter has on its TensorFlow side, where torch is never imported)."""
    model = build_keras_model(keras_module)
    for name, weights in keras_weights(state).items():
        model.get_layer(name).set_weights([w.astype(np.float32) for w in weights])
    return model


def torch_to_keras(torch_model, keras_module=None):
    """``torch_to_keras(MnistCNN) -> keras.Model`` with identical logits (NHWC input)."""
    state = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    return state_to_keras(state, keras_module)
