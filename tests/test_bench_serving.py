"""The zoo serving benchmark (``scripts/benchmark --zoo``): its conclusions on synthetic timings, the batch check
and interleaving on fake runtimes, and one real run on a small timm classifier (slow: two exports and five
runtime processes on 2 shared cores take ~3 min).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.bench import serving_report as report
from converter.bench.core import time_rounds
from converter.bench.runtimes import SERVING_RUNTIMES, Bench, at_batch
from tests.conftest import ROOT


def _row(runtime: str, median_s: float, batch: int = 1, threads: int = 2) -> dict:
    info = {"ready": True, "artifact": "a", "modes": {str(batch): "native"}}
    return report.row(runtime, threads, batch, info, [median_s * f for f in (0.9, 1.0, 1.1)])


ROWS = [_row("onnxruntime", 1e-3), _row("saved_model", 1.5e-3), _row("tflite_litert", 2e-3),
        _row("tflite_fp32", 1.8e-3), _row("tflite_fp32_aa", 1.89e-3), _row("onnxruntime", 20e-3, batch=32),
        _row("saved_model", 10e-3, batch=32)]


def test_ratios_judge_classifiers_at_batch_1_only():
    got = {(r["numerator"], r["batch"]): r for r in report.ratios(ROWS, image_classifier=True)}
    sm, tfl = got[("saved_model", 1)], got[("tflite_fp32", 1)]
    assert (sm["value"], sm["target"], sm["met"], sm["verdict"]) == (1.5, 1.2, False, "MISSED")
    assert (tfl["value"], tfl["target"], tfl["met"], tfl["verdict"]) == (0.9, 1.0, True, "met")
    assert tfl["aa_control"] == 1.05 and sm["aa_control"] is None  # our file's second process, over the first
    big = got[("saved_model", 32)]
    assert (big["value"], big["target"], big["met"], big["verdict"]) == (0.5, None, None, "no target")
    # no TFLite row at batch 32: the ratio is there, unmeasured, rather than silently missing
    assert got[("tflite_fp32", 32)]["verdict"] == "not measured" and got[("tflite_fp32", 32)]["value"] is None


def test_a_ratio_on_its_target_meets_it():
    assert report.verdict(1.2, 1.2) == (True, "met")
    assert report.verdict(1.2001, 1.2) == (False, "MISSED")
    assert report.verdict(None, 1.2) == (None, "not measured")


def test_a_miss_closer_to_the_target_than_the_aa_control_is_to_1_is_within_noise():
    assert report.within_noise(1.03, 1.0, 0.96) is True
    assert report.within_noise(1.07, 1.0, 1.04) is False
    assert report.within_noise(1.07, None, 1.04) is None and report.within_noise(1.07, 1.0, None) is None
    tfl = next(r for r in report.ratios(ROWS, True) if r["numerator"] == "tflite_fp32" and r["batch"] == 1)
    assert tfl["within_noise"] is False  # 0.9 against 1.0 is further than the A/A's 1.05 from 1
    close = [*ROWS[:3], _row("tflite_fp32", 2.04e-3), _row("tflite_fp32_aa", 1.9e-3)]  # 1.02x, A/A 0.93x
    tfl = next(r for r in report.ratios(close, True) if r["numerator"] == "tflite_fp32" and r["batch"] == 1)
    assert (tfl["verdict"], tfl["within_noise"]) == ("MISSED", True)


def test_tf_own_build_places_the_saved_model_without_a_target():
    rows = [*ROWS, _row("keras_twin", 3e-3)]
    got = {(r["numerator"], r["denominator"], r["batch"]): r for r in report.ratios(rows, image_classifier=True)}
    floor, ours = got[("keras_twin", "onnxruntime", 1)], got[("saved_model", "keras_twin", 1)]
    assert (floor["value"], floor["target"], floor["verdict"]) == (3.0, None, "no target")
    assert (ours["value"], ours["target"], ours["verdict"]) == (0.5, None, "no target")
    assert got[("saved_model", "keras_twin", 32)]["verdict"] == "not measured"
    assert not any("keras_twin" in (r["numerator"], r["denominator"]) for r in report.ratios(ROWS, True))
    model = {"model": "m", "error": "", "image_classifier": True, "rows": rows, "ratios": report.ratios(rows, True),
             "op_diff": None}
    assert "| m | image classifier | 2 | 1.500x | MISSED | 3.000x | 0.900x (A/A 1.050x) | met | - |" in \
        "\n".join(report._summary_lines(model))


def test_every_keras_twin_is_a_zoo_classifier_that_keras_builds():
    import keras

    from converter.bench.keras_twin import TWINS
    from converter.bench.zoo_prepare import is_image_classifier
    from converter.zoo.models import ZOO

    for zoo, (cls, _) in TWINS.items():
        assert is_image_classifier(ZOO[zoo].input_shapes, ZOO[zoo].task is not None), zoo
        assert hasattr(keras.applications, cls), cls


def test_tf_own_build_serves_at_the_entrys_input_size(tmp_path):
    """The keras_twin child: keras.applications' MobileNetV3Small built at the manifest's size and class count,
    exported and called through serving_default at batch 1 and 2, in its own process like every runtime."""
    manifest = {"inputs": [{"name": "image", "pytorch_shape": [1, 3, 32, 32], "perm_from_pytorch": [0, 2, 3, 1],
                            "dtype": "float32"}],
                "outputs": [{"name": "logits", "pytorch_shape": [1, 7], "perm_from_pytorch": [0, 1]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    np.savez(tmp_path / "inputs.npz", image=np.random.default_rng(0).standard_normal((2, 3, 32, 32), np.float32))
    run = subprocess.run([sys.executable, "-m", "converter.bench.child", "--runtime", "keras_twin", "--dir", str(tmp_path),
                          "--inputs", str(tmp_path / "inputs.npz"), "--batches", "1,2", "--zoo", "mobilenetv3_small_100",
                          "--outputs", str(tmp_path / "out.npz")],
                         input='{"cmd": "time", "batch": 2, "n": 3, "warmup": 1}\n{"cmd": "quit"}\n',
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    ready, timed = (json.loads(line) for line in run.stdout.splitlines())
    assert ready["ready"] and ready["modes"] == {"1": "native", "2": "native"}, ready
    assert ready["artifact"].startswith("keras.applications.MobileNetV3Small (")
    assert ready["op_histogram"]["Conv2D"] > 10 and len(timed["times_s"]) == 3
    with np.load(tmp_path / "out.npz") as out:
        assert out["arr_0"].shape == (1, 7) and np.isfinite(out["arr_0"]).all()


def test_other_models_get_ratios_without_a_verdict():
    for r in report.ratios(ROWS, image_classifier=False):
        assert r["target"] is None and r["met"] is None, r
    assert {r["verdict"] for r in report.ratios(ROWS, image_classifier=False)} == {"no target", "not measured"}


def test_a_failed_runtime_is_not_measured_not_met():
    failed = report.row("tflite_litert", 2, 1, {"ready": False, "error": "litert-torch export failed"}, [])
    rows = [r for r in ROWS if r["runtime"] != "tflite_litert"] + [failed]
    assert not failed["ok"] and failed["error"] == "litert-torch export failed" and "median_s" not in failed
    tfl = next(r for r in report.ratios(rows, True) if r["numerator"] == "tflite_fp32" and r["batch"] == 1)
    assert (tfl["met"], tfl["verdict"]) == (None, "not measured")


def test_row_statistics_and_an_unavailable_batch():
    r = report.row("onnxruntime", 2, 1, {"ready": True, "modes": {"1": "native"}}, [3.0, 1.0, 2.0, 10.0])
    assert (r["median_s"], r["min_s"], r["calls"]) == (2.5, 1.0, 4) and r["p90_s"] == pytest.approx(7.9)
    info = {"ready": True, "modes": {"1": "native", "32": "unavailable: output 0 at batch 32 differs"}}
    cell = report.row("tflite_litert", 2, 32, info, [])
    assert not cell["ok"] and cell["error"].startswith("unavailable")


def test_op_diff_names_each_differing_op_largest_first():
    ours = {"CONV_2D": 42, "TRANSPOSE": 5, "MUL": 9, "RESHAPE": 1}
    litert = {"CONV_2D": 42, "TRANSPOSE": 1, "MUL": 18, "MEAN": 2}
    diff = report.op_diff(ours, litert)
    assert diff == [{"op": "MUL", "ours": 9, "litert": 18, "delta": -9},
                    {"op": "TRANSPOSE", "ours": 5, "litert": 1, "delta": 4},
                    {"op": "MEAN", "ours": 0, "litert": 2, "delta": -2},
                    {"op": "RESHAPE", "ours": 1, "litert": 0, "delta": 1}]
    text = report.op_diff_text(diff, limit=2)
    assert text == "MUL ×9 fewer (9 vs 18), TRANSPOSE ×4 more (5 vs 1), and 2 more op types"
    assert report.op_diff({"ADD": 1}, {"ADD": 1}) == [] and report.op_diff_text([]) == "same ops"


def _two_convs(tmp_path) -> tuple[Path, Path, np.ndarray]:
    """model.onnx and a SavedModel of the same two 3x3 convolutions with ReLU (NCHW / NHWC), and an NCHW input."""
    import onnx
    import tensorflow as tf
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal(s, np.float32) for s in ((8, 3, 3, 3), (8, 8, 3, 3)))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["y"])]
    graph = helper.make_graph(nodes, "two_convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    onnx_path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), onnx_path)

    module = tf.Module()
    module.w1, module.w2 = (tf.Variable(w.transpose(2, 3, 1, 0)) for w in (w1, w2))

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32, name="x")])
    def serve(x):
        h = tf.nn.relu(tf.nn.conv2d(x, module.w1, 1, "SAME"))
        return {"y": tf.nn.relu(tf.nn.conv2d(h, module.w2, 1, "SAME"))}

    saved = tmp_path / "saved_model"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": serve})
    return onnx_path, saved, rng.standard_normal((1, 3, 32, 32), np.float32)


def test_op_times_name_the_kernels_each_runtime_ran(tmp_path):
    """Both profiles of a two-convolution model count two convolution kernels per call (whatever each runtime named
    them: oneDNN's ``_MklNative...``, a fusion with the ReLU), with time in them, and no function-call op."""
    from converter.bench import optimes

    onnx_path, saved, x = _two_convs(tmp_path)
    for times in (optimes.onnxruntime(onnx_path, {"x": x}, threads=1, calls=5),
                  optimes.saved_model(saved, {"x": x.transpose(0, 2, 3, 1)}, threads=1, calls=5)):
        convs = {op: t for op, t in times.items() if "conv" in op.lower()}
        assert sum(t["count"] for t in convs.values()) == 2, times
        assert all(t["us"] > 0 for t in convs.values()) and not {"PartitionedCall", "StatefulPartitionedCall"} & set(times)
        assert list(times) == sorted(times, key=lambda op: -times[op]["us"])  # largest first
    assert not list(tmp_path.glob("ort*.json")) and not list(Path.cwd().glob("ort*.json"))  # no profile left behind


def test_onnxruntime_op_times_leave_out_the_warm_up_runs():
    def run(ts: int, dur: int) -> dict:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(ts: int, op: str, dur: int) -> dict:
        return {"cat": "Node", "name": f"{op}_0_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0, 100), node(10, "Conv", 90), run(200, 50), node(210, "Conv", 30), node(230, "Relu", 10),
              {"cat": "Node", "name": "Conv_0_fence_before", "ts": 209, "dur": 1}, run(300, 50), node(310, "Conv", 50)]
    from converter.bench import optimes

    assert optimes.node_times(events, calls=2) == {"Conv": {"us": 40.0, "count": 1.0}, "Relu": {"us": 5.0, "count": 0.5}}


def test_the_report_scales_each_op_times_share_to_the_measured_median():
    model = {"rows": ROWS, "op_diff": None, "op_histograms": {},
             "op_times": {"saved_model": {"threads": 2, "ops": {"Conv2D": {"us": 300.0, "count": 2.0},
                                                                  "AddV2": {"us": 100.0, "count": 1.0}}},
                          "onnxruntime": {"threads": 4, "ops": {"Conv": {"us": 10.0, "count": 2.0}}}}}
    text = "\n".join(report._ops_lines(model))
    # the SavedModel's batch-1 median is 1.5 ms; onnxruntime's profile was taken at a thread count with no row
    assert "SavedModel serving_default: Conv2D 1,125 µs (2), AddV2 375 µs (1) of 1,500 µs." in text
    assert "onnxruntime: Conv" not in text


def test_tflite_histogram_counts_the_ops_inside_a_while_body(tmp_path):
    """A batch-mapped graph keeps the model in a WHILE body: the main subgraph alone would show one WHILE, and the
    manifest's op histogram would say the file holds nothing else."""
    import tensorflow as tf

    from converter._convert.tfexport import op_histogram
    from converter.bench.runtimes import tflite_histogram

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def mapped(x):
        def body(i, y):
            return i + 1, tf.nn.relu(y * 2.0 - 1.0)

        return tf.while_loop(lambda i, y: i < tf.shape(x)[0], body, (tf.constant(0), x))[1]

    data = tf.lite.TFLiteConverter.from_concrete_functions([mapped.get_concrete_function()]).convert()
    (tmp_path / "m.tflite").write_bytes(data)
    ops = tflite_histogram(tmp_path / "m.tflite")
    assert op_histogram(data) == ops  # the manifest's count and the benchmark's are one
    assert ops["WHILE"] == 1 and ops["MUL"] == 1 and ops["SUB"] == 1 and ops["LESS"] == 1, ops


def test_max_rel_err_catches_swapped_or_misshapen_outputs():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 5), np.float32)
    assert report.max_rel_err([a, b], [a, b]) == 0.0
    assert report.max_rel_err([a * 1.01, b], [a, b]) == pytest.approx(0.01, rel=1e-5)
    assert report.max_rel_err([b, a], [a, b]) is None  # outputs read in another order
    assert report.max_rel_err([a], [a, b]) is None


def _fake_bench(scale_batch: float = 1.0, resizable: bool = True) -> Bench:
    """Doubles its input; ``scale_batch`` != 1 makes the resized (batch > 1) version compute something else."""
    def make(batch: int) -> Bench:
        factor = 2.0 if batch == 1 else 2.0 * scale_batch
        return Bench("fake", "fp32", None, lambda xs: xs, lambda xs: [x * factor for x in xs],
                     resize=(lambda b: make(b)) if resizable else None)

    return make(1)


def test_at_batch_keeps_a_batch_that_matches_batch_1_calls():
    probe = [np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)]
    assert at_batch(_fake_bench(), 4, probe).call(probe)[0] == pytest.approx(2 * probe[0])
    native = _fake_bench(resizable=False)
    assert at_batch(native, 4, probe) is native
    with pytest.raises(ValueError, match="output 0 at batch 4 differs from batch-1 calls"):
        at_batch(_fake_bench(scale_batch=1.5), 4, probe)


def test_time_rounds_visits_every_child_in_rotated_order():
    visits: list[tuple[str, int]] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def time(self, batch: int, n: int) -> list[float]:
            visits.append((self.name, batch))
            return [float(batch)] * n

    times = time_rounds({n: Fake(n) for n in "abc"}, 3, [(1, 2), (32, 1)], lambda k: None)
    assert times["b"] == {1: [1.0] * 6, 32: [32.0] * 3}
    firsts = [visits[k * 6][0] for k in range(3)]  # 3 children x 2 batches per round
    assert firsts == ["a", "b", "c"]


def test_markdown_summary_shows_verdicts_and_the_ops_that_differ():
    model = {"model": "tiny_net", "error": "", "image_classifier": True, "parameters": 1000, "convert_s": 1.0,
             "inputs": {"image": "float32"}, "litert_error": "", "rows": ROWS, "ratios": report.ratios(ROWS, True),
             "op_histograms": {"tflite_fp32": {"TRANSPOSE": 3}, "tflite_litert": {"TRANSPOSE": 1}},
             "op_diff": report.op_diff({"TRANSPOSE": 3}, {"TRANSPOSE": 1}), "dynamic_batch_route": ""}
    failed = {"model": "broken", "error": "our conversion failed (exit 2): zoo_prepare: boom\nsecond line",
              "rows": [], "ratios": [], "op_diff": None}
    cfg = {"threads": [2], "rounds": 1, "batch": 32, "batch1_calls_per_round": 3, "batchN_calls_per_round": 1}
    md = report.to_markdown({"config": cfg, "models": [model, failed]})
    summary = ("| tiny_net | image classifier | 2 | 1.500x | MISSED | - | 0.900x (A/A 1.050x) | met "
               "| TRANSPOSE ×2 more (3 vs 1) |")
    assert summary in md
    assert "| broken | - | - | FAILED: our conversion failed (exit 2): zoo_prepare: boom second line |" in md
    assert "| our TFLite fp32 | 2 | 1 | 1,800 |" in md


def test_cli_refuses_an_unknown_zoo_model():
    done = subprocess.run([str(ROOT / "scripts" / "benchmark"), "--zoo", "no_such_net"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "unknown zoo model 'no_such_net'" in done.stderr


@pytest.mark.slow
def test_zoo_run_on_a_small_classifier(tmp_path):
    """Every runtime timed at batch 1 and 32 on the model's own inputs, all computing what PyTorch eager computes."""
    name = "mobilenetv3_small_100"
    run = subprocess.run([str(ROOT / "scripts" / "benchmark"), "--zoo", name, "--quick", "--work", str(tmp_path / "w"),
                          "--json", str(tmp_path / "z.json"), "--md", str(tmp_path / "z.md")],
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    (model,) = json.loads((tmp_path / "z.json").read_text())["models"]
    assert model["error"] == "" and model["image_classifier"], model.get("error")
    cells = {(r["runtime"], r["batch"]): r for r in model["rows"]}
    for runtime in SERVING_RUNTIMES:
        for batch in (1, 32):
            cell = cells[(runtime, batch)]
            assert cell["ok"], (runtime, batch, cell["error"])
            assert 0 < cell["median_s"] <= cell["p90_s"] and cell["threads"] == 2, (runtime, batch)
            if runtime in report.OWN_WEIGHTS:  # TF's own build: other weights, never compared
                assert cell["max_rel_err_vs_eager"] is None
                continue
            assert cell["max_rel_err_vs_eager"] is not None and cell["max_rel_err_vs_eager"] < 1e-4, (runtime, batch)
    assert cells[("tflite_fp32", 32)]["mode"] == "resized (symbolic batch)"
    b1 = {(r["numerator"], r["denominator"]): r for r in model["ratios"] if r["batch"] == 1}
    assert {b1[("saved_model", "onnxruntime")]["verdict"], b1[("tflite_fp32", "tflite_litert")]["verdict"]} <= \
        {"met", "MISSED"}
    assert b1[("keras_twin", "onnxruntime")]["value"] > 0 and b1[("saved_model", "keras_twin")]["target"] is None
    assert model["op_histograms"]["keras_twin"]["Conv2D"] > 0
    assert model["op_histograms"]["tflite_litert"]["CONV_2D"] == model["op_histograms"]["tflite_fp32"]["CONV_2D"]
    assert sum(model["op_histograms"]["saved_model"].values()) > 0 and model["op_diff"] is not None
    for runtime in ("saved_model", "onnxruntime"):  # where each call's time goes: mostly in convolutions
        ops = model["op_times"][runtime]["ops"]
        conv = sum(t["us"] for op, t in ops.items() if "conv" in op.lower())
        assert conv > 0.3 * sum(t["us"] for t in ops.values()), (runtime, ops)
    md = (tmp_path / "z.md").read_text()
    assert f"## {name}" in md and "Ops, our TFLite fp32 vs litert-torch's" in md and "Where a batch-1 call's time goes" in md
