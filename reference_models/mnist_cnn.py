"""The guide's MNIST network, corrected, in PyTorch and in Keras with the same layer names.

The guide prints ``Conv2d(1, 32, 3) -> fc1(32*13*13, 128)`` but a 3x3 conv on 28x28 gives 26x26; the
corrected net pools 2x2 after the conv, so fc1 really sees 32*13*13 = 5408 features, and adds the
missing 10-class head:

    Conv(1->32, 3x3) -> ReLU -> MaxPool 2x2 -> Flatten -> Dense 128 -> ReLU -> Dense 10 (logits)

Layer names (``conv1``, ``fc1``, ``fc2``) are shared by both frameworks so porting weights is mechanical
(see ``reference_models.port``).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

NUM_CLASSES = 10
IMAGE_SHAPE_NCHW = (1, 28, 28)
IMAGE_SHAPE_NHWC = (28, 28, 1)
CONV_CHANNELS = 32
POOLED = 13  # (28 - 3 + 1) // 2
HIDDEN = 128


class MnistCNN(nn.Module):
    """PyTorch form: input ``[B, 1, 28, 28]`` float32 (normalised to [-1, 1]), output ``[B, 10]`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, CONV_CHANNELS, kernel_size=3, stride=1)
        self.fc1 = nn.Linear(CONV_CHANNELS * POOLED * POOLED, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def build_keras_model(keras_module=None):
    """Keras functional form: input ``[B, 28, 28, 1]`` (NHWC), output ``[B, 10]`` logits.

    ``keras_module`` selects the Keras implementation (``keras`` 3 by default; pass ``tf_keras`` for the
    legacy route used by MultiWorkerMirroredStrategy).
    """
    keras = keras_module or _default_keras()
    layers = keras.layers
    inputs = keras.Input(shape=IMAGE_SHAPE_NHWC, name="image")
    x = layers.Conv2D(CONV_CHANNELS, 3, strides=1, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(HIDDEN, activation="relu", name="fc1")(x)
    outputs = layers.Dense(NUM_CLASSES, name="fc2")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def build_keras_subclassed(keras_module=None):
    """The subclassed-``Model`` form the guide mentions; same layers, same graph as the functional one."""
    keras = keras_module or _default_keras()
    layers = keras.layers

    class KerasMnistCNN(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="mnist_cnn_subclassed")
            self.conv1 = layers.Conv2D(CONV_CHANNELS, 3, strides=1, activation="relu", name="conv1")
            self.pool1 = layers.MaxPooling2D(2, name="pool1")
            self.flatten = layers.Flatten(name="flatten")
            self.fc1 = layers.Dense(HIDDEN, activation="relu", name="fc1")
            self.fc2 = layers.Dense(NUM_CLASSES, name="fc2")

        def call(self, inputs):
            return self.fc2(self.fc1(self.flatten(self.pool1(self.conv1(inputs)))))

    model = KerasMnistCNN()
    model.build((None, *IMAGE_SHAPE_NHWC))
    return model


def _default_keras():
    import keras  # Keras 3, bundled with TensorFlow 2.21

    return keras
