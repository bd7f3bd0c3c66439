"""The SavedModel writer (:mod:`converter._convert.tfexport`): the serving signature around onnx2tf's Keras model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converter._convert import layout, leanlite, tfexport
from converter._convert.tensorflow import TensorSpecInfo, TFGraph


def _hidden_variable_graph():
    """A Keras model whose only weight is a variable it does not list (a Lambda layer closing over it), as some
    onnx2tf layers hold theirs (convnext_tiny's first depthwise convolutions)."""
    import tensorflow as tf
    import tf_keras

    hidden = tf.Variable(np.arange(1, 5, dtype=np.float32), name="hidden")
    x = tf_keras.Input((4,), batch_size=1, name="x")
    model = tf_keras.Model(x, tf_keras.layers.Lambda(lambda t: t * hidden)(x))
    io = [TensorSpecInfo(name, (1, 4), "float32", layout.identity(2), layout.identity(2)) for name in ("x", "y")]
    return TFGraph(model, io[:1], io[1:]), hidden


def test_a_variable_the_keras_model_does_not_list_is_saved(tmp_path: Path) -> None:
    """The plain ``tf.saved_model.save`` writes it (not the slower ExportArchive fallback), and the loaded
    signature computes with its values."""
    import tensorflow as tf

    graph, hidden = _hidden_variable_graph()
    assert not graph.keras_model.variables
    module = tfexport.build_serving_module(graph, dynamic_batch=False)
    tfexport.save_saved_model(module, tmp_path / "saved_model")
    assert not hasattr(module, "saved_model_source")
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures[tfexport.SIGNATURE_KEY]
    x = np.array([[0.5, -1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(serve(x=tf.constant(x))["y"].numpy(), x * hidden.numpy())


def test_the_serving_function_is_traced_once_and_the_keras_model_is_not_walked(tmp_path: Path) -> None:
    """The SavedModel writer looks the signature up in a save context, where a function traced outside one is
    traced again (convnext_tiny: 0.9 s); and it reads every property of the module, whose ``variables`` and
    ``submodules`` would visit each layer of the Keras model behind ``serve_model``."""
    import tensorflow as tf
    import tf_keras

    x = tf_keras.Input((4,), batch_size=1, name="x")
    model = tf_keras.Model(x, tf_keras.layers.Dense(2, name="head")(tf_keras.layers.Dense(3, name="hidden")(x)))
    io = [TensorSpecInfo("x", (1, 4), "float32", layout.identity(2), layout.identity(2)),
          TensorSpecInfo("y", (1, 2), "float32", layout.identity(2), layout.identity(2))]
    module = tfexport.build_serving_module(TFGraph(model, io[:1], io[1:]), dynamic_batch=False)
    assert module.submodules == ()
    assert {v.ref() for v in module.variables} == {v.ref() for v in model.variables}
    tfexport.save_saved_model(module, tmp_path / "saved_model")
    assert module.serve.experimental_get_tracing_count() == 1
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures[tfexport.SIGNATURE_KEY]
    sample = np.array([[0.5, -1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(serve(x=tf.constant(sample))["y"].numpy(), model(sample).numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    graph, _ = _hidden_variable_graph()
    path = tmp_path_factory.mktemp("lean") / "saved_model"
    tfexport.save_saved_model(tfexport.build_serving_module(graph, dynamic_batch=False), path)
    return path


def _buffers(blob: bytes) -> list[bytes]:
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(blob, 0)
    return sorted(model.Buffers(k).DataAsNumpy().tobytes() for k in range(model.BuffersLength())
                  if model.Buffers(k).DataLength())


@pytest.mark.parametrize("precision", ["fp32", "fp16", "dynamic_int8"])
def test_lean_converter_writes_what_from_saved_model_writes(saved_model: Path, monkeypatch, precision: str) -> None:
    """Same ops, same buffer contents, same outputs and conversion metadata as ``from_saved_model``; and it never
    restores the SavedModel's objects (``tf.saved_model.load``, 1-1.5 s on convnext_tiny, for every file)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import lite
    from tensorflow.lite.python.util import get_conversion_metadata

    def configure(converter):
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if precision != "fp32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()

    plain = configure(tf.lite.TFLiteConverter.from_saved_model(str(saved_model)))
    with monkeypatch.context() as patch:
        patch.setattr(lite, "_load", lambda *a, **k: pytest.fail("the lean converter restored the SavedModel"))
        lean = configure(tfexport.saved_model_converter(saved_model))
    assert tfexport.op_histogram(lean) == tfexport.op_histogram(plain)
    assert _buffers(lean) == _buffers(plain)
    assert get_conversion_metadata(lean).environment.modelType == get_conversion_metadata(plain).environment.modelType
    x = np.array([[0.5, -1.0, 2.0, 3.0]], np.float32)
    runs = [Interpreter(model_content=b).get_signature_runner(tfexport.SIGNATURE_KEY)(x=x)["y"] for b in (lean, plain)]
    np.testing.assert_array_equal(*runs)


def test_duplicate_buffers_are_found(saved_model: Path) -> None:
    """The lean converter skips TF's Python deduplication only when no two buffers are equal: a file with a buffer
    copied into another of the same size is found, as is one that differs by a byte."""
    from tensorflow.lite.tools import flatbuffer_utils

    blob = tfexport.convert_tflite(None, "fp32", saved_model=saved_model)
    assert not leanlite.duplicate_buffers(blob)
    model = flatbuffer_utils.convert_bytearray_to_object(blob)
    data = next(b.data for b in model.buffers if b.data is not None and len(b.data))
    for copy, duplicated in ((data.copy(), True), (np.concatenate([data[:-1], data[-1:] ^ 1]), False)):
        edited = flatbuffer_utils.convert_bytearray_to_object(blob)
        edited.buffers.append(type(edited.buffers[0])())
        edited.buffers[-1].data = copy
        assert leanlite.duplicate_buffers(bytes(flatbuffer_utils.convert_object_to_bytearray(edited))) is duplicated


def test_the_lean_converter_holds_only_the_graph_ops(saved_model: Path) -> None:
    """What the conversion keeps of the SavedModel's graph while MLIR converts it: every node's and function node's
    name and op (TF reads them to find fake-quantisation ops), no attribute, so no constant's bytes."""
    from tensorflow.python.saved_model import loader_impl

    graph = loader_impl.parse_saved_model(str(saved_model)).meta_graphs[0].graph_def
    skeleton = leanlite.ops_only(graph)
    assert [(n.name, n.op) for n in skeleton.node] == [(n.name, n.op) for n in graph.node]
    assert [[(n.name, n.op) for n in f.node_def] for f in skeleton.library.function] == \
        [[(n.name, n.op) for n in f.node_def] for f in graph.library.function]
    assert not any(n.attr for n in skeleton.node) and any(n.attr for n in graph.node)
    assert tfexport.saved_model_converter(saved_model)._ops_only == skeleton


def _while_loop_saved_model(path: Path) -> Path:
    """A SavedModel whose TFLite file has three subgraphs (a WHILE op's condition and body) and integer tensors."""
    import tensorflow as tf

    class Loop(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = tf.Variable(np.linspace(0.5, 2.0, 4, dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def serve(self, x):
            _, y = tf.while_loop(lambda i, t: i < 3, lambda i, t: (i + 1, t * self.scale + 1.0), (tf.constant(0), x))
            return {"y": y}

    module = Loop()
    tf.saved_model.save(module, str(path), signatures={tfexport.SIGNATURE_KEY: module.serve.get_concrete_function()})
    return path


@pytest.mark.parametrize("graph", ["dense", "while_loop"])
def test_conversion_metadata_is_added_without_unpacking_the_file(saved_model: Path, tmp_path: Path, monkeypatch,
                                                                 graph: str) -> None:
    """The lean converter adds TF's conversion metadata to the converter's bytes as they are (TF unpacks and repacks
    the whole flatbuffer in Python: 0.47 s on convnext_tiny): the file holds the same model, field for field, as TF's
    own metadata pass writes from the same bytes, hash and sparsity modes included, and runs the same."""
    import copy

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import lite
    from tensorflow.lite.python.util import get_conversion_metadata
    from tensorflow.lite.tools import flatbuffer_utils

    source = saved_model if graph == "dense" else _while_loop_saved_model(tmp_path / "loop")
    converter = tfexport.saved_model_converter(source)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    metadata = copy.deepcopy(converter._metadata)
    with monkeypatch.context() as patch:
        patch.setattr(lite.flatbuffer_utils, "convert_bytearray_to_object",
                      lambda *a: pytest.fail("the flatbuffer was unpacked for its metadata"))
        ours = converter.convert()
    converter.exclude_conversion_metadata = True
    raw = converter.convert()
    converter.exclude_conversion_metadata, converter._metadata = False, metadata
    theirs = lite.TFLiteConverterBase._convert_and_export_metrics(converter, lambda *_: raw)  # TF's own pass

    def canonical(blob: bytes) -> bytes:
        return bytes(flatbuffer_utils.convert_object_to_bytearray(
            flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))))

    assert ours != theirs and canonical(ours) == canonical(theirs)
    assert get_conversion_metadata(ours).environment.modelHash == get_conversion_metadata(theirs).environment.modelHash
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(ours))
    assert len(model.subgraphs) == (1 if graph == "dense" else 3)
    x = np.array([[0.5, -1.0, 2.0, 3.0]], np.float32)
    runs = [Interpreter(model_content=b).get_signature_runner(tfexport.SIGNATURE_KEY)(x=x)["y"] for b in (ours, theirs)]
    np.testing.assert_array_equal(*runs)
