"""fp16 TFLite files cast from the fp32 file by LiteRT's quantiser (``ai_edge_quantizer``), not converted again.

TF's converter builds an fp16 file by running the whole MLIR conversion a second time, with float16 weights
(convnext_tiny: 6 s, as long as its fp32 file). ``ai_edge_quantizer``'s float casting rewrites the fp32 flatbuffer
instead (0.7 s): the weights of FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and EMBEDDING_LOOKUP
become float16 constants behind a DEQUANTIZE, and the model computes in float32, as in TF's fp16 files. It casts
nothing else, so where large weights feed other ops (a GATHER embedding table, a positional embedding that is added,
LSTM weights) the file would stay largely float32: when a float32 constant of ``MIN_ELEMENTS`` or more is left, the
fp16 file comes from TF's converter as before. The manifest says which (``details.fp16_route``).

Small constants (biases of ADD, layer-norm scales) stay float32, where TF's converter casts them too: the file is
a fraction of a percent larger and a little closer to fp32. It keeps the fp32 file's conversion metadata (TF's,
naming no optimisation) beside the quantiser's.
"""

from __future__ import annotations

import numpy as np

from converter._convert.quiet import silenced
from converter.errors import first_line

#: a float32 constant this large left after casting sends the file to TF's converter: TFLite's dynamic-range
#: quantiser's own threshold for weights worth quantising (it leaves smaller ones in float)
MIN_ELEMENTS = 1024

def cast_fp16(fp32: bytes, verbose: bool = False) -> tuple[bytes | None, str]:
    """The fp16 file cast from the fp32 file ``fp32``, or None and why not (a large float32 constant the quantiser
    leaves, or its error)."""
    try:
        with silenced(verbose):
            blob = _cast(fp32)
    except Exception as exc:  # an op or graph the quantiser cannot handle: TF's converter builds the file
        return None, f"ai_edge_quantizer failed: {first_line(exc, 200)}"
    left = float32_constants(blob)
    if left:
        return None, (f"{len(left)} float32 constant(s) of {MIN_ELEMENTS}+ elements feed ops the quantiser does not "
                      f"cast (first: {left[0]})")
    return blob, ""


def float32_constants(tflite_bytes: bytes, min_elements: int = MIN_ELEMENTS) -> list[str]:
    """The names of the float32 constant tensors (a buffer with data) of at least ``min_elements``, in every
    subgraph, read through the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite_bytes, 0)
    names = []
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for k in range(graph.TensorsLength()):
            tensor = graph.Tensors(k)
            if tensor.Type() != schema.TensorType.FLOAT32 or not model.Buffers(tensor.Buffer()).DataLength():
                continue
            if int(np.prod(tensor.ShapeAsNumpy())) >= min_elements:
                names.append(tensor.Name().decode())
    return names


def _cast(fp32: bytes) -> bytes:
    from ai_edge_quantizer import qtyping, quantizer

    cast = quantizer.Quantizer(fp32)
    cast.update_quantization_recipe(
        regex=".*", operation_name="*", algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
    return bytes(cast.quantize().quantized_model)
