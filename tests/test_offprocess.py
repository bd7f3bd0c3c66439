"""Parity's child-process rows (:mod:`converter.parity.offprocess` over :class:`converter._proc.isolated.Background`):
jobs queued while the child already works, onnxruntime jobs beside TFLite ones, a refused model failing only its own
row, and the tf2onnx round trip's frozen graph without the Identity of every constant."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter._proc import isolated
from converter.parity.offprocess import ChildRows


def _affine(scale: float, batch: int | str = "N") -> bytes:
    """``out = x @ w * scale + 1`` on ``x[batch, 4]`` (NCHW-free: the layout permutation is the identity)."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 7, "w")
    s = numpy_helper.from_array(np.array(scale, np.float32), "s")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "s"], ["m"]),
             helper.make_node("Add", ["m", "one"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 3])], [w, s, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnxruntime(model: bytes, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _job(model: bytes, batch: int | None) -> isolated.Job:
    return isolated.Job(model, [isolated.Port("x", (0, 1))], [isolated.Port("out", (0, 1))], batch,
                        runtime="onnxruntime")


def test_rows_queued_while_the_child_works_match_onnxruntime_at_every_chunk_size() -> None:
    """Rows queued one by one (as a conversion writes its files) run in the started child at every chunk size,
    padded where the runner takes a fixed batch, each as two jobs (halves of the samples, split at a multiple of
    the chunk), and agree with onnxruntime run here, unsplit, to the last bit."""
    x = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    rows = ChildRows([x], (1, 3))
    try:
        rows.submit(("onnxruntime", "fp32"), "a.onnx", _job(_affine(2.0), None))
        rows.submit(("tf2onnx_roundtrip", "fp32"), "b.onnx", _job(_affine(-0.5), None))
        outputs, crashed = rows.collect()
        # every job ran in the shared child (a job it missed would have been re-run in a child of its own)
        replies = sorted(p.name for p in rows._background._dir.glob("reply-*.pkl"))
    finally:
        rows.close()
    assert replies == sorted(f"reply-{k}.pkl" for k in range(8))  # 2 rows x 2 chunk sizes x 2 halves of the samples
    assert crashed == {}
    for key, scale in ((("onnxruntime", "fp32"), 2.0), (("tf2onnx_roundtrip", "fp32"), -0.5)):
        assert sorted(outputs[key]) == [1, 3]
        for by_chunk in outputs[key].values():
            assert np.array_equal(by_chunk[0], _onnxruntime(_affine(scale), x))
    assert rows.artifacts == {("onnxruntime", "fp32"): "a.onnx", ("tf2onnx_roundtrip", "fp32"): "b.onnx"}


@pytest.mark.parametrize("reference_ends", [True, False], ids=["reference-ends", "parity-first"])
def test_the_onnx_row_waits_until_the_reference_is_computed(monkeypatch, tmp_path, reference_ends: bool) -> None:
    """While the PyTorch child still computes the reference, ``model.onnx``'s row is not queued (its session would
    hold the weights beside the child's and the TF build's); it is queued once the child is done, or when parity
    collects the rows, whichever comes first, and computes what onnxruntime computes here."""
    import threading
    import time

    from converter.parity import runtimes

    monkeypatch.setattr(runtimes, "onnx_job", lambda path, manifest: _job(_affine(2.0), None))
    x = np.random.default_rng(5).standard_normal((7, 4)).astype(np.float32)
    done = threading.Event()
    rows = ChildRows([x], (3,), reference_done=done)
    try:
        rows.written(tmp_path, None, "onnx")
        time.sleep(0.2)
        assert rows._queued == [] and rows._background is None
        if reference_ends:
            done.set()
            deadline = time.monotonic() + 10
            while not rows._queued and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [key for key, _, _ in rows._queued] == [("onnxruntime", "fp32")]
        outputs, crashed = rows.collect()
    finally:
        rows.close()
    assert crashed == {}
    assert np.array_equal(outputs[("onnxruntime", "fp32")][3][0], _onnxruntime(_affine(2.0), x))


def test_a_job_given_a_path_is_read_by_the_child_not_the_parent(tmp_path) -> None:
    """An artifact queued by its path runs the same as its bytes, and neither the parity jobs nor the pickled job
    the child reads carry the file's contents (the parent would hold every artifact again)."""
    from converter.parity import runtimes

    model = onnx.load_from_string(_affine(0.5))
    model.doc_string = "padding " * 20_000  # a 160 kB file
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    job = _job(path, None)
    background = isolated.Background([job], [x])
    try:
        out = background.result(0)[0]
        pickled = (background._dir / "job-0.run").stat().st_size  # as the child claimed it
    finally:
        background.close()
    assert np.array_equal(out, _onnxruntime(_affine(0.5), x))
    assert pickled < 2_000
    manifest = type("M", (), {"inputs": [], "outputs": [], "onnx_inputs": [], "onnx_outputs": [], "fixed_batch": 1})
    assert runtimes.tflite_job(path, manifest, 1).model == path
    assert runtimes.onnx_job(path, manifest).model == path


def _slow(depth: int = 200, width: int = 1024) -> bytes:
    """``x[N, 4]`` through ``depth`` MatMuls by one ``width``-square identity (4 MB of weights, ~0.4 GFLOP a sample):
    a few tenths of a second for 7 samples at batch 1 on one thread."""
    lift = numpy_helper.from_array(np.eye(4, width, dtype=np.float32), "lift")
    eye = numpy_helper.from_array(np.eye(width, dtype=np.float32), "eye")
    nodes = [helper.make_node("MatMul", ["x", "lift"], ["h0"])]
    nodes += [helper.make_node("MatMul", [f"h{k - 1}", "eye"], [f"h{k}"]) for k in range(1, depth)]
    nodes.append(helper.make_node("Identity", [f"h{depth - 1}"], ["out"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", width])], [lift, eye])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_an_onnxruntime_job_the_child_has_not_started_runs_here_once() -> None:
    """While the child works on a slow job, the job queued behind it is taken by this process: it runs here, the
    child skips it (no reply of its own) and still ends cleanly, and both results are what onnxruntime computes.
    A TFLite job is never taken (an interpreter abort must stay in the child)."""
    x = np.random.default_rng(4).standard_normal((7, 4)).astype(np.float32)
    background = isolated.Background([_job(_slow(), 1), _job(_affine(1.5), 1)], [x])
    try:
        assert background.take(1)
        assert not background.take(1)  # already taken: not run twice
        assert np.array_equal(background.result(1)[0], _onnxruntime(_affine(1.5), x))
        assert np.array_equal(background.result(0)[0], _onnxruntime(_slow(), x))
        assert background._returncode == 0
        assert not (background._dir / "reply-1.pkl").exists() and (background._dir / "reply-0.pkl").exists()
    finally:
        background.close()
    tflite = isolated.Background([], [x])
    try:
        tflite.jobs.append(isolated.Job(b"not read", [], [], 1))  # a TFLite job: take() must not touch it
        assert not tflite.take(0)
    finally:
        tflite.close()


def test_a_refused_model_fails_its_row_and_the_child_goes_on() -> None:
    """onnxruntime refusing a graph is a failed row with its reason; the jobs after it still run in the same child
    (which then ends cleanly) instead of each in a child of its own."""
    x = np.ones((2, 4), np.float32)
    background = isolated.Background([_job(b"not an onnx graph", None), _job(_affine(1.0), None)], [x])
    try:
        with pytest.raises(isolated.InterpreterAborted, match="onnxruntime failed on this model"):
            background.result(0)
        assert np.array_equal(background.result(1)[0], _onnxruntime(_affine(1.0), x))
        assert background._returncode == 0
    finally:
        background.close()


def test_a_fixed_batch_job_is_fed_padded_chunks() -> None:
    """A graph built for batch 2 gets 5 samples as three padded chunks; the padding never reaches the outputs."""
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    got = isolated.Background([_job(_affine(3.0, batch=2), 2)], [x])
    try:
        out = got.result(0)[0]
    finally:
        got.close()
    assert out.shape == (5, 3)
    assert np.array_equal(out, _onnxruntime(_affine(3.0), x))


def test_frozen_identities_of_constants_are_bypassed_and_outputs_kept() -> None:
    """Readers of ``Identity(Const)`` (data and control inputs) read the constant; an Identity that is a graph output
    stays, and the graph computes the same."""
    import tensorflow as tf

    from converter.parity.runtimes import _bypass_constant_identities

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 3], name="x")
        w = tf.identity(tf.constant(np.full((3, 3), 0.5, np.float32), name="w"), name="w_read")
        product = tf.matmul(x, w, name="product")
        tf.identity(tf.constant(2.0, name="c"), name="c_out")  # a constant output: its Identity is the output
        with tf.control_dependencies([w]):
            tf.identity(product, name="out")
    graph_def = graph.as_graph_def()
    _bypass_constant_identities(graph_def, ["out:0", "c_out:0"])
    nodes = {n.name: n for n in graph_def.node}
    assert "w_read" not in nodes and "c_out" in nodes
    assert list(nodes["product"].input) == ["x", "w"] and list(nodes["out"].input) == ["product", "^w"]
    again = tf.Graph()
    with again.as_default():
        tf.import_graph_def(graph_def, name="")
    feed = np.arange(6, dtype=np.float32).reshape(2, 3)
    with tf.compat.v1.Session(graph=again) as session:
        out, c = session.run(["out:0", "c_out:0"], {"x:0": feed})
    assert np.array_equal(out, feed @ np.full((3, 3), 0.5, np.float32)) and c == 2.0


def test_the_plain_round_trip_reads_its_inputs_off_the_graph_def(monkeypatch) -> None:
    """Without tf2onnx's optimizers the graph is not imported into a TF session of its own (a second copy of every
    weight) nor scanned for the functions it calls (it calls none): a resource placeholder is dropped from the
    inputs by its dtype, and the ONNX graph computes the same."""
    import onnxruntime as ort
    import tensorflow as tf
    from tf2onnx import tf_loader, tfonnx

    from converter.parity.runtimes import _tf2onnx, _without_resource_inputs

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 3], name="x")
        tf.compat.v1.placeholder(tf.resource, [], name="handle")
        tf.identity(tf.matmul(x, tf.constant(np.full((3, 2), 0.25, np.float32))), name="y")
    graph_def = graph.as_graph_def()
    assert _without_resource_inputs(graph_def, ["x:0", "handle:0"]) == ["x:0"]

    def refused(*args, **kwargs):
        raise AssertionError("the plain round trip opened a TF session")

    monkeypatch.setattr(tf_loader, "tf_session", refused)
    monkeypatch.setattr(tfonnx, "resolve_functions", refused)  # the graph calls no function: no scan for them
    proto = _tf2onnx(graph_def, ["x:0", "handle:0"], ["y:0"], 17, optimize=False)
    assert [i.name for i in proto.graph.input] == ["x:0"]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.allclose(session.run(None, {"x:0": feed})[0], feed @ np.full((3, 2), 0.25, np.float32))
