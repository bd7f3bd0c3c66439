"""The typed manifest: JSON round trip, and a one-line refusal of what is not a manifest."""

from __future__ import annotations

import json

import pytest

from converter._convert.manifest import Artifact, Manifest, Source, TensorInfo


def _manifest() -> Manifest:
    image = TensorInfo("image", [None, 28, 28, 1], "float32", [0, 2, 3, 1], [1, 1, 28, 28])
    logits = TensorInfo("logits", [None, 10], "float32", [0, 1], [1, 10])
    onnx_image = TensorInfo("image", [None, 1, 28, 28], "float32", [0, 1, 2, 3], [1, 1, 28, 28])
    return Manifest(
        Source("mnist_cnn", "reference", "mnist_cnn", "/w/model.pt"), "nhwc", True, 17, [image], [logits],
        [onnx_image], [logits],
        {"onnx": Artifact("model.onnx", 10, "ab"),
         "tflite_int8": Artifact("model_int8.tflite", 5, "cd", "int8", {"op_histogram": {"CONV_2D": 2},
                                                                         "keep_float": ["fc2"]})},
        {"onnx2tf": "1.28.8"}, ["fold_sqrt2"], {"total": 1.5}, {"tflite_fp16": "why"}, {"batch_map": True})


def test_round_trip_is_exact_and_keeps_the_file_layout(tmp_path) -> None:
    manifest = _manifest()
    manifest.write(tmp_path)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["onnx"]["inputs"][0]["shape"] == [None, 1, 28, 28]  # the layout files on disk have always had
    assert raw["artifacts"]["tflite_int8"] == {"path": "model_int8.tflite", "bytes": 5, "sha256": "cd",
                                               "precision": "int8", "op_histogram": {"CONV_2D": 2},
                                               "keep_float": ["fc2"]}
    again = Manifest.read(tmp_path)
    assert again == manifest and again.to_json() == raw
    assert again.fixed_batch is None and [a.path for a in again.tflite_artifacts()] == ["model_int8.tflite"]
    assert again.artifact_bytes("model.onnx") == 10 and again.artifact_bytes("nope") is None


@pytest.mark.parametrize("break_it,needle", [
    (lambda d: d.pop("source"), "'source' is missing"),
    (lambda d: d["source"].pop("spec"), "source.spec is missing"),
    (lambda d: d.update(format="something/1"), "format"),
    (lambda d: d["onnx"].pop("inputs"), "'inputs' is missing"),
    (lambda d: d.update(inputs=3), "wrong type"),
    (lambda d: d["artifacts"]["onnx"].pop("path"), "'path' is missing"),
])
def test_what_is_not_a_manifest_is_refused_by_name(break_it, needle) -> None:
    data = _manifest().to_json()
    break_it(data)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        Manifest.from_json(data)
