"""``--exporter``: both ONNX exporters convert a toy model and the manifest says which one ran; localisation names
PyTorch modules on the dynamo route (module paths from the node metadata); ``auto`` falls back to dynamo when the
TorchScript exporter cannot export; a wrong name is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converter.diagnosis import probes
from tests.conftest import message_lines, run_cli

EXPORTERS = ("torchscript", "dynamo")
#: the toy with two inputs and two outputs (a conv, a Linear on a sequence, a head), fp32 only: quick
TOY = ("tests.toy_models:image_and_sequence", "--input-shape", "1,3,16,16", "--input-shape", "1,7,6",
       "--precision", "fp32")


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _parity(out: Path) -> dict:
    return json.loads((out / "parity.json").read_text())


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[object, Path]]:
    """The toy converted once per exporter: (the finished command, its --out)."""
    runs = {}
    for exporter in EXPORTERS:
        out = tmp_path_factory.mktemp(exporter) / "out"
        runs[exporter] = (run_cli("convert", *TOY, "--exporter", exporter, "--out", out), out)
    return runs


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_each_exporter_converts_and_is_recorded(converted, exporter: str) -> None:
    result, out = converted[exporter]
    assert result.returncode == 0, result.stderr[-3000:]
    source = _manifest(out)["source"]
    assert source["exporter"] == exporter and "exporter_fallback" not in source
    report = _parity(out)
    assert report["passed"]
    rows = {(r["runtime"], r["precision"]): r for r in report["runtimes"]}
    assert {("onnxruntime", "fp32"), ("saved_model", "fp32"), ("tflite", "fp32")} <= set(rows)
    for row in rows.values():
        assert row["passed"] and row["max_rel_err"] < 1e-5, row
    graph = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_0", "input_1"]
    assert [o.name for o in graph.graph.output] == ["output_0", "output_1"]
    # dynamo has no translations below opset 18 (its down-conversion fails): it exports at 18
    assert graph.opset_import[0].version == (17 if exporter == "torchscript" else 18)


def test_dynamo_nodes_name_modules(converted) -> None:
    """Every module of the toy owns nodes on the dynamo route, found through the node metadata."""
    _, out = converted["dynamo"]
    graph = onnx.load(str(out / "model.onnx"))
    keys = probes.node_scopes(graph, {"conv", "proj", "head"})
    assert {k for k in keys if k is not None} == {("conv", 0), ("proj", 0), ("head", 0)}
    assert probes.scope_paths(graph) == {"conv", "proj", "head"}


@pytest.fixture(scope="module")
def dynamo_toy(tmp_path_factory):
    """A seeded toy, three inputs, and its clean dynamo export (in-process: conftest imports torchvision, hence
    triton, before any TensorFlow, so torch._dynamo may load here)."""
    import torch

    from converter._convert import export
    from tests.toy_models import ImageAndSequence

    torch.manual_seed(0)
    module = ImageAndSequence().eval()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((3, 3, 16, 16)).astype(np.float32), rng.standard_normal((3, 7, 6)).astype(np.float32)]
    path = tmp_path_factory.mktemp("dynamo-toy") / "model.onnx"
    clean = export.export_onnx(module, [x[:1] for x in inputs], path, ["image", "tokens"], ["logits", "features"],
                               17, False, "dynamo")
    return module, inputs, clean


LOCALISED = [("conv", "Conv", "saved_model", "torch"), ("proj", "MatMul", "tflite", "torch"),
             ("head", "Gemm", "onnxruntime", "torch"), ("conv", "Conv", "onnxruntime", "onnx")]


@pytest.mark.parametrize("module_path, op, runtime, reference", LOCALISED,
                         ids=[f"{m}-{r}-{ref}" for m, _, r, ref in LOCALISED])
def test_dynamo_route_localises_to_module(dynamo_toy, module_path: str, op: str, runtime: str, reference: str) -> None:
    """A weight scaled in the dynamo graph is named by its PyTorch module path (hooks, or the graph's own metadata
    for an .onnx source), through the runtime's own route."""
    from converter.diagnosis.localise import Localiser, plant_fault

    module, inputs, clean = dynamo_toy
    node = next(n for n in clean.graph.node if n.op_type == op and probes.metadata_scopes(n) == [module_path])
    faulty = plant_fault(clean, node.name, scale=1.5)
    result = Localiser(module if reference == "torch" else None, faulty, inputs, reference_onnx=clean).localise(runtime)
    assert result["module"] == module_path, result
    named = next(n for n in clean.graph.node if n.name == result["onnx_node"])  # the scope's last node
    assert probes.metadata_scopes(named) == [module_path] and result["reproduced"]
    assert result["rel_err_output"] > result["threshold"] > max(result["rel_err_inputs"], default=0.0), result
    assert result["checked_modules"] == 3


def _scoped(op: str, name: str, inputs: list[str], output: str, scopes: list[str]) -> onnx.NodeProto:
    node = helper.make_node(op, inputs, [output], name=name)
    entry = node.metadata_props.add()
    entry.key, entry.value = probes.NAME_SCOPES, repr(["", *scopes, name])
    return node


def test_node_scopes_count_calls_from_metadata() -> None:
    """The metadata has no call index: a module's call number grows each time its scope is entered again;
    constants without metadata do not break a call."""
    nodes = [
        _scoped("Relu", "relu", ["x"], "a", ["act"]),
        helper.make_node("Constant", [], ["k"], name="c", value=helper.make_tensor("v", TensorProto.FLOAT, [], [1.0])),
        _scoped("Add", "add", ["a", "k"], "b", ["act"]),
        _scoped("Neg", "neg", ["b"], "c1", ["block", "block.0"]),
        _scoped("Relu", "relu_1", ["c1"], "d", ["act"]),
        _scoped("Neg", "neg_1", ["d"], "y", []),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph)
    assert probes.node_scopes(model, {"act", "block", "block.0"}) == [
        ("act", 0), None, ("act", 0), ("block.0", 0), ("act", 1), None]
    assert probes.scope_paths(model) == {"act", "block", "block.0"}


def test_auto_falls_back_to_dynamo(tmp_path) -> None:
    """``torch.diff`` has no TorchScript symbolic at opset 17: auto exports with dynamo, says why, and passes (ONNX
    only: the TF side of a dynamo graph is covered above)."""
    out = tmp_path / "out"
    result = run_cli("convert", "tests.toy_text:first_differences", "--input-shape", "1,8", "--input-dtype", "int64",
                     "--input-range", "0,100", "--targets", "onnx", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    source = _manifest(out)["source"]
    assert source["exporter"] == "dynamo"
    assert "aten::diff" in source["exporter_fallback"]
    assert _parity(out)["passed"]


@pytest.mark.parametrize(
    "args, message",
    [(("--exporter", "foo"), "convert: error: unknown exporter 'foo' — use --exporter auto, dynamo, torchscript"),
     (("--exporter", "torchscript"), "convert: error: torch.onnx.export failed: Exporting the operator 'aten::diff'")],
    ids=["unknown", "torchscript_cannot"],
)
def test_exporter_errors_are_one_line(tmp_path, args: tuple[str, ...], message: str) -> None:
    out = tmp_path / "out"
    result = run_cli("convert", "tests.toy_text:first_differences", "--input-shape", "1,8", "--input-dtype", "int64",
                     "--input-range", "0,100", "--precision", "fp32", *args, "--out", out)
    assert result.returncode == 2
    lines = message_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not out.exists()


def test_dynamo_dict_outputs_and_dynamic_batch(tmp_path) -> None:
    """Dict outputs keep their keys as names and the batch stays symbolic on the dynamo route (ONNX only: quick)."""
    out = tmp_path / "out"
    result = run_cli("convert", "tests.toy_models:dict_outputs", "--input-shape", "1,4", "--dynamic-batch",
                     "--targets", "onnx", "--exporter", "dynamo", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["logits", "doubled"]
    assert all(t.type.tensor_type.shape.dim[0].dim_param for t in [*graph.input, *graph.output])
    report = _parity(out)
    assert report["passed"] and {r["runtime"] for r in report["runtimes"]} >= {"onnxruntime", "pytorch"}
    assert all(r["batch_sizes"] == [1, 3] for r in report["runtimes"])


@pytest.mark.slow
def test_gpt2_without_mask_falls_back_and_passes(tmp_path) -> None:
    """The motivating case: GPT-2 without an attention mask (``aten::diff`` in its causal mask)."""
    out = tmp_path / "out"
    result = run_cli("convert", "tests.toy_text:gpt2", "--input-shape", "1,16", "--input-dtype", "int64",
                     "--input-range", "0,1000", "--precision", "fp32,fp16", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _manifest(out)["source"]["exporter"] == "dynamo"
    report = _parity(out)
    assert report["passed"] and all(r["passed"] for r in report["runtimes"])
    assert {(r["runtime"], r["precision"]) for r in report["runtimes"]} >= {("tflite", "fp16"), ("tflite", "fp32")}


def test_manifest_source_keeps_old_files_readable() -> None:
    """A manifest written before ``--exporter`` has no exporter (it was TorchScript's); new ones round-trip it."""
    from converter._convert.manifest import Source

    old = {"name": "m", "kind": "callable", "spec": "pkg:m", "weights": None}
    assert Source.from_json(old).exporter is None and Source.from_json(old).to_json() == old
    new = {**old, "exporter": "dynamo", "exporter_fallback": "torch.onnx.export failed: ..."}
    assert Source.from_json(new).to_json() == new


def test_with_batch_fixes_output_dimensions_that_only_the_batch_left_symbolic() -> None:
    """The batch-1 fallback graph must not keep an exporter's symbolic output dims (``MatMul_dim_1``) where shape
    inference now knows the size: onnx2tf lays such an output out as if it were dynamic (BERT's pooler)."""
    from onnx import TensorProto, helper, numpy_helper

    from converter._convert.export import with_batch

    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "MatMul_dim_1"])], [weight])
    fixed = with_batch(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), 1)
    assert [d.dim_value for d in fixed.graph.output[0].type.tensor_type.shape.dim] == [1, 3]
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [1, 4]
