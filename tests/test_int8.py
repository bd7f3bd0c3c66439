"""int8 that keeps its accuracy: a trained MNIST CNN with an outlier channel loses far more than 1 pp in
full int8; keeping the most sensitive layers in float brings it back within 1 pp.

The outlier is planted the way it arises in real networks (a channel whose scale is absorbed by the next
layer, e.g. after folding a large batch-norm gain): conv1's channel 0 is multiplied by ``OUTLIER`` and
conv2's weights reading it are divided by ``OUTLIER``. ReLU is positively homogeneous, so the float model
computes exactly the same function; per-tensor int8 activations then spend their 256 levels on that one
channel, and conv2's per-output-channel weight scales round the tiny compensating weights to zero.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converter._convert import layout, tfexport
from converter.errors import InputError
from converter.quantization.quantise import Int8Analysis, analyse
from converter._convert.tensorflow import onnx_to_keras

OUTLIER = 1000.0
EVAL = 1000
CALIBRATION = 200


class OutlierCNN(nn.Module):
    """conv(1->8) -> relu -> conv(8->16, stride 2) -> relu -> maxpool -> fc(576->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2)
        self.fc1 = nn.Linear(16 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc1(torch.flatten(x, 1))


def _train(epochs: int = 2) -> OutlierCNN:
    """Trained in a child process: torch's backward pass can segfault in a process that has already
    imported TensorFlow (as the rest of the suite does), so training never shares a process with TF."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "outlier.pt"
        subprocess.run([sys.executable, "-c", f"from tests.test_int8 import _train_and_save; _train_and_save({str(path)!r}, {epochs})"],
                       check=True, cwd=root, capture_output=True)
        model = OutlierCNN()
        model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _train_and_save(path: str, epochs: int) -> None:
    torch.save(_train_here(epochs).state_dict(), path)


def _train_here(epochs: int) -> OutlierCNN:
    from reference_models.data import load_mnist, normalize_nchw

    train = load_mnist("embedded", "train")
    x, y = torch.from_numpy(normalize_nchw(train.images)), torch.from_numpy(train.labels.astype(np.int64))
    torch.manual_seed(0)
    model = OutlierCNN()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    from converter.zoo.models import plant_channel_outlier

    return plant_channel_outlier(model, "conv1", ["conv2"], 0, OUTLIER)  # the same function, a 1000x channel


@pytest.fixture(scope="module")
def setup(tmp_path_factory, mnist_dir):
    """The trained outlier net through the real route (ONNX -> onnx2tf -> serving module) + official digits."""
    from converter._convert import export
    from converter.diagnosis.probes import run_onnxruntime
    from reference_models.data import normalize_nchw, read_idx_dir

    model = _train()
    digits = read_idx_dir(mnist_dir)
    images, labels = normalize_nchw(digits.images[:EVAL]), digits.labels[:EVAL].astype(np.int64)
    proto = export.export_onnx(model, [images[:1]], tmp_path_factory.mktemp("int8") / "model.onnx",
                               ["input"], ["logits"], 17, False)
    reference = run_onnxruntime(proto, [images[:1]])["logits"]
    graph = onnx_to_keras(proto, [(1, 1, 28, 28)], [np.float32], ["logits"], [images[:1]], [reference], "nhwc")
    module = tfexport.build_serving_module(graph, dynamic_batch=False)

    def representative():
        for k in range(CALIBRATION):
            yield [layout.to_layout(images[k:k + 1], graph.inputs[0].artifact_perm)]

    return dict(module=module, graph=graph, representative=representative, inputs=[images], labels=labels,
                onnx_model=proto, module_paths={p for p, _ in model.named_modules() if p})


@pytest.fixture(scope="module")
def analysis(setup) -> Int8Analysis:
    """Calibrated once and ranked once; every test asks it for a different keep-float spec."""
    return analyse(setup["module"], setup["graph"], setup["representative"], setup["inputs"], setup["labels"],
                   onnx_model=setup["onnx_model"], module_paths=setup["module_paths"])


def test_auto_keep_float_recovers_accuracy(analysis) -> None:
    choice = analysis.choose("auto")
    assert choice.float_accuracy > 0.85, choice.to_markdown()
    assert choice.full_int8.accuracy_drop_pp > 1.0, choice.to_markdown()  # plain int8 clearly fails
    assert choice.chosen.accuracy_drop_pp <= 1.0, choice.to_markdown()  # and the kept layers fix it
    assert choice.met_target
    assert set(choice.kept_modules) <= {"conv1", "conv2"}, choice.kept_modules
    assert 0 < len(choice.kept) < len(choice.layers)
    assert choice.full_int8.size_bytes < choice.chosen.size_bytes < 4 * choice.full_int8.size_bytes
    assert choice.tflite and len(choice.tflite) == choice.chosen.size_bytes


#: (spec, the modules that must be kept, whether the target is met)
SPECS = [
    ("conv1,conv2", {"conv1", "conv2"}, True),
    ("1", None, None),
]


@pytest.mark.parametrize("spec, modules, meets", SPECS)
def test_explicit_keep_float(analysis, spec, modules, meets) -> None:
    choice = analysis.choose(spec)
    if spec.isdigit():
        assert len(choice.kept) == int(spec)
        assert choice.kept[0] is choice.layers[0]  # the most sensitive layer
    else:
        assert set(choice.kept_modules) == modules
        assert choice.met_target is meets, choice.to_markdown()


def test_layer_table_names_modules(analysis) -> None:
    choice = analysis.choose("0")
    assert {"conv1", "conv2", "fc1"} <= {layer.module for layer in choice.layers}, choice.to_markdown()
    assert all(layer.sensitivity is not None for layer in choice.layers)
    assert choice.layers == sorted(choice.layers, key=lambda l: -l.sensitivity)
    assert "| 1 |" in choice.to_markdown() and choice.to_json()["kept"] == []


def test_module_names_without_pytorch(setup, analysis) -> None:
    """Without the module list the names come from the ONNX scopes alone, the same for this net."""
    from converter.quantization.tflite_origin import origins

    found = origins(analysis.calibrated, setup["graph"], setup["onnx_model"], setup["inputs"])
    assert {"conv1", "conv2", "fc1"} <= {module for module, _ in found.values()}


def test_unknown_module_is_an_input_error(analysis) -> None:
    with pytest.raises(InputError, match="layer9"):
        analysis.choose("layer9")


def test_interpreter_failure_is_contained() -> None:
    """A model the interpreter cannot load fails in the child process, not in ours."""
    from converter._proc import isolated

    with pytest.raises(isolated.InterpreterAborted):
        isolated.run(b"not a flatbuffer", [isolated.Port("input", (0, 2, 3, 1))], [isolated.Port("logits", (0, 1))],
                     [np.zeros((1, 1, 28, 28), np.float32)], 1)


def test_background_child_isolates_the_aborting_job(setup, analysis) -> None:
    """Several models in one background child: when one kills the child, the others still give their outputs
    (identical to a child of their own) and only the bad one fails."""
    from converter._proc import isolated

    ins, outs = isolated.ports(setup["graph"].inputs), isolated.ports(setup["graph"].outputs)
    arrays = [setup["inputs"][0][:20]]
    jobs = [isolated.Job(analysis.full_model, ins, outs, 1), isolated.Job(b"not a flatbuffer", ins, outs, 1),
            isolated.Job(analysis.full_model, ins, outs, 4)]
    background = isolated.Background(jobs, arrays)
    try:
        first, last = background.result(0), background.result(2)
        with pytest.raises(isolated.InterpreterAborted):
            background.result(1)
    finally:
        background.close()
    alone = isolated.run(analysis.full_model, ins, outs, arrays, 1)
    assert first[0].shape == (20, 10) and np.array_equal(first[0], alone[0])
    assert np.array_equal(last[0], alone[0])


def test_a_scalar_tflite_tensor_matches_no_onnx_node() -> None:
    """A 0-d TFLite tensor (BERT's full-int8 graph has some) has no batch axis to compare: no match, no crash."""
    from onnx import helper

    from converter.quantization.tflite_origin import match

    node = helper.make_node("Identity", ["a"], ["b"], name="/Identity")
    assert match(np.array(0.5, np.float32), [(node, np.array([0.5], np.float32))]) is None
    assert match(np.array([[0.5]], np.float32), [(node, np.array([[0.5]], np.float32))]) is node
