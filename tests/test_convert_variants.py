"""Model sources, layouts, dynamic batch and multi-I/O: each converted once, every runtime must pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

FP32 = ["--precision", "fp32"]


def _report(out: Path) -> dict:
    return json.loads((out / "parity.json").read_text())


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_dynamic_batch_is_symbolic_and_checked_at_two_sizes(tmp_path, trained_weights, mnist_dir):
    out = tmp_path / "dyn"
    r = run_cli("convert", "mnist_cnn", "--weights", trained_weights, "--out", out, "--dynamic-batch",
                "--parity-data", mnist_dir, "--parity-samples", "60", "--precision", "fp32,dynamic_int8")
    assert r.returncode == 0, r.stderr + r.stdout
    m = _manifest(out)
    assert m["inputs"][0]["shape"] == [None, 28, 28, 1] and m["outputs"][0]["shape"] == [None, 10]
    rows = _report(out)["runtimes"]
    assert all(row["passed"] and row["batch_sizes"] == [1, 3] for row in rows)
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(out / "model_fp32.tflite")).get_signature_runner("serving_default")
    assert runner(input=np.zeros((5, 28, 28, 1), np.float32))["output"].shape == (5, 10)


def test_layout_keep_takes_pytorch_shapes(tmp_path, trained_weights, mnist_dir):
    out = tmp_path / "keep"
    r = run_cli("convert", "mnist_cnn", "--weights", trained_weights, "--out", out, "--layout", "keep",
                "--parity-data", mnist_dir, "--parity-samples", "50", *FP32)
    assert r.returncode == 0, r.stderr
    m = _manifest(out)
    assert m["inputs"][0]["shape"] == [1, 1, 28, 28] and m["inputs"][0]["perm_from_pytorch"] == [0, 1, 2, 3]
    import tensorflow as tf

    sig = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    assert sig.structured_input_signature[1]["input"].shape.as_list() == [1, 1, 28, 28]


@pytest.mark.parametrize("layout,image_shape,out4_perm", [
    ("nhwc", [2, 16, 16, 3], [0, 2, 3, 1]),
    ("keep", [2, 3, 16, 16], [0, 1, 2, 3]),
])
def test_segmentation_output_follows_the_layout(tmp_path, layout, image_shape, out4_perm):
    out = tmp_path / layout
    r = run_cli("convert", "tests.toy_models:segmentation_head", "--input-shape", "2,3,16,16", "--layout", layout,
                "--out", out, "--parity-samples", "20", "--precision", "fp32,fp16")
    assert r.returncode == 0, r.stderr
    m = _manifest(out)
    assert m["inputs"][0]["shape"] == image_shape and m["outputs"][0]["perm_from_pytorch"] == out4_perm
    assert _report(out)["passed"]


def test_two_inputs_two_outputs_keep_names_order_and_sequence_layout(tmp_path):
    out = tmp_path / "multi"
    r = run_cli("convert", "tests.toy_models:image_and_sequence", "--input-shape", "1,3,16,16",
                "--input-shape", "1,7,6", "--input-name", "image", "--input-name", "tokens",
                "--output-name", "logits", "--output-name", "features", "--out", out,
                "--parity-samples", "20", "--precision", "fp32,dynamic_int8")
    assert r.returncode == 0, r.stderr
    m = _manifest(out)
    assert [i["name"] for i in m["inputs"]] == ["image", "tokens"]
    assert [o["name"] for o in m["outputs"]] == ["logits", "features"]
    assert m["inputs"][1]["shape"] == [1, 7, 6] and m["outputs"][1]["shape"] == [1, 7, 8]  # [B,T,C] untouched
    assert _report(out)["passed"]
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_path=str(out / "model_fp32.tflite")).get_signature_list()["serving_default"]
    assert sorted(sig["inputs"]) == ["image", "tokens"] and sorted(sig["outputs"]) == ["features", "logits"]


_SAVE_SOURCES = """
import sys, torch
from reference_models.mnist_cnn import MnistCNN
root, weights = sys.argv[1], sys.argv[2]
model = MnistCNN()
model.load_state_dict(torch.load(weights, weights_only=True))
model.eval()
x = torch.zeros(1, 1, 28, 28)
torch.jit.trace(model, x).save(root + "/net.torchscript.pt")
torch.export.save(torch.export.export(model, (x,)), root + "/net.pt2")
torch.onnx.export(model, (x,), root + "/net.onnx", input_names=["pixels"], output_names=["scores"], dynamo=False)

class Embedder(torch.nn.Module):  # token ids in: an int64 input every runtime must be fed as int64
    def __init__(self):
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3)

    def forward(self, ids):
        return self.head(self.embed(ids).mean(dim=1))

torch.manual_seed(0)
torch.onnx.export(Embedder().eval(), (torch.randint(0, 50, (1, 6)),), root + "/ids.onnx", input_names=["ids"],
                  output_names=["logits"], dynamo=False)
"""


@pytest.fixture(scope="module")
def saved_sources(tmp_path_factory, trained_weights) -> dict[str, Path]:
    """The trained net as TorchScript, as a torch.export .pt2, and as an .onnx file. Written by a child
    process: torch.export segfaults in a process that has already imported TensorFlow."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("sources")
    subprocess.run([sys.executable, "-c", _SAVE_SOURCES, str(root), str(trained_weights)], check=True,
                   cwd=Path(__file__).resolve().parents[1], capture_output=True)
    return {"torchscript": root / "net.torchscript.pt", "exported_program": root / "net.pt2", "onnx": root / "net.onnx",
            "ids_onnx": root / "ids.onnx"}


@pytest.mark.parametrize("kind,reference", [
    ("torchscript", "pytorch"), ("exported_program", "pytorch"), ("onnx", "onnxruntime"),
])
def test_model_sources(tmp_path, saved_sources, mnist_dir, kind, reference):
    out = tmp_path / kind
    extra = [] if kind == "onnx" else ["--input-shape", "1,1,28,28"]
    r = run_cli("convert", saved_sources[kind], *extra, "--out", out, "--parity-data", mnist_dir,
                "--parity-samples", "100", *FP32)
    assert r.returncode == 0, r.stderr
    report = _report(out)
    assert report["passed"] and report["reference"] == reference and report["reference_accuracy"] >= 0.9
    assert _manifest(out)["source"]["kind"] == kind
    if kind == "onnx":
        assert {row["runtime"] for row in report["runtimes"]} == {"onnxruntime", "saved_model", "tflite", "tf2onnx_roundtrip"}
        assert _manifest(out)["inputs"][0]["name"] == "pixels"


def test_assert_parity_helper(tmp_path):
    from converter.errors import ParityFailed
    from converter.options import ConvertOptions
    from converter.testing import assert_parity

    report = assert_parity("tests.toy_models:segmentation_head", tmp_path / "ok", input_shapes=[(1, 3, 8, 8)],
                           options=ConvertOptions(precisions=("fp32",), parity_samples=10))
    assert report.passed
    with pytest.raises(ParityFailed, match="saved_model"):
        assert_parity("tests.toy_models:segmentation_head", tmp_path / "ok", check_only=True,
                      options=ConvertOptions(precisions=("fp32",), parity_samples=10, atol=0.0, rtol=0.0))


def test_integer_inputs_are_fed_as_integers_by_every_runtime(tmp_path, saved_sources):
    """An .onnx with int64 token ids: the TFLite rows feed int64 (they used to cast every input to float32 and
    fail), and the report says which values were drawn."""
    out = tmp_path / "ids"
    r = run_cli("convert", saved_sources["ids_onnx"], "--out", out, "--parity-samples", "20",
                "--precision", "fp32,fp16")
    assert r.returncode == 0, r.stderr
    report = _report(out)
    rows = {(row["runtime"], row["precision"]): row for row in report["runtimes"]}
    assert rows[("tflite", "fp32")]["passed"] and rows[("tflite", "fp32")]["max_rel_err"] < 1e-5
    assert rows[("tflite", "fp16")]["passed"] and report["passed"]
    assert "int64 in [0, 2)" in report["data"], report["data"]
    assert _manifest(out)["inputs"][0]["dtype"] == "int64"


def test_a_text_model_with_ids_and_mask_converts_and_passes(tmp_path):
    """Token ids and an attention mask, both int64 (--input-dtype), ids drawn over the vocabulary (--input-range):
    every artifact takes int64 under the user's names and every row passes."""
    out = tmp_path / "text"
    r = run_cli("convert", "tests.toy_models:tiny_text", "--input-shape", "1,12", "--input-dtype", "int64",
                "--input-range", "0,100", "--input-name", "input_ids", "--input-shape", "1,12", "--input-dtype", "int64",
                "--input-range", "0,2", "--input-name", "attention_mask", "--precision", "fp32,fp16",
                "--parity-samples", "40", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = _report(out)
    assert report["passed"] and "input_ids: int64 in [0, 100), attention_mask: padding masks (1s then 0s)" in \
        report["data"], report["data"]
    fp32 = [row for row in report["runtimes"] if row["precision"] == "fp32" and row["runtime"] != "pytorch"]
    assert fp32 and max(row["max_rel_err"] for row in fp32) < 1e-5
    assert [(i["name"], i["dtype"]) for i in _manifest(out)["inputs"]] == [("input_ids", "int64"),
                                                                            ("attention_mask", "int64")]
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(out / "model_fp32.tflite")).get_signature_runner().get_input_details()
    assert {name: str(d["dtype"].__name__) for name, d in details.items()} == {"input_ids": "int64",
                                                                                "attention_mask": "int64"}
