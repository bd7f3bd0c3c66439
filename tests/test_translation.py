"""onnx2tf's two routes (:func:`converter._convert.tensorflow.onnx_to_keras`): the fast translation without strict
mode, kept when it reproduces onnxruntime on the sample, and strict mode when it does not."""

from __future__ import annotations

import re

import numpy as np
import pytest
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from converter._convert import rewrites, tensorflow
from converter.errors import TensorFlowConversionError

OPSET = 17


def _model(nodes, shape, inits, out_shape=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape or shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def channels_last_block(residual: bool) -> onnx.ModelProto:
    """A ConvNeXt block on a square 6x6 map: depthwise conv, permute to channels-last, Linear (MatMul + bias[C]),
    permute back, layer scale ``gamma[C, 1, 1]``, and (``residual``) the skip connection."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "k"),
             numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias"),
             numpy_helper.from_array(rng.standard_normal((8, 1, 1)).astype(np.float32), "gamma")]
    nodes = [helper.make_node("Conv", ["x", "k"], ["c"], group=8, pads=[1, 1, 1, 1], name="/dw/Conv"),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1], name="/block/Transpose"),
             helper.make_node("MatMul", ["t", "w"], ["h"], name="/block/MatMul"),
             helper.make_node("Add", ["h", "bias"], ["hb"], name="/block/Add"),
             helper.make_node("Transpose", ["hb"], ["u"], perm=[0, 3, 1, 2], name="/block/Transpose_1"),
             helper.make_node("Mul", ["u", "gamma"], ["s" if residual else "out"], name="/block/Mul")]
    if residual:
        nodes.append(helper.make_node("Add", ["s", "x"], ["out"], name="/block/Add_1"))
    return _model(nodes, [1, 8, 6, 6], inits)


def _translate(model: onnx.ModelProto):
    x = np.random.default_rng(1).standard_normal((1, 8, 6, 6)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    return tensorflow.onnx_to_keras(model, [(1, 8, 6, 6)], [np.dtype(np.float32)], ["out"], [x], ref, "nhwc")


def test_static_constants_become_full_rank_only_for_the_fast_route() -> None:
    """Strict mode picks a broadcast constant's layout itself; the fast route needs ``bias[8]`` as ``[1, 1, 1, 8]``
    and ``gamma[8, 1, 1]`` as ``[1, 8, 1, 1]``, which onnx2tf then lays out like the activation they meet."""
    model = channels_last_block(residual=False)
    strict = rewrites.prepare_for_onnx2tf(model)
    fast = rewrites.prepare_for_onnx2tf(model, fast=True)
    assert "full_rank_broadcast_constants" not in strict.applied
    assert "full_rank_broadcast_constants" in fast.applied
    dims = {t.name: list(t.dims) for t in fast.model.graph.initializer}
    assert sorted(d for d in dims.values() if len(d) == 4 and d != [8, 1, 3, 3]) == [[1, 1, 1, 8], [1, 8, 1, 1]]
    assert fast.onnx2tf_kwargs.get("disable_strict_mode") is True
    assert "disable_strict_mode" not in strict.onnx2tf_kwargs


def test_the_fast_route_is_kept_when_it_matches_onnxruntime() -> None:
    graph = _translate(channels_last_block(residual=False))
    assert graph.translation == {"strict_mode": False, "checked_nodes": [], "rebuilt_nodes": [],
                                 "relabelled_tensors": [], "channels_last_depthwise": []}
    assert graph.sample_error < 1e-5


def test_weight_products_are_2d_matmuls_on_the_fast_route() -> None:
    """The channels-last Linear (a [1, 6, 6, 8] activation times a constant [8, 8]) is one 2-D MatMul in the TF
    graph, not a broadcasting BatchMatMulV2, and stays exact."""
    import tensorflow as tf

    graph = _translate(channels_last_block(residual=False))
    assert graph.translation["strict_mode"] is False, graph.translation
    model = graph.keras_model
    traced = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec(model.inputs[0].shape, tf.float32))
    ops = {op.type for op in traced.graph.get_operations()}
    assert "MatMul" in ops and "BatchMatMulV2" not in ops, sorted(ops)
    assert graph.sample_error < 1e-5


def channels_first_norm_then_depthwise(batch: int | str = 1) -> onnx.ModelProto:
    """torchvision ConvNeXt's ``LayerNorm2d`` (permute to channels-last, a per-channel op, permute back) feeding a
    depthwise conv: after the literal Transpose back, onnx2tf holds the conv's input in NCHW."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "k")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1], name="/norm/Transpose"),
             helper.make_node("MatMul", ["t", "w"], ["h"], name="/norm/MatMul"),
             helper.make_node("Transpose", ["h"], ["u"], perm=[0, 3, 1, 2], name="/norm/Transpose_1"),
             helper.make_node("Conv", ["u", "k"], ["out"], group=8, pads=[1, 1, 1, 1], name="/dw/Conv")]
    return _model(nodes, [batch, 8, 6, 6], inits)


@pytest.mark.parametrize("batch", [1, "N"])
def test_a_depthwise_conv_of_a_channels_first_tensor_stays_depthwise(batch) -> None:
    """onnx2tf judges "depthwise" from its input's shape before moving it to NHWC, so this conv became a grouped
    Conv2D (~10x slower on CPU); the fast route hands it the NHWC tensor and it is DepthwiseConv2dNative, exact, with
    a fixed and with a symbolic batch."""
    import tensorflow as tf

    graph = _translate(channels_first_norm_then_depthwise(batch))
    assert graph.translation["strict_mode"] is False, graph.translation
    assert graph.translation["channels_last_depthwise"] == ["dw/Conv"]  # onnx2tf drops the leading "/"
    model = graph.keras_model
    traced = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec(model.inputs[0].shape, tf.float32))
    ops = [op.type for op in traced.graph.get_operations()]
    assert "DepthwiseConv2dNative" in ops and "Conv2D" not in ops, sorted(set(ops))
    assert graph.sample_error < 1e-5


def conv_then_channel_shuffle(batch: int | str = 1) -> onnx.ModelProto:
    """ShuffleNetV2's channel shuffle (2 groups of 4) after a 1x1 conv: Reshape(N, 2, 4, 6, 6) -> Transpose -> Reshape
    back, which ``shuffle_as_gather`` makes one Gather of the permutation [0, 4, 1, 5, 2, 6, 3, 7]."""
    first = -1 if isinstance(batch, str) else batch
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "k"),
             numpy_helper.from_array(np.array([first, 2, 4, 6, 6], np.int64), "grouped"),
             numpy_helper.from_array(np.array([first, 8, 6, 6], np.int64), "flat")]
    nodes = [helper.make_node("Conv", ["x", "k"], ["c"], name="/conv/Conv"),
             helper.make_node("Reshape", ["c", "grouped"], ["g"], name="/Reshape"),
             helper.make_node("Transpose", ["g"], ["t"], perm=[0, 2, 1, 3, 4], name="/Transpose"),
             helper.make_node("Reshape", ["t", "flat"], ["out"], name="/Reshape_1")]
    return _model(nodes, [batch, 8, 6, 6], inits)


@pytest.mark.parametrize("batch", [1, "N"])
def test_a_channel_shuffle_is_reshapes_not_a_gather_on_the_fast_route(batch) -> None:
    """A TFLite GATHER of activations is no XNNPACK op (each one split shufflenet's delegated graph: 1.5x
    litert-torch's latency); the shuffle's Gather is built as reshape, transpose, reshape, and stays exact."""
    import tensorflow as tf

    graph = _translate(conv_then_channel_shuffle(batch))
    assert graph.translation["strict_mode"] is False, graph.translation
    model = graph.keras_model
    traced = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec(model.inputs[0].shape, tf.float32))
    ops = [op.type for op in traced.graph.get_operations()]
    assert "GatherV2" not in ops and "Transpose" in ops, sorted(set(ops))
    assert graph.sample_error < 1e-6


def test_strict_mode_takes_over_when_the_fast_route_fails() -> None:
    """With the skip connection, onnx2tf without strict mode adds the NCHW-ordered branch to the NHWC input
    ("Dimensions must be equal, but are 8 and 6"); strict mode builds it, and the manifest says why it was used.
    If onnx2tf ever builds this without strict mode, the first assertion says so."""
    graph = _translate(channels_last_block(residual=True))
    assert graph.translation["strict_mode"] is True, graph.translation
    assert "Dimensions must be equal" in graph.translation["why"]
    assert graph.sample_error < 1e-5


def test_a_fast_graph_within_float_noise_of_onnxruntime_is_kept(monkeypatch) -> None:
    """A fast graph 1.1e-4 from onnxruntime on the sample (yolov8n's detection head on seeded noise, where strict
    mode's graph is just as far) is kept: no strict retry, which only a misplaced layout (O(1)) needs."""
    real = tensorflow._translate
    routes: list[bool] = []

    def fast_is_noisy(*args, fast: bool, **kwargs):
        routes.append(fast)
        graph = real(*args, fast=fast, **kwargs)
        if fast:
            graph.sample_error = 1.1e-4
        return graph

    monkeypatch.setattr(tensorflow, "_translate", fast_is_noisy)
    graph = _translate(channels_last_block(residual=False))
    assert routes == [True] and graph.translation["strict_mode"] is False


@pytest.mark.parametrize("from_file", [False, True], ids=["proto", "file"])
def test_a_fast_graph_that_is_wrong_on_the_sample_goes_to_strict_mode(monkeypatch, tmp_path, from_file: bool) -> None:
    """The fast graph is judged by its numbers, not only by whether onnx2tf finished: one off by more than
    FAST_MAX_ERROR on the sample is translated again in strict mode, and the smaller error wins. Given the file the
    graph is in (as ``convert`` does), each route reads it and rewrites what it read, without a copy of its
    weights; given a graph, each route rewrites a copy and the caller's graph stays as it was."""
    from converter._convert.rewrites import graph as rewrite_graph

    real = tensorflow._translate
    copies: list[bool] = []  # per deep copy of a graph: made for the fast route?

    def fast_is_off(*args, fast: bool, **kwargs):
        deep_copy = rewrite_graph._deep_copy
        monkeypatch.setattr(rewrite_graph, "_deep_copy", lambda m: copies.append(fast) or deep_copy(m))
        graph = real(*args, fast=fast, **kwargs)
        monkeypatch.setattr(rewrite_graph, "_deep_copy", deep_copy)
        if fast:
            graph.sample_error = 0.5  # as a misplaced layout would be
        return graph

    monkeypatch.setattr(tensorflow, "_translate", fast_is_off)
    model = channels_last_block(residual=False)
    x = np.random.default_rng(1).standard_normal((1, 8, 6, 6)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    source = tmp_path / "model.onnx"
    onnx.save(model, str(source))
    graph = tensorflow.onnx_to_keras(source if from_file else model, [(1, 8, 6, 6)], [np.dtype(np.float32)],
                                     ["out"], [x], ref, "nhwc")
    assert graph.translation["strict_mode"] is True
    assert graph.translation["why"] == "relative error 0.5 on the sample without strict mode"
    assert graph.sample_error < 1e-5
    assert copies == ([] if from_file else [True, False])
    assert model.SerializeToString() == channels_last_block(residual=False).SerializeToString()
    assert source.read_bytes() == model.SerializeToString()


def test_an_op_without_translator_is_refused_once(monkeypatch) -> None:
    """An op onnx2tf cannot translate fails the conversion at once, naming the op: no strict-mode retry."""
    routes: list[bool] = []
    real = tensorflow._translate
    monkeypatch.setattr(tensorflow, "_translate", lambda *a, fast, **k: routes.append(fast) or real(*a, fast=fast, **k))
    monkeypatch.setattr(tensorflow, "unsupported_ops", lambda model: [("Relu", "/r")])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["out"], name="/r")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])]))
    x = np.ones((1, 4), np.float32)
    with pytest.raises(TensorFlowConversionError, match="op Relu .*no translator"):
        tensorflow.onnx_to_keras(model, [(1, 4)], [np.dtype(np.float32)], ["out"], [x], [x], "nhwc")
    assert routes == [True]


def attention_block() -> onnx.ModelProto:
    """Tokens from a 4x4 map of 6 channels, single-head attention on them: the score map ``q @ k^T`` is 16 x 16, a
    MatMul of two activations whose sizes repeat (which of the equal axes is which, only numbers can tell)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(np.array([1, 6, 16], np.int64), "tokens"),
             numpy_helper.from_array(np.array([1, 6, 4, 4], np.int64), "map"),
             *(numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32) / 3, n)
               for n in ("wq", "wk", "wv"))]
    nodes = [helper.make_node("Reshape", ["x", "tokens"], ["r"], name="/attn/Reshape"),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1], name="/attn/Transpose"),
             helper.make_node("MatMul", ["t", "wq"], ["q"], name="/attn/q"),
             helper.make_node("MatMul", ["t", "wk"], ["k"], name="/attn/k"),
             helper.make_node("MatMul", ["t", "wv"], ["v"], name="/attn/v"),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="/attn/Transpose_1"),
             helper.make_node("MatMul", ["q", "kt"], ["scores"], name="/attn/scores"),
             helper.make_node("Softmax", ["scores"], ["p"], axis=-1, name="/attn/Softmax"),
             helper.make_node("MatMul", ["p", "v"], ["o"], name="/attn/mix"),
             helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1], name="/attn/Transpose_2"),
             helper.make_node("Reshape", ["ot", "map"], ["out"], name="/attn/Reshape_1")]
    return _model(nodes, [1, 6, 4, 4], inits)


def symbolic_attention_block() -> onnx.ModelProto:
    """``attention_block`` on a symbolic batch (its Reshape targets lead with -1)."""
    model = attention_block()
    for tensor in model.graph.initializer:
        if tensor.name in ("tokens", "map"):
            value = numpy_helper.to_array(tensor).copy()
            value[0] = -1
            tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    for info in (*model.graph.input, *model.graph.output):
        info.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(model)
    return model


def test_checks_under_a_symbolic_batch_run_at_a_batch_of_two(monkeypatch) -> None:
    """onnx2tf feeds its checks a batch of 1 for a symbolic batch, where a transposition that moves the batch axis
    changes no value (wav2vec2's attention kept one, and failed at batch 2). The fast route feeds the references and
    the Keras values a batch of 2 instead; the graph then runs batch 2 as onnxruntime does."""
    import onnx2tf.onnx2tf as entry

    from converter._convert.rewrites.fastroute import _batch_of_two

    fed = []
    real = entry.dummy_onnx_inference
    monkeypatch.setattr(entry, "dummy_onnx_inference", lambda **kw: fed.append(kw.get("shape_hints")) or real(**kw))
    model = symbolic_attention_block()
    graph = _translate_at(model, (1, 6, 4, 4))
    assert graph.translation["checked_nodes"] == ["attn/scores", "attn/mix"]
    assert fed == [["x:2,6,4,4"]]
    x = np.random.default_rng(4).standard_normal((2, 6, 4, 4)).astype(np.float32)
    (ref,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = tensorflow.run_keras(graph.keras_model, [x.transpose(0, 2, 3, 1)])
    assert tensorflow.output_error([ref], got, graph.outputs) < 1e-5
    # a fixed batch, or onnx2tf's test images, keep onnx2tf's own data
    assert _batch_of_two({"onnx_graph": attention_block()}) == []
    assert _batch_of_two({"onnx_graph": model, "test_data_nhwc": np.zeros((1, 4, 4, 6))}) == []


def _translate_at(model: onnx.ModelProto, shape: tuple[int, ...]):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    return tensorflow.onnx_to_keras(model, [shape], [np.dtype(np.float32)], ["out"], [x], ref, "nhwc")


def test_only_ambiguous_attention_matmuls_get_onnx2tfs_checks_on_the_fast_route() -> None:
    """The fast route runs onnx2tf's per-node checks (a partial Keras model per node: quadratic in depth) only for
    the MatMuls of two activations with a repeated size; the weight MatMuls are built the plain way, and the graph
    still matches onnxruntime."""
    graph = _translate_at(attention_block(), (1, 6, 4, 4))
    assert graph.translation["strict_mode"] is False, graph.translation
    assert graph.translation["checked_nodes"] == ["attn/scores", "attn/mix"]
    assert graph.translation["rebuilt_nodes"] == []
    assert graph.sample_error < 1e-5


def test_the_checks_share_one_evaluation_of_the_keras_graph(monkeypatch) -> None:
    """The checked MatMuls get their inputs' TF values from the shared evaluation (:mod:`kerasvalues`), never from
    onnx2tf's partial model run from the graph's inputs, and the graph is as exact as with onnx2tf's own."""
    import onnx2tf.utils.common_functions as common

    def partial_model(**kwargs):
        pytest.fail(f"onnx2tf built a partial model for {kwargs['graph_node_output'].name}")

    monkeypatch.setattr(common, "acquisition_of_validation_data", partial_model)
    graph = _translate_at(attention_block(), (1, 6, 4, 4))
    assert graph.translation["strict_mode"] is False, graph.translation
    assert graph.translation["checked_nodes"] == ["attn/scores", "attn/mix"]
    assert graph.sample_error < 1e-5


def test_the_shared_evaluation_matches_keras_on_every_tensor() -> None:
    """Every intermediate tensor of an onnx2tf graph, valued by :mod:`kerasvalues` in one pass (in reverse order, so
    later ones reuse earlier values), equals what a Keras model from the inputs to that tensor computes."""
    import tensorflow as tf
    import tf_keras

    from converter._convert.rewrites.kerasvalues import _KerasValues

    keras_model = _translate_at(attention_block(), (1, 6, 4, 4)).keras_model
    x = np.random.default_rng(5).standard_normal((1, 4, 4, 6)).astype(np.float32)
    tensors = [t for layer in keras_model.layers[1:] for node in layer.inbound_nodes
               for t in tf.nest.flatten(node.outputs)]
    assert len(tensors) > 10
    values = _KerasValues()
    values.bind(keras_model.inputs, {keras_model.inputs[0].name: x})
    for t in reversed(tensors):
        expected = tf_keras.Model(keras_model.inputs, t)(x, training=False).numpy()
        np.testing.assert_array_equal(values.of(t), expected, err_msg=t.name)


def test_a_node_whose_plain_build_raises_is_built_again_with_the_checks(monkeypatch) -> None:
    """A node onnx2tf cannot build without its reference values (as levit's attention MatMul once could not) is
    built again with them, computed on demand, instead of sending the whole graph to strict mode."""
    import onnx2tf.ops.Softmax as softmax_op

    real = softmax_op.make_node

    def needs_references(**kwargs):
        if kwargs.get("onnx_tensor_infos_for_validation") is None:
            raise ValueError("Dimensions must be equal (as without reference values)")
        assert kwargs["graph_node"].outputs[0].name in kwargs["onnx_tensor_infos_for_validation"]
        return real(**kwargs)

    monkeypatch.setattr(softmax_op, "make_node", needs_references)
    graph = _translate_at(attention_block(), (1, 6, 4, 4))
    assert graph.translation["strict_mode"] is False, graph.translation
    assert graph.translation["rebuilt_nodes"] == ["attn/Softmax"]
    assert graph.sample_error < 1e-5


def scalar_arithmetic() -> onnx.ModelProto:
    """Add, Sub, Mul and Div, each of an activation and a scalar constant, then of two activations."""
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("a", 0.5), ("s", 1.5), ("m", -2.0), ("d", 4.0))]
    nodes = [helper.make_node("Add", ["x", "a"], ["xa"], name="/Add"),
             helper.make_node("Sub", ["xa", "s"], ["xs"], name="/Sub"),
             helper.make_node("Mul", ["xs", "m"], ["xm"], name="/Mul"),
             helper.make_node("Div", ["xm", "d"], ["xd"], name="/Div"),
             helper.make_node("Mul", ["xd", "x"], ["y"], name="/Mul_1"),
             helper.make_node("Add", ["y", "xa"], ["out"], name="/Add_1")]
    return _model(nodes, [1, 8, 6, 6], inits)


def test_scalar_tests_build_no_keras_layers_on_the_fast_route(monkeypatch) -> None:
    """onnx2tf's Add/Sub/Mul/Div ask ``tf.rank(x) == 0`` of each input; on the fast route TensorFlow's ``rank`` sees
    only the constants (where the answer counts), never an activation (where it would build two Keras layers whose
    answer onnx2tf ignores), and the graph is exact."""
    import tensorflow as tf
    from tf_keras.src.engine.keras_tensor import KerasTensor

    seen = []
    real = tf.rank

    def spy(x, name=None):
        seen.append(isinstance(x, KerasTensor))
        return real(x, name)

    monkeypatch.setattr(tf, "rank", spy)
    graph = _translate(scalar_arithmetic())
    assert graph.translation["strict_mode"] is False, graph.translation
    assert seen and not any(seen)
    assert graph.sample_error < 1e-6


@pytest.mark.parametrize(("shapes", "constant", "expected"), [
    ([[1, 4, 16, 8], [1, 4, 8, 16], [1, 4, 16, 16]], False, True),   # q @ k^T: a square score map
    ([[1, 197, 64], [1, 64, 197], [1, 197, 197]], False, True),
    ([[1, 3, 10, 8], [1, 3, 8, 12], [1, 3, 10, 12]], False, False),  # no size repeats: the shapes decide
    ([[1, 24, 24, 96], [96, 384], [1, 24, 24, 384]], True, False),   # a Linear on a square map: weights
])
def test_which_matmuls_are_ambiguous(shapes, constant, expected) -> None:
    import onnx_graphsurgeon as gs

    from converter._convert.rewrites.fastroute import _ambiguous

    a = gs.Variable("a", np.float32, shapes[0])
    b = gs.Constant("b", np.zeros(shapes[1], np.float32)) if constant else gs.Variable("b", np.float32, shapes[1])
    node = gs.Node("MatMul", "m", inputs=[a, b], outputs=[gs.Variable("c", np.float32, shapes[2])])
    assert _ambiguous(node) is expected


def square_tokens_block(batch: int | str = 1) -> onnx.ModelProto:
    """mobilevit's unfold in small: an 8-channel 2x4 map becomes 8 tokens of 8 channels (``[1, 8, 8]``: every size
    past the batch equal), LayerNorm over the channels, and back to the map (``batch``: a symbolic one reshapes to
    ``[-1, 8, 8]``)."""
    rng = np.random.default_rng(5)
    lead = 1 if batch == 1 else -1
    inits = [numpy_helper.from_array(np.array([lead, 8, 8], np.int64), "tokens"),
             numpy_helper.from_array(np.array([lead, 8, 2, 4], np.int64), "map"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "shift")]
    nodes = [helper.make_node("Reshape", ["x", "tokens"], ["r"], name="/unfold/Reshape"),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1], name="/unfold/Transpose"),
             helper.make_node("LayerNormalization", ["t", "scale", "shift"], ["n"], axis=-1, name="/norm"),
             helper.make_node("Transpose", ["n"], ["u"], perm=[0, 2, 1], name="/fold/Transpose"),
             helper.make_node("Reshape", ["u", "map"], ["out"], name="/fold/Reshape")]
    return _model(nodes, [batch, 8, 2, 4], inits)


@pytest.mark.parametrize("batch", [1, "N"], ids=["fixed", "symbolic"])
@pytest.mark.parametrize("relabel", [True, False])
def test_equal_sized_tokens_keep_their_layout_on_the_fast_route(monkeypatch, relabel: bool, batch) -> None:
    """onnx2tf takes a tensor whose sizes past the batch are all equal for a transposed one; for a Reshape's output
    that is wrong, and the LayerNorm after it would normalise the tokens instead of the channels. The fast route
    records those tensors as in ONNX's layout and stays exact, with a fixed batch and with a symbolic one (whose
    first size TF and ONNX cannot compare: MobileViT under --dynamic-batch); without that record (the second case)
    the fast graph is off by O(1) on the sample and strict mode has to take over."""
    from converter._convert.rewrites import fastroute

    if not relabel:
        monkeypatch.setattr(fastroute, "_relabel", lambda node, tensors: [])
    graph = _translate_at(square_tokens_block(batch), (1, 8, 2, 4))
    if relabel:
        assert graph.translation["strict_mode"] is False, graph.translation
        # the reshaped tokens, their transpose, the norm (written out by layer_norm_as_foldable) and its transpose
        relabelled = graph.translation["relabelled_tensors"]
        assert relabelled[:2] == ["r", "t"] and relabelled[-2:] == ["n", "u"], relabelled
        assert all(name.startswith("norm__ln_") for name in relabelled[2:-2]), relabelled
        assert graph.sample_error < 1e-5
    else:  # (strict mode gets this small graph wrong too: 1.3)
        assert graph.translation["strict_mode"] is True, graph.translation
        assert float(graph.translation["why"].split()[2]) > 0.1, graph.translation


def pooled_tokens(declared_tokens: int | str) -> onnx.ModelProto:
    """BERT's encoder output and pooler in small, with a symbolic batch: ``hidden = x + bias`` ([N, 4, 8], a graph
    output declared with ``declared_tokens`` tokens, as the TorchScript exporter names them), ``hidden[:, 0] @ W``."""
    rng = np.random.default_rng(13)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 1, 8)).astype(np.float32), "bias"),
             numpy_helper.from_array(np.array(0, np.int64), "first"),
             numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "w")]
    nodes = [helper.make_node("Add", ["x", "bias"], ["hidden"], name="/add"),
             helper.make_node("Gather", ["hidden", "first"], ["cls"], axis=1, name="/pooler/Gather"),
             helper.make_node("MatMul", ["cls", "w"], ["out"], name="/pooler/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
                              [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", declared_tokens, 8]),
                               helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("declared_tokens", [4, "hidden_dim_1"])
def test_a_named_output_size_does_not_flip_the_layout(declared_tokens) -> None:
    """A graph output declared with a named size that inference proves static (BERT's ``last_hidden_state`` under
    --dynamic-batch) gets that size (``infer_shapes``): onnx2tf took the mismatch with the op's TF shape for a
    transposed layout, and ``hidden[:, 0]`` gathered along the channels."""
    model = pooled_tokens(declared_tokens)
    x = np.random.default_rng(2).standard_normal((1, 4, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    graph = tensorflow.onnx_to_keras(model, [(1, 4, 8)], [np.dtype(np.float32)], ["hidden", "out"], [x], ref, "nhwc")
    assert graph.sample_error < 1e-5
    assert [o.shape for o in graph.keras_model.outputs] == [(None, 4, 8), (None, 5)]


def linear_gelu_linear(batch: int | str = 1) -> onnx.ModelProto:
    """A transformer MLP on [batch, 4, 8] tokens as PyTorch exports it: Linear, ``nn.GELU()`` written as
    ``(h * (Erf(h / sqrt2) + 1)) * 0.5``, Linear."""
    rng = np.random.default_rng(11)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w2"),
             *(numpy_helper.from_array(np.array(v, np.float32), n)
               for n, v in (("sqrt2", np.sqrt(2)), ("one", 1.0), ("half", 0.5)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="/fc1/MatMul"),
             helper.make_node("Div", ["h", "sqrt2"], ["u"], name="/act/Div"),
             helper.make_node("Erf", ["u"], ["e"], name="/act/Erf"),
             helper.make_node("Add", ["e", "one"], ["s"], name="/act/Add"),
             helper.make_node("Mul", ["h", "s"], ["a"], name="/act/Mul"),
             helper.make_node("Mul", ["a", "half"], ["g"], name="/act/Mul_1"),
             helper.make_node("MatMul", ["g", "w2"], ["out"], name="/fc2/MatMul")]
    return _model(nodes, [batch, 4, 8], inits)


@pytest.mark.parametrize(("batch", "batch_map"), [(1, False), ("N", False), (1, True)],
                         ids=["fixed batch", "symbolic batch", "batch-mapped"])
def test_exact_gelu_becomes_one_tflite_gelu_op(tmp_path, batch, batch_map: bool) -> None:
    """Exact GELU is TFLite's GELU builtin (as in litert-torch's files), not tf.Erf (no TFLite builtin) nor the
    16-op erf polynomial, on every route the serving function takes; the file matches onnxruntime."""
    from converter._convert import tfexport

    x = (np.random.default_rng(2).standard_normal((1, 4, 8)) * 2).astype(np.float32)
    _, blob = _tflite_matching_onnxruntime(linear_gelu_linear(batch), x, tmp_path, batch == "N" or batch_map, batch_map)
    ops = tfexport.op_histogram(blob)  # every subgraph: batch-mapped, the model is a WHILE loop's body
    assert ops.get("GELU") == 1 and not {"SIGN", "EXP", "ABS"} & set(ops), ops


def _tflite_matching_onnxruntime(model: onnx.ModelProto, x: np.ndarray, tmp_path, dynamic_batch: bool,
                                 batch_map: bool = False):
    """(the translated graph, its fp32 TFLite file) of ``model`` on the route named, once the file's output on
    ``x`` [1, 4, 8] matched onnxruntime's."""
    from ai_edge_litert.interpreter import Interpreter

    from converter._convert import tfexport

    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    graph = tensorflow.onnx_to_keras(model, [(1, 4, 8)], [np.dtype(np.float32)], ["out"], [x], ref, "nhwc")
    module = tfexport.build_serving_module(graph, dynamic_batch=dynamic_batch, batch_map=batch_map)
    tfexport.save_saved_model(module, tmp_path / "saved_model")
    blob = tfexport.convert_tflite(module, "fp32", saved_model=tmp_path / "saved_model")
    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, ref[0], rtol=1e-5, atol=1e-5 * float(np.abs(ref[0]).max()))
    return graph, blob


@pytest.mark.parametrize(("body", "error"), [
    ("times two", None),  # the right graph
    ("sums over the batch", "disagrees with onnxruntime on a batch of 2"),  # equal to ONNX's at batch 1
    ("reshapes to batch 1", "cannot run a batch of 2"),
    ("drops all but one sample", "cannot run a batch of 2: output shapes [1, 4] where onnxruntime has [2, 4]"),
])
def test_a_symbolic_batch_graph_is_checked_on_a_batch_of_two(tmp_path, body: str, error: str | None) -> None:
    """The translation's sample is a batch of 1, which a graph that mixes the batch axis up still runs right; before
    the artifacts keep the symbolic-batch graph they run a batch of 2 against onnxruntime (an error sends the
    conversion to the batch-mapped route)."""
    import tensorflow as tf
    import tf_keras

    from converter._convert import artifacts, layout
    from converter._convert.tensorflow import TensorSpecInfo, TFGraph

    onnx.save(_model([helper.make_node("Mul", ["x", "two"], ["out"])], ["N", 4],
                     [numpy_helper.from_array(np.float32(2), "two")]), tmp_path / "model.onnx")
    bodies = {"times two": lambda t: t * 2,
              "sums over the batch": lambda t: tf.zeros_like(t) + tf.reduce_sum(t, axis=0, keepdims=True) * 2,
              "reshapes to batch 1": lambda t: tf.reshape(t, [1, 4]) * 2,
              "drops all but one sample": lambda t: t[:1] * 2}
    x = tf_keras.Input((4,), name="x")
    keras_model = tf_keras.Model(x, tf_keras.layers.Lambda(bodies[body])(x))
    io = [TensorSpecInfo(n, (1, 4), "float32", layout.identity(2), layout.identity(2)) for n in ("x", "out")]
    samples = [np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)]
    check = lambda: artifacts._check_second_batch(TFGraph(keras_model, io[:1], io[1:]),  # noqa: E731
                                                  tmp_path / "model.onnx", samples)
    if error is None:
        check()
    else:
        with pytest.raises(TensorFlowConversionError, match=re.escape(error)):
            check()


def norm_then_linear(batch: int | str = 1) -> onnx.ModelProto:
    """A pre-norm transformer block's first half on [batch, 4, 8] tokens as PyTorch exports it: LayerNormalization
    (trained-like scale and bias), then Linear (MatMul + bias)."""
    rng = np.random.default_rng(13)
    inits = [numpy_helper.from_array((rng.standard_normal(8) * 0.3 + 1).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "shift"),
             numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias")]
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "shift"], ["n"], axis=-1, epsilon=1e-6,
                              name="/norm1/LayerNormalization"),
             helper.make_node("MatMul", ["n", "w"], ["h"], name="/qkv/MatMul"),
             helper.make_node("Add", ["bias", "h"], ["out"], name="/qkv/Add")]
    return _model(nodes, [batch, 4, 8], inits)


@pytest.mark.parametrize("batch", [1, "N"], ids=["fixed batch", "symbolic batch"])
def test_a_pre_norm_folds_its_scale_and_bias_into_the_projection(tmp_path, batch) -> None:
    """A LayerNorm feeding a Linear is a centring SUB, a squaring and a normalising MUL in the TFLite file, and its
    scale and bias are in the FULLY_CONNECTED's weights (Keras' batch-norm form left four MULs, a SUB and two ADDs of
    full size; the one ADD left adds epsilon to the variance); the file matches onnxruntime."""
    from converter._convert import tfexport

    x = (np.random.default_rng(3).standard_normal((1, 4, 8)) * 2 + 0.5).astype(np.float32)
    graph, blob = _tflite_matching_onnxruntime(norm_then_linear(batch), x, tmp_path, batch == "N")
    assert "layer_norm_as_foldable" in graph.applied
    ops = tfexport.op_histogram(blob)
    # with a symbolic batch TFLite keeps the projection's bias as an ADD after the FULLY_CONNECTED
    counts = tuple(ops.get(op) for op in ("MUL", "SUB", "ADD", "FULLY_CONNECTED"))
    assert counts == (2, 1, 1 + (batch == "N"), 1), ops
