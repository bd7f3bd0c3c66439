"""The guide's MNIST network in Keras: functional and subclassed forms, layer names shared with PyTorch.

Kept apart from :mod:`reference_models.mnist_cnn` (the PyTorch net) so TensorFlow-side code — the
converter's ``keras_native`` route — can build it without importing torch.
"""

from __future__ import annotations

NUM_CLASSES = 10
IMAGE_SHAPE_NCHW = (1, 28, 28)
IMAGE_SHAPE_NHWC = (28, 28, 1)
CONV_CHANNELS = 32
POOLED = 13  # (28 - 3 + 1) // 2
HIDDEN = 128


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
