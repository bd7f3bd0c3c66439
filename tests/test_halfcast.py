"""fp16 files cast from the fp32 file (:mod:`converter._convert.halfcast`), and when TF's converter builds them."""

from __future__ import annotations

import numpy as np
import pytest

from converter._convert import halfcast, tfexport


def _fp32_file(with_added_table: bool, optimize: bool = False) -> bytes:
    """A dense layer (64 x 64 weights) then, with ``with_added_table``, a 32 x 64 constant added to the result;
    ``optimize``: TF's dynamic-range int8 file of it instead."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    weights = tf.constant(rng.standard_normal((64, 64)).astype(np.float32) / 8)
    table = tf.constant(rng.standard_normal((32, 64)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([32, 64], tf.float32, name="x")])
    def serve(x):
        y = tf.nn.relu(tf.matmul(x, weights))
        return {"y": y + table if with_added_table else y}

    module = tf.Module()
    module.serve = serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], module)
    if optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _run(blob: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=blob).get_signature_runner()(x=x)["y"]


def test_weights_become_float16_and_the_outputs_stay_close() -> None:
    fp32 = _fp32_file(with_added_table=False)
    assert halfcast.float32_constants(fp32) != []
    fp16, why = halfcast.cast_fp16(fp32)
    assert fp16 is not None, why
    assert halfcast.float32_constants(fp16) == []
    assert len(fp16) < 0.7 * len(fp32)
    assert tfexport.op_histogram(fp16)["DEQUANTIZE"] == 1
    x = np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)
    want, got = _run(fp32, x), _run(fp16, x)
    assert 0 < np.max(np.abs(got - want)) <= 2e-3 * np.max(np.abs(want))


def test_a_large_weight_the_quantiser_does_not_cast_sends_the_file_to_tfs_converter() -> None:
    fp16, why = halfcast.cast_fp16(_fp32_file(with_added_table=True))
    assert fp16 is None
    assert why.startswith("1 float32 constant(s) of 1024+ elements feed ops the quantiser does not cast"), why


def test_a_file_the_quantiser_cannot_read_is_a_reason_not_an_error() -> None:
    fp16, why = halfcast.cast_fp16(b"not a flatbuffer")
    assert fp16 is None and why.startswith("ai_edge_quantizer failed: "), why


@pytest.mark.parametrize(("min_elements", "expected"), [(4096, 1), (4097, 0)])
def test_float32_constants_counts_elements(min_elements: int, expected: int) -> None:
    assert len(halfcast.float32_constants(_fp32_file(with_added_table=False), min_elements)) == expected


def test_an_int8_file_without_int8_tensors_is_reported(tmp_path) -> None:
    """``tfexport.unquantised`` (parity's check of the int8 files) counts the same large float32 constants: a float
    file passed off as dynamic-range int8 names its one 64 x 64 weight; a real dynamic-range file passes."""
    fp32 = tmp_path / "fp32.tflite"
    fp32.write_bytes(_fp32_file(with_added_table=False))
    assert tfexport.unquantised(fp32, "dynamic_int8") == \
        "it holds no int8 tensor, though 1 float weight(s) are large enough to quantise"
    assert tfexport.unquantised(fp32, "int8") == "it holds no int8 tensor"
    quantised = tmp_path / "dynamic.tflite"
    quantised.write_bytes(_fp32_file(with_added_table=False, optimize=True))
    assert tfexport.unquantised(quantised, "dynamic_int8") is None


def test_a_small_models_float_dynamic_range_file_passes_and_says_so(tmp_path) -> None:
    """Every weight under TFLite's 1024-element threshold: the dynamic-range file is float, as it should be; its
    passing row says so (in parity.md too) instead of passing silently. A file with a large float weight fails."""
    import tensorflow as tf

    from converter.parity import judge
    from converter.parity.markdown import passed_cell
    from converter.parity.run import _require_quantised

    weights = tf.constant(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32, name="x")])
    def serve(x):
        return {"y": tf.matmul(x, weights)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    (tmp_path / "model_dynamic_int8.tflite").write_bytes(converter.convert())
    (tmp_path / "large.tflite").write_bytes(_fp32_file(with_added_table=False))

    def row(artifact: str) -> judge.RuntimeResult:
        return judge.RuntimeResult("tflite", "dynamic_int8", artifact, 0.0, 0.0, 0.0, 1.0, 1.0, None, {}, True)

    small, large = row("model_dynamic_int8.tflite"), row("large.tflite")
    _require_quantised(tmp_path, small)
    _require_quantised(tmp_path, large)
    assert small.passed and small.reason == "float: no weight reaches the 1024-element size TFLite quantises"
    assert passed_cell(small.passed, small.reason) == f"yes ({small.reason})"
    assert not large.passed and "large enough to quantise" in large.reason
