"""Localisation names the module we broke: a weight scaled in a copy of ``model.onnx`` before the TF route."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from converter._convert import export
from converter.diagnosis.localise import Localiser, localise_failures, plant_fault
from converter.parity.judge import ParityReport, RuntimeResult, to_markdown
from converter.parity.data import ParityData
from converter.diagnosis.probes import scope_of
from converter._convert.sources import LoadedModel


def _mnist_cnn() -> tuple[torch.nn.Module, list[np.ndarray]]:
    from reference_models.mnist_cnn import MnistCNN

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    return MnistCNN().eval(), [x]


def _resnet18() -> tuple[torch.nn.Module, list[np.ndarray]]:
    import torchvision

    from converter.zoo import models as zoo

    def make(n: int, seed: int) -> list[np.ndarray]:
        return [zoo.smooth_images(n, seed, 3, 64)]

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None)
    return zoo.honest_weights(model, make), make(2, 7)


#: (model, ONNX node whose weight is scaled, by how much, module localisation must name, runtime replayed,
#:  precision, reference: PyTorch hooks, or onnxruntime on the clean graph as for an .onnx source)
CASES = [
    ("mnist_cnn", "/fc1/Gemm", 1.5, "fc1", "saved_model", "fp32", "torch"),
    ("mnist_cnn", "/fc1/Gemm", 1.0003, "fc1", "saved_model", "fp32", "torch"),  # fails fp32 parity, barely
    ("mnist_cnn", "/conv1/Conv", 1.5, "conv1", "tflite", "fp32", "torch"),
    ("resnet18", "/layer3/layer3.1/conv2/Conv", 1.5, "layer3.1.conv2", "saved_model", "fp32", "torch"),
    ("resnet18", "/layer2/layer2.0/downsample/downsample.0/Conv", 1.5, "layer2.0.downsample.0", "onnxruntime",
     "fp32", "torch"),
    ("resnet18", "/layer3/layer3.1/conv2/Conv", 1.5, "layer3.1.conv2", "tf2onnx_roundtrip", "fp32", "onnx"),
    ("mnist_cnn", "/fc1/Gemm", 1.5, "fc1", "tflite", "fp16", "onnx"),
]


def _parity_md_line(runtime: str, precision: str, localisation: dict) -> str:
    """The ``> localised:`` line parity.md (and the terminal) shows for a failed row with this localisation."""
    row = RuntimeResult(runtime, precision, None, 1.0, 1.0, 1.0, 0.5, 0.5, None, {}, False, "x",
                        localisation=localisation)
    md = to_markdown(ParityReport(False, "pytorch", 3, [row]))
    (line,) = [line for line in md.splitlines() if line.startswith("> localised:")]
    return line


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, list[np.ndarray], onnx.ModelProto]]:
    """Each architecture once: the module, a few inputs, and its clean ONNX export (batch 1)."""
    out = {}
    for name, factory in {"mnist_cnn": _mnist_cnn, "resnet18": _resnet18}.items():
        module, inputs = factory()
        path = tmp_path_factory.mktemp(name) / "model.onnx"
        proto = export.export_onnx(module, [x[:1] for x in inputs], path, ["input"], ["output"], 17, False)
        out[name] = (module, inputs, proto)
    return out


@pytest.mark.parametrize("name, node, scale, expected, runtime, precision, reference", CASES,
                         ids=[f"{c[0]}-{c[3]}x{c[2]}-{c[4]}-{c[5]}-{c[6]}" for c in CASES])
def test_planted_fault_is_localised(models, name, node, scale, expected, runtime, precision, reference) -> None:
    module, inputs, clean = models[name]
    faulty = plant_fault(clean, node, scale=scale)
    localiser = Localiser(module if reference == "torch" else None, faulty, inputs, reference_onnx=clean)
    result = localiser.localise(runtime, precision)
    assert result["module"] == expected, result
    assert result["onnx_node"] == node
    assert result["rel_err_output"] > result["threshold"], result
    assert max(result["rel_err_inputs"], default=0.0) < result["threshold"], result
    assert result["threshold_adapted"] == (scale < 1.01), result
    assert result["checked_modules"] >= 3
    assert result["reproduced"]
    assert _parity_md_line(runtime, precision, result).startswith(
        f"> localised: {runtime} ({precision}) first diverges at module `{expected}` (")


def test_plant_fault_rejects_unknown_node(models) -> None:
    with pytest.raises(KeyError):  # resnet18 has no downsample in layer1
        plant_fault(models["resnet18"][2], "/layer1/layer1.0/downsample/downsample.0/Conv")


def test_clean_graph_localises_nothing(models) -> None:
    module, inputs, clean = models["mnist_cnn"]
    result = Localiser(module, clean, inputs).localise("onnxruntime")
    assert result["module"] is None and "note" in result
    assert result["replay_output_rel_err"] < 1e-4 and not result["reproduced"]
    assert _parity_md_line("onnxruntime", "fp32", result) == f"> localised: onnxruntime (fp32): {result['note']}"


SCOPES = [
    ("/layer3/layer3.1/conv2/Conv", ("layer3.1.conv2", 0)),
    ("/layer3/layer3.1/relu_1/Relu", ("layer3.1.relu", 1)),
    ("/layer2/layer2.0/downsample/downsample.0/Conv", ("layer2.0.downsample.0", 0)),
    ("/fc/Gemm", ("fc", 0)),
    ("/features/features.2/block/block.0/block.0.0/Conv", ("features.2.block.0.0", 0)),  # nested Sequentials
    ("/features/features.0/features.0.2/HardSwish", ("features.0.2", 0)),
    ("/Flatten", None),
    ("/unknown/Conv", None),
]


@pytest.mark.parametrize("node, expected", SCOPES)
def test_scope_of(node, expected) -> None:
    paths = {"layer3", "layer3.1", "layer3.1.conv2", "layer3.1.relu", "layer2", "layer2.0", "layer2.0.downsample",
             "layer2.0.downsample.0", "fc", "features", "features.0", "features.0.2", "features.2",
             "features.2.block", "features.2.block.0", "features.2.block.0.0"}
    assert scope_of(node, paths) == expected


def test_localise_failures_fills_failed_rows(models, tmp_path: Path) -> None:
    module, inputs, clean = models["mnist_cnn"]
    onnx.save(plant_fault(clean, "/fc1/Gemm"), str(tmp_path / "model.onnx"))

    def row(runtime: str, passed: bool) -> RuntimeResult:
        return RuntimeResult(runtime, "fp32", None, 1.0, 1.0, 1.0, 0.5, 0.5, None, {}, passed)

    class Report:
        runtimes = [row("onnxruntime", False), row("torchscript", False), row("tflite", True)]

    report = Report()
    localise_failures(LoadedModel("m", "callable", module), tmp_path, "nhwc",
                      ParityData(inputs, None, "noise", real=False), report, None)
    assert report.runtimes[0].localisation["module"] == "fc1"
    json.dumps(report.runtimes[0].localisation)  # goes into parity.json as is
    assert "skipped" in report.runtimes[1].localisation
    assert _parity_md_line("torchscript", "fp32", report.runtimes[1].localisation) == \
        "> localised: torchscript (fp32): no replay route for runtime torchscript"
    assert report.runtimes[2].localisation is None
