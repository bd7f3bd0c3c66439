"""Copy a trained :class:`MnistCNN` (PyTorch, NCHW) into the Keras net (NHWC) with the same layer names.

Two layout changes, both here and nowhere else in ``reference_models``:

- ``conv1``: torch stores kernels as OIHW ``[32, 1, 3, 3]``, Keras as HWIO ``[3, 3, 1, 32]``.
- ``fc1``: torch flattens the pooled map as (C, H, W), Keras as (H, W, C); so the rows of fc1's input
  side are permuted: Keras row ``(h*13 + w)*32 + c`` takes torch column ``c*169 + h*13 + w``.

``Linear`` weights are ``[out, in]`` and Keras ``Dense`` kernels ``[in, out]``, hence the transposes.
"""

from __future__ import annotations

from dataclasses import dataclass

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from reference_models.mnist_keras import CONV_CHANNELS, POOLED, build_keras_model

if TYPE_CHECKING:  # torch stays unimported on the converter's TensorFlow side (state_to_keras)
    from reference_models.mnist_cnn import MnistCNN


def keras_weights_from_torch(torch_model: MnistCNN) -> dict[str, list[np.ndarray]]:
    """The Keras weights (``{layer name: [kernel, bias]}``) equivalent to ``torch_model``'s."""
    return keras_weights({k: v.detach().float().cpu().numpy() for k, v in torch_model.state_dict().items()})


def keras_weights(state: Mapping[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The Keras weights from a PyTorch ``state_dict`` given as NumPy arrays."""
    sd = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
    fc1 = sd["fc1.weight"]  # [128, C*H*W], columns in (c, h, w) order
    fc1_hwc = fc1.reshape(-1, CONV_CHANNELS, POOLED, POOLED).transpose(2, 3, 1, 0).reshape(-1, fc1.shape[0])
    return {
        "conv1": [sd["conv1.weight"].transpose(2, 3, 1, 0), sd["conv1.bias"]],  # OIHW -> HWIO
        "fc1": [np.ascontiguousarray(fc1_hwc), sd["fc1.bias"]],
        "fc2": [np.ascontiguousarray(sd["fc2.weight"].T), sd["fc2.bias"]],
    }


def torch_to_keras(torch_model: MnistCNN, keras_module=None):
    """Return ``build_keras_model(keras_module)`` holding ``torch_model``'s weights.

    The Keras net takes ``[B, 28, 28, 1]`` (NHWC) images normalised like the torch net's input and
    returns the same logits up to float32 rounding.
    """
    return state_to_keras({k: v.detach().float().cpu().numpy() for k, v in torch_model.state_dict().items()},
                          keras_module)


def state_to_keras(state: Mapping[str, np.ndarray], keras_module=None):
    """Like :func:`torch_to_keras`, from a NumPy ``state_dict`` (no torch import needed)."""
    model = build_keras_model(keras_module)
    for name, weights in keras_weights(state).items():
        model.get_layer(name).set_weights(weights)
    return model


@dataclass(frozen=True)
class PortCheck:
    """How far the Keras port's logits are from torch's on the same images."""

    samples: int
    max_abs_diff: float
    argmax_agreement: float  # fraction of images whose predicted class is the same

    def ok(self, atol: float = 1e-5) -> bool:
        return self.max_abs_diff <= atol and self.argmax_agreement == 1.0

    def raise_if_failed(self, atol: float = 1e-5) -> None:
        if not self.ok(atol):
            raise AssertionError(f"port mismatch: {self}")


def compare_logits(torch_model: MnistCNN, keras_model, images_nchw: np.ndarray, batch_size: int = 1000) -> PortCheck:
    """Run both nets on ``images_nchw`` (float32 ``[N, 1, 28, 28]``) and report the differences."""
    import torch

    torch_model.eval()
    diffs, agree = [], 0
    for i in range(0, len(images_nchw), batch_size):
        batch = images_nchw[i:i + batch_size]
        with torch.no_grad():
            expected = torch_model(torch.from_numpy(batch)).numpy()
        got = np.asarray(keras_model(batch.transpose(0, 2, 3, 1), training=False))
        diffs.append(float(np.max(np.abs(expected - got))))
        agree += int(np.sum(expected.argmax(1) == got.argmax(1)))
    return PortCheck(len(images_nchw), max(diffs), agree / len(images_nchw))
