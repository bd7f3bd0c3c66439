"""int8: :mod:`.quantise` (per-layer damage, selective int8), :mod:`.int8child` (full int8 calibrated in a child),
:mod:`.int8_eval` and :mod:`.tflite_origin` (which ONNX node each TFLite tensor comes from)."""
