"""End to end: ``convert`` on the trained reference net, every artifact, every runtime, real digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

RUNTIMES = {"pytorch", "torchscript", "onnxruntime", "saved_model", "tflite", "keras_native", "tf2onnx_roundtrip"}
FILES = ["model.onnx", "saved_model/saved_model.pb", "model_fp32.tflite", "model_fp16.tflite",
         "model_dynamic_int8.tflite", "model_int8.tflite", "manifest.json", "parity.json", "parity.md"]


@pytest.fixture(scope="session")
def convert_tmpdir(tmp_path_factory) -> Path:
    """The TMPDIR the converting process sees."""
    return tmp_path_factory.mktemp("convert-tmpdir")


@pytest.fixture(scope="session")
def converted(tmp_path_factory, trained_weights, mnist_dir, convert_tmpdir) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("convert") / "mnist"
    result = run_cli("convert", "mnist_cnn", "--weights", trained_weights, "--out", out,
                     "--parity-data", mnist_dir, "--parity-samples", "1000", cwd=out.parent,
                     tmpdir=convert_tmpdir)
    return out, result


def test_convert_exits_zero_and_prints_table(converted):
    out, result = converted
    assert result.returncode == 0, result.stderr
    assert "| runtime | precision |" in result.stdout
    assert "Traceback" not in result.stderr and "absl" not in result.stderr and "XNNPACK" not in result.stderr


@pytest.mark.parametrize("name", FILES)
def test_every_artifact_is_written(converted, name):
    assert (converted[0] / name).is_file()


def test_nothing_written_outside_out(converted, convert_tmpdir):
    """Nothing beside --out, and no temporary file left behind (the command exits without interpreter
    teardown, so every temp dir must be removed explicitly)."""
    out = converted[0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnist"]
    # .ses: onnxruntime's native library writes it into TMPDIR on import (a bare ``import onnxruntime`` does)
    assert [p.name for p in convert_tmpdir.iterdir() if p.name != ".ses"] == []


def test_parity_json_schema_and_every_runtime_passes(converted, mnist_official):
    report = json.loads((converted[0] / "parity.json").read_text())
    samples = 1000 if mnist_official else 500  # --parity-samples 1000 of the 500 embedded digits: all of them
    assert report["passed"] is True and report["reference"] == "pytorch" and report["samples"] == samples
    assert {r["runtime"] for r in report["runtimes"]} == RUNTIMES
    assert {r["precision"] for r in report["runtimes"] if r["runtime"] == "tflite"} == {"fp32", "fp16", "dynamic_int8", "int8"}
    for row in report["runtimes"]:
        for key in ("max_abs_err", "mean_abs_err", "max_rel_err", "cosine_min", "top1_agreement", "accuracy", "passed"):
            assert key in row
        assert row["passed"], row


# measured on the trained net (logits up to ~20): max_rel_err <= 1.6e-6, max_abs_err <= 1.2e-5
@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime", "saved_model", "tflite", "keras_native",
                                     "tf2onnx_roundtrip"])
def test_fp32_runtimes_match_pytorch_tightly(converted, runtime):
    rows = json.loads((converted[0] / "parity.json").read_text())["runtimes"]
    row = next(r for r in rows if r["runtime"] == runtime and r["precision"] == "fp32")
    assert row["max_rel_err"] <= 1e-5 and row["max_abs_err"] <= 5e-5
    assert row["top1_agreement"] == 1.0 and row["cosine_min"] > 0.99999


def test_reference_accuracy_and_quantised_drop(converted):
    report = json.loads((converted[0] / "parity.json").read_text())
    # 3 epochs on 4,500 digits: 92.9 % on 1,000 official test digits, 93.6 % on the 500 embedded eval digits
    assert report["reference_accuracy"] >= 0.90, (report["reference_accuracy"], report["data"])
    for row in report["runtimes"]:
        if row["precision"] in ("int8", "dynamic_int8"):
            assert report["reference_accuracy"] - row["accuracy"] <= 0.01
        if row["precision"] == "fp16":
            assert row["top1_agreement"] >= 0.999


def test_manifest_records_layout_and_ops(converted):
    manifest = json.loads((converted[0] / "manifest.json").read_text())
    (inp,), (outp,) = manifest["inputs"], manifest["outputs"]
    assert inp["name"] == "input" and inp["shape"] == [1, 28, 28, 1] and inp["perm_from_pytorch"] == [0, 2, 3, 1]
    assert outp["shape"] == [1, 10] and outp["perm_from_pytorch"] == [0, 1]
    hist = manifest["artifacts"]["tflite_fp32"]["op_histogram"]
    assert hist["CONV_2D"] == 1 and hist["FULLY_CONNECTED"] == 2 and hist.get("TRANSPOSE", 0) <= 1
    fp16 = manifest["artifacts"]["tflite_fp16"]
    assert fp16["fp16_route"] == {"cast_from_fp32": True}  # its weights all feed CONV_2D and FULLY_CONNECTED
    assert fp16["op_histogram"]["DEQUANTIZE"] >= 3


@pytest.mark.parametrize("precision", ["fp32", "fp16", "dynamic_int8", "int8"])
def test_every_tflite_file_is_converted_from_the_shipped_saved_model(converted, mnist_dir, precision):
    """The TFLite converter reads saved_model/ (the artifact that ships), not a private re-save of the module:
    its conversion metadata records the source kind, and the file's outputs match the SavedModel's."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as metadata
    from tensorflow.lite.python.util import get_conversion_metadata

    blob = (converted[0] / f"model_{precision}.tflite").read_bytes()
    assert get_conversion_metadata(blob).environment.modelType == metadata.ModelType.TF_SAVED_MODEL
    from converter.parity.data import load_parity_data

    digits = load_parity_data(str(mnist_dir), [(1, 1, 28, 28)], [np.dtype(np.float32)], 8).inputs[0]
    serve = tf.saved_model.load(str(converted[0] / "saved_model")).signatures["serving_default"]
    runner = Interpreter(model_content=blob).get_signature_runner("serving_default")
    for digit in digits.transpose(0, 2, 3, 1)[:, None]:  # NHWC, one at a time (batch 1)
        want, got = serve(input=digit)["output"].numpy(), runner(input=digit)["output"]
        assert np.argmax(got) == np.argmax(want)
        if precision == "fp32":
            assert np.max(np.abs(got - want)) <= 1e-4


def test_saved_model_and_tflite_signatures_use_the_names(converted):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    sig = tf.saved_model.load(str(converted[0] / "saved_model")).signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["input"] and list(sig.structured_outputs) == ["output"]
    runner = Interpreter(model_path=str(converted[0] / "model_fp32.tflite")).get_signature_runner("serving_default")
    out = runner(input=np.zeros((1, 28, 28, 1), np.float32))
    assert out["output"].shape == (1, 10)


def test_check_passes_on_unchanged_model_and_fails_after_a_change(converted, trained_weights, mnist_dir, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(converted[0], out)
    ok = run_cli("convert", "mnist_cnn", "--weights", trained_weights, "--out", out, "--check",
                 "--parity-data", mnist_dir, "--parity-samples", "200", "--precision", "fp32")
    assert ok.returncode == 0, ok.stderr
    import torch

    state = torch.load(trained_weights, weights_only=True)
    state["fc2.bias"] = state["fc2.bias"] + 0.5  # a "model change" after conversion
    changed = tmp_path / "changed.pt"
    torch.save(state, changed)
    bad = run_cli("convert", "mnist_cnn", "--weights", changed, "--out", out, "--check",
                  "--parity-data", mnist_dir, "--parity-samples", "200")
    assert bad.returncode == 1
    assert "parity FAILED for onnxruntime" in bad.stderr
    # the failure is localised automatically: the changed bias lives in fc2, and every input to it still agrees
    assert "> localised: saved_model (fp32) first diverges at module `fc2`" in bad.stdout
    rows = json.loads((out / "parity.json").read_text())["runtimes"]
    located = {r["runtime"]: r["localisation"] for r in rows if r["localisation"]}
    assert located["tflite"]["module"] == "fc2" and max(located["tflite"]["rel_err_inputs"]) < 1e-4
    ok_again = run_cli("convert", "--out", out, "--check", "--parity-samples", "1000", "--parity-data", mnist_dir)
    assert ok_again.returncode == 0, ok_again.stderr  # model + weights come from the manifest


def test_saved_model_runner_maps_chunks_like_single_calls(converted, mnist_dir):
    """Parity feeds the SavedModel every chunk in one call (tf.map_fn over the signature): the outputs equal one
    eager signature call per chunk, and survive a garbage collection (the signature holds variables weakly)."""
    import gc

    from converter._convert.manifest import Manifest
    from converter.parity import runtimes
    from reference_models.data import normalize_nchw, read_idx_dir

    manifest = Manifest.read(converted[0])
    runner = runtimes.saved_model_runner(converted[0] / "saved_model", manifest, batch=1)
    gc.collect()
    digits = normalize_nchw(read_idx_dir(mnist_dir).images[:50])
    mapped = runtimes.run_batched(runner, [digits], 64)[0]
    single = np.concatenate([runner.fn([digits[k:k + 1]])[0] for k in range(50)])
    assert mapped.shape == (50, 10) and np.array_equal(mapped, single)
