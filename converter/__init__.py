"""torch2tf: PyTorch -> ONNX -> TensorFlow SavedModel + TFLite, with a parity report across every runtime.

The public surface::

    import converter
    result = converter.convert(model, torch.randn(1, 3, 224, 224), out_dir="out/net", precisions=("fp32", "fp16"))
    result.parity.raise_if_failed()
    result.runtime("tflite_fp32")(x)  # NumPy outputs in the PyTorch layout

Names are imported lazily (PEP 562): ``import converter`` stays cheap, so the ``convert`` command can start its
PyTorch child before NumPy, ONNX or TensorFlow load.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "convert": "converter.api",
    "check": "converter.api",
    "ConversionResult": "converter.api",
    "Runtime": "converter.runtime",
    "load_runtime": "converter.runtime",
    "ConvertOptions": "converter.options",
    "ParityReport": "converter.parity.judge",
    "assert_parity": "converter.testing",
    "ConverterError": "converter.errors",
    "InputError": "converter.errors",
    "ModelLoadError": "converter.errors",
    "ExportError": "converter.errors",
    "TensorFlowConversionError": "converter.errors",
    "ArtifactsChanged": "converter.errors",
    "ParityFailed": "converter.errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'converter' has no attribute {name!r}")
