"""Write the TF artifacts: a SavedModel with a ``serving_default`` signature and TFLite files.

Both come from one ``tf.function`` that wraps the onnx2tf Keras model: it takes the inputs in the artifact
layout under the user's names, transposes only where the artifact layout differs from the graph's, and
returns a dict keyed by the user's output names. The TFLite converter runs on that same function, so the
SavedModel and every TFLite file share one signature.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from converter._convert import layout
from converter.errors import TensorFlowConversionError, first_line
from converter._convert.quiet import silenced
from converter._convert.tensorflow import TFGraph

SIGNATURE_KEY = "serving_default"


def build_serving_module(graph: TFGraph, dynamic_batch: bool, batch_map: bool = False):
    """A ``tf.Module`` holding the Keras model and the serving ``tf.function``.

    ``batch_map``: the Keras model was built for batch 1 (onnx2tf could not build the symbolic-batch graph);
    the serving function maps it over the batch (``tf.map_fn``: a WHILE loop in TFLite), so every artifact
    still takes any batch and computes exactly the batch-1 function per sample.
    """
    import tensorflow as tf

    keras_model = graph.keras_model
    in_moves = [layout.between(i.artifact_perm, i.keras_perm) for i in graph.inputs]
    out_moves = [layout.between(o.keras_perm, o.artifact_perm) for o in graph.outputs]
    specs = []
    for info in graph.inputs:
        shape = list(info.artifact_shape)
        if dynamic_batch:
            shape[0] = None
        specs.append(tf.TensorSpec(shape, tf.as_dtype(info.dtype), name=info.name))
    names = [o.name for o in graph.outputs]

    def run(xs):
        ys = keras_model(xs if len(xs) > 1 else xs[0], training=False)
        return list(ys) if isinstance(ys, (list, tuple)) else [ys]

    def mapped(xs):
        def one(sample):
            return tuple(y[0] for y in run([x[None] for x in sample]))

        out_specs = tuple(tf.TensorSpec(o.shape[1:], o.dtype) for o in keras_model.outputs)
        return list(tf.map_fn(one, tuple(xs), fn_output_signature=out_specs))

    def in_artifact_layout(args, body):
        xs = [x if m == layout.identity(len(m)) else tf.transpose(x, m) for x, m in zip(args, in_moves)]
        return {n: (y if m == layout.identity(len(m)) else tf.transpose(y, m))
                for n, y, m in zip(names, body(xs), out_moves)}

    def serve(*args):
        return in_artifact_layout(args, mapped if batch_map else run)

    module = _serving_module_class()()
    if batch_map:
        # the per-sample graph the signature maps over, as a saved function beside it (not a signature): the
        # tf2onnx round trip checks this one, since tf2onnx writes map_fn's WHILE loop as an ONNX Loop that
        # onnxruntime refuses (see parity.runtimes.tf2onnx_roundtrip_job)
        one_specs = [tf.TensorSpec([1, *s.shape[1:]], s.dtype, name=s.name) for s in specs]

        def serve_one(*args):
            return in_artifact_layout(args, run)

        module.serve_one = tf.function(serve_one, input_signature=one_specs, autograph=False)
    # Track only the variables, not the Keras model: saving a Keras model traces every layer's call
    # function for Keras' own loading path, which TF Serving and TFLite never use (3-5x slower save).
    module.variables_ = list(keras_model.variables)
    object.__setattr__(module, "serve_model", keras_model)  # reachable, but not tracked (see save_saved_model)
    module.serve = tf.function(serve, input_signature=specs, autograph=False)
    return module


@functools.cache
def _serving_module_class():
    import tensorflow as tf

    class ServingModule(tf.Module):
        """A ``tf.Module`` whose ``variables``/``submodules`` properties do not walk ``serve_model``: the SavedModel
        writer evaluates every property of the object it saves, and walking the Keras model visits each of its
        layers (1,300 on convnext_tiny: 0.3-0.5 s per save) for variables ``variables_`` already lists."""

        _TF_MODULE_IGNORED_PROPERTIES = tf.Module._TF_MODULE_IGNORED_PROPERTIES | {"serve_model"}  # noqa: SLF001

    return ServingModule


def save_saved_model(module, path: Path, verbose: bool = False) -> None:
    """Write the SavedModel. When the fast path cannot (untracked resources), the archive written instead
    becomes the TFLite converter's source too (``module.saved_model_source``)."""
    import tensorflow as tf
    from tensorflow.python.saved_model import save_context

    # traced in a save context, as the writer looks it up: a function traced outside one is traced again inside
    # (the context is part of tf.function's cache key), 0.9 s more on convnext_tiny's 1,300 layers
    with save_context.save_context(tf.saved_model.SaveOptions()):
        concrete = module.serve.get_concrete_function()
    # some onnx2tf layers hold variables the Keras model does not list (seen: convnext's depthwise kernels, whose
    # plain save then fails on an "untracked" resource): track every variable the traced function reads
    listed = {id(v) for v in module.variables_}
    module.variables_ = [*module.variables_, *(v for v in concrete.graph.variables if id(v) not in listed)]
    with silenced(verbose):
        try:
            tf.saved_model.save(module, str(path), signatures={SIGNATURE_KEY: concrete})
        except (AssertionError, ValueError, KeyError) as exc:
            if "untracked" not in str(exc):
                raise
            # a captured resource that is not a variable: tf_keras' ExportArchive tracks everything the Keras model
            # owns; same signature
            _save_with_export_archive(module, path)
            object.__setattr__(module, "saved_model_source", str(path))


def _save_with_export_archive(module, path: Path) -> None:
    import shutil

    import tf_keras

    shutil.rmtree(path, ignore_errors=True)
    archive = tf_keras.export.ExportArchive()
    archive.track(module.serve_model)
    archive.add_endpoint(name=SIGNATURE_KEY, fn=module.serve.python_function,
                         input_signature=module.serve.input_signature)
    if hasattr(module, "serve_one"):  # a saved function, not an endpoint: every endpoint becomes a signature
        archive.serve_one = module.serve_one
    archive.write_out(str(path))


def tflite_converter(module, saved_model: Path | None = None):
    """A ``TFLiteConverter`` for the serving function.

    From the SavedModel when there is one on disk (``saved_model``, or the archive ExportArchive wrote, whose
    resources are only tracked there): the TFLite file is then built from exactly the SavedModel that ships,
    and it is faster — ``from_concrete_functions`` saves the module into a temporary SavedModel and converts
    *that*, every time (mnist_cnn: 0.23 vs 0.38 s per file, same graph; only the flatbuffer's "converted from"
    metadata differs). Without one, straight from the concrete function."""
    import tensorflow as tf

    source = saved_model if saved_model is not None else getattr(module, "saved_model_source", None)
    if source is not None:
        return saved_model_converter(source)
    return tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)


def saved_model_converter(path: str | Path):
    """A ``TFLiteConverter`` for the ``serving_default`` signature of the SavedModel at ``path``: what
    ``TFLiteConverter.from_saved_model`` returns, without its extra reads of the SavedModel
    (:mod:`converter._convert.leanlite`); the file's conversion metadata says "from a SavedModel"."""
    import tensorflow as tf

    from converter._convert import leanlite

    return leanlite.saved_model_converter(path, {tf.saved_model.SERVING}, SIGNATURE_KEY)


def positional(module, representative: Callable[[], Iterable]) -> Callable[[], Iterable[list[np.ndarray]]]:
    """``representative`` with each ``{input name: array}`` sample as a list in the serving function's argument
    order (what the QuantizationDebugger feeds a concrete function); lists pass through."""
    names = [spec.name for spec in module.serve.input_signature]

    def generator():
        for sample in representative():
            yield [sample[n] for n in names] if isinstance(sample, dict) else sample

    return generator


def convert_tflite(
    module,
    precision: str,
    representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
    verbose: bool = False,
    saved_model: Path | None = None,
) -> bytes:
    """One TFLite flatbuffer at ``precision`` (fp32 | fp16 | dynamic_int8 | int8).

    int8 keeps float32 inputs/outputs (quantize/dequantize at the edges) so the same feeding code works
    for every precision; its ranges come from ``representative`` (real data, never random).
    ``saved_model``: the module's SavedModel on disk, the converter's source when given (:func:`tflite_converter`).
    """
    import tensorflow as tf

    converter = tflite_converter(module, saved_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        if representative is None:
            raise TensorFlowConversionError("full int8 needs representative data", "pass --calibration-data FILE.npy")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with silenced(verbose):
            return converter.convert()
    except Exception as exc:
        first = first_line(exc)
        raise TensorFlowConversionError(f"TFLite {precision} conversion failed: {first}",
                                        "rerun with --verbose; drop that precision with --precision") from None


def unquantised(tflite_file: Path, precision: str) -> str | None:
    """Why an int8 TFLite file is not really quantised, or None when it is.

    Full int8 must hold int8 tensors; dynamic-range int8 must, unless no float weight reaches the quantiser's
    1024-element threshold (``halfcast.MIN_ELEMENTS``; a small model's file then stays float, and that is what it
    should be)."""
    from converter._convert.halfcast import float32_constants

    if quantised_tensors(tflite_file):
        return None
    if precision == "int8":
        return "it holds no int8 tensor"
    weights = float32_constants(tflite_file.read_bytes())
    return f"it holds no int8 tensor, though {len(weights)} float weight(s) are large enough to quantise" \
        if weights else None


def quantised_tensors(tflite_file: Path) -> int:
    """How many int8 tensors a TFLite file holds."""
    from ai_edge_litert.interpreter import Interpreter

    return sum(d["dtype"] == np.int8 for d in Interpreter(model_path=str(tflite_file)).get_tensor_details())


def op_histogram(tflite_bytes: bytes) -> dict[str, int]:
    """How many of each op a TFLite file holds (e.g. how many TRANSPOSE the layout cost), in every subgraph: a
    batch-mapped graph keeps the model in a WHILE body, where the interpreter's op list (the main subgraph) would
    show one WHILE. Custom ops count by their custom code."""
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = schema.Model.GetRootAsModel(tflite_bytes, 0)
    kinds = []
    for k in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(k)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # small codes live in the deprecated field
        custom = code.CustomCode()
        is_custom = builtin == schema.BuiltinOperator.CUSTOM and custom
        kinds.append(custom.decode() if is_custom else names.get(builtin, str(builtin)))
    counts: dict[str, int] = {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for k in range(graph.OperatorsLength()):
            kind = kinds[graph.Operators(k).OpcodeIndex()]
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def tflite_io_order(tflite_bytes: bytes) -> dict[str, list[str]]:
    """The order in which a TFLite file's interpreter lists its inputs and outputs (``get_input_details()``, what
    code feeding by position uses), by signature name. TFLite sorts signature entries by name, so it often differs
    from the model's order (``attention_mask`` before ``input_ids``): the manifest records it, parity.md warns."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_bytes)
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)

    def order(listed: list[dict], signature: dict) -> list[str]:
        name_of = {detail["index"]: name for name, detail in signature.items()}
        return [name_of[d["index"]] for d in listed if d["index"] in name_of]

    return {"input_order": order(interpreter.get_input_details(), runner.get_input_details()),
            "output_order": order(interpreter.get_output_details(), runner.get_output_details())}
