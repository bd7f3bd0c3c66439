"""TensorFlow's own build of a zoo architecture: the floor a converted SavedModel is measured against.

A zoo image classifier that Keras 3's ``keras.applications`` also implements (MobileNetV3-Small, EfficientNet-B0,
ConvNeXt-Tiny; Keras 3 has no RegNets) is built there natively, at the zoo entry's input size and class count, with
seeded random weights, exported with Keras' own ``model.export`` and called through its ``serving_default``
signature exactly as the converted SavedModel is (:func:`converter.bench.runtimes.serving`). No converter is
involved, so its latency is what TensorFlow itself takes for the architecture on this machine: when the native
build is as far from onnxruntime as ours, the gap is TensorFlow's executor and kernels, not the conversion.

The twin computes the same kind of function with other weights (and details such as where a block puts its
squeeze-excitation may differ): it is timed, never compared with PyTorch's outputs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

#: zoo entry -> (``keras.applications`` class, extra keyword arguments: no preprocessing layers, as in the zoo's
#: PyTorch modules, which take normalised images).
TWINS: dict[str, tuple[str, dict]] = {
    "mobilenet_v3_small": ("MobileNetV3Small", {"include_preprocessing": False}),
    "mobilenetv3_small_100": ("MobileNetV3Small", {"include_preprocessing": False}),
    "efficientnet_b0": ("EfficientNetB0", {}),
    "convnext_tiny": ("ConvNeXtTiny", {"include_preprocessing": False}),
}


def has_twin(zoo: str) -> bool:
    return zoo in TWINS


def export(zoo: str, manifest: dict, path: Path, seed: int = 0) -> dict:
    """Build ``zoo``'s twin for the manifest's input shape (PyTorch ``[N, C, H, W]``) and class count, export it
    to ``path`` (a SavedModel directory); its parameter count and Keras class name."""
    import keras

    if zoo not in TWINS:
        raise ValueError(f"{zoo} has no keras.applications twin; twins exist for {', '.join(sorted(TWINS))}")
    cls, kwargs = TWINS[zoo]
    (_, channels, height, width), classes = manifest["inputs"][0]["pytorch_shape"], manifest["outputs"][0]["pytorch_shape"][-1]
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, cls)(input_shape=(height, width, channels), weights=None, classes=classes,
                                              classifier_activation=None, **kwargs)
    model.export(str(path), verbose=False)
    return {"keras_class": cls, "parameters": int(model.count_params())}


def serving(zoo: str, manifest: dict, threads: int):
    """A :class:`~converter.bench.runtimes.Bench` on the twin's ``serving_default`` (NHWC in, logits out),
    exported to a temporary directory and loaded back: the same load and call as the converted SavedModel."""
    import tensorflow as tf

    from converter.bench.runtimes import Bench, tf_histogram, tf_threads

    tf_threads(threads)
    with tempfile.TemporaryDirectory(prefix="keras-twin-") as tmp:
        about = export(zoo, manifest, Path(tmp) / "saved_model")
        loaded = tf.saved_model.load(str(Path(tmp) / "saved_model"))  # variables are read into memory here
    signature = loaded.signatures["serving_default"]
    (name, _), = signature.structured_input_signature[1].items()

    def call(feed: tf.Tensor) -> list[np.ndarray]:
        return [t.numpy() for t in signature(**{name: feed}).values()]

    return Bench("keras_twin", "fp32", f"keras.applications.{about['keras_class']} ({about['parameters']:,} parameters)",
                 lambda xs: tf.constant(np.ascontiguousarray(xs[0].transpose(0, 2, 3, 1), dtype=np.float32)), call,
                 op_histogram=tf_histogram(signature))
