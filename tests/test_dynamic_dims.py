"""Dynamic dimensions beyond the batch: symbolic in ONNX, the SavedModel signature and TFLite, parity at two sizes,
and a graph that only works at its traced size fails a row instead of passing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import converter
from converter._convert.dims import normalise, resolve, second_size
from converter.errors import InputError
from tests.conftest import message_lines, run_cli
from tests.test_api import KeywordText, _text_inputs

SEQ = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    torch.manual_seed(0)
    model = KeywordText().eval()
    result = converter.convert(model, _text_inputs(), out_dir=tmp_path_factory.mktemp("dyn") / "text",
                               precisions=("fp32", "fp16"), parity_samples=16, dynamic_dims=SEQ)
    return model, result


def test_the_sequence_axis_is_symbolic_in_every_artifact(text) -> None:
    _, result = text
    assert result.parity.passed, result.parity.to_markdown()
    assert [i.shape for i in result.manifest.inputs] == [[2, None], [2, None]]
    assert [o.shape for o in result.manifest.outputs] == [[2, 3], [2, None, 8], [2, None, 8]]
    import onnx

    graph = onnx.load(str(result.out_dir / "model.onnx")).graph
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["", "seq"]
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(result.out_dir / "model_fp32.tflite")).get_input_details()
    assert [list(d["shape_signature"]) for d in details] == [[2, -1], [2, -1]]  # resizable


def test_parity_ran_at_both_sizes(text) -> None:
    _, result = text
    assert result.parity.dynamic_dims == "seq = 10 and 5"
    assert "dynamic dims at seq = 10 and 5" in (result.out_dir / "parity.md").read_text()
    assert "- input `input_ids`: int64 [2, *] (PyTorch layout; * = any size)" in result.parity.to_markdown()


@pytest.mark.parametrize("runtime", ["onnxruntime", "saved_model", "tflite_fp32"])
@pytest.mark.parametrize("steps", [1, 4, 23])
def test_every_artifact_takes_other_lengths(text, runtime: str, steps: int) -> None:
    model, result = text
    inputs = _text_inputs(steps=steps)
    with torch.no_grad():
        want = model(**inputs)
    got = result.runtime(runtime)(**inputs)
    np.testing.assert_allclose(got[0], want["logits"].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[2], want["hidden_states"][1].numpy(), atol=1e-5, rtol=0)


class BakedLength(nn.Module):
    """Flattens [B, T, 4] with ``int(T)``: the trace bakes the sample's T into a Reshape constant, so the exported
    graph only runs at that length, although the PyTorch module takes any."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return h.reshape(h.shape[0], int(h.shape[1]) * 4).sum(dim=1, keepdim=True)


def test_a_graph_that_bakes_the_length_fails_at_the_second_size(tmp_path) -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (1, 12))
    result = converter.convert(BakedLength().eval(), ids, out_dir=tmp_path / "out", precisions=("fp32",),
                               parity_samples=8, dynamic_dims={"input": [1]}, exporter="torchscript")
    assert not result.parity.passed and result.exit_code == 1
    failed = {r.runtime: r.reason for r in result.parity.failures()}
    assert "onnxruntime" in failed and failed["onnxruntime"].startswith("at the second size (dim12 = 6)"), failed


def test_check_runs_both_sizes_again_from_the_manifest(text) -> None:
    model, result = text
    again = converter.check(model, result.out_dir, converter.ConvertOptions(parity_samples=16))
    assert again.parity.passed and again.parity.dynamic_dims == "dim10 = 10 and 5"


def test_the_cli_keeps_named_dimensions_symbolic(tmp_path) -> None:
    done = run_cli("convert", "tests.toy_models:tiny_text", "--input-shape", "1,16", "--input-dtype", "int64",
                   "--input-range", "0,100", "--input-name", "ids", "--input-shape", "1,16", "--input-dtype", "int64",
                   "--input-range", "0,2", "--input-name", "mask", "--dynamic-dim", "ids:1:seq",
                   "--dynamic-dim", "mask:1:seq", "--precision", "fp32", "--parity-samples", "12", "--out",
                   tmp_path / "out")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [i["shape"] for i in manifest["inputs"]] == [[1, None], [1, None]]
    assert "dynamic dims at seq = 16 and 8" in done.stdout


@pytest.mark.parametrize(("flags", "message"), [
    (["--dynamic-dim", "tokens:1"], "the model has no input 'tokens' — use one of the input names: input"),
    (["--dynamic-dim", "input:2"], "input 'input' has 2 dimensions (1x4) — pass an axis between 1 and 1"),
    (["--dynamic-dim", "input:0"], "axis 0 is the batch — use --dynamic-batch"),
    (["--dynamic-dim", "input"], "--dynamic-dim input is not NAME:AXIS"),
], ids=["unknown-name", "axis-out-of-range", "batch-axis", "no-axis"])
def test_bad_dynamic_dims_are_one_line_errors(tmp_path, flags: list[str], message: str) -> None:
    done = run_cli("convert", "tests.toy_models:tiny_linear", "--input-shape", "1,4", *flags, "--precision", "fp32",
                   "--out", tmp_path / "out")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(message_lines(done.stderr)) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("value", "entries"), [
    ({"input_ids": {1: "seq"}}, (("input_ids", 1, "seq"),)),
    ({"input_ids": [1, 2]}, (("input_ids", 1, ""), ("input_ids", 2, ""))),
    ({"x": 3}, (("x", 3, ""),)),
    (("a:1", "b:2:len"), (("a", 1, ""), ("b", 2, "len"))),
    ((("a", 1, "t"),), (("a", 1, "t"),)),
])
def test_every_form_of_dynamic_dims_normalises_the_same_way(value, entries) -> None:
    assert normalise(value) == entries


def test_same_size_dimensions_share_a_label_unless_told_otherwise() -> None:
    dims = resolve(normalise({"ids": [1], "mask": [1]}), ["ids", "mask"], [(1, 16), (1, 16)])
    assert dims.sizes == {"dim16": 16} and dims.resized([(1, 16), (1, 16)]) == [(1, 8), (1, 8)]
    with pytest.raises(InputError, match="seq is 16 elsewhere but 7 here"):
        resolve(normalise(("ids:1:seq", "mask:1:seq")), ["ids", "mask"], [(1, 16), (1, 7)])
    assert [second_size(n) for n in (1, 2, 3, 16)] == [2, 1, 1, 8]


def _ids(steps: int, seed: int, masked: bool) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 1000, (1, steps), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones(1, steps, dtype=torch.int64)} if masked else {"input_ids": ids}


@pytest.mark.parametrize("name", ["bert", pytest.param("gpt2", marks=pytest.mark.slow)])
def test_self_attention_converts_at_a_symbolic_length(tmp_path, name: str) -> None:
    """BERT (ids + attention mask) and GPT-2 (causal mask built inside, dynamo-exported) at a symbolic sequence
    length: every artifact takes any length and passes parity at 12 and 6. What it takes: symbolic shape inference
    gives onnx2tf constant head reshapes, slice bounds stay inside int32 for TFLite, and the vmap-built masks'
    GatherND becomes a flat Gather."""
    from tests import toy_text

    masked = name == "bert"
    model = getattr(toy_text, name)()
    dims = SEQ if masked else {"input_ids": SEQ["input_ids"]}
    result = converter.convert(model, _ids(12, 0, masked), out_dir=tmp_path / name, precisions=("fp32", "fp16"),
                               parity_samples=8, dynamic_dims=dims)
    assert result.parity.passed, result.parity.to_markdown()
    assert result.parity.dynamic_dims == "seq = 12 and 6"
    assert {(r.runtime, r.precision) for r in result.parity.runtimes} >= {
        ("saved_model", "fp32"), ("tflite", "fp32"), ("tflite", "fp16")}
    for steps in (3, 20):
        feed = _ids(steps, steps, masked)
        with torch.no_grad():
            want = model(**feed)
        want = (want.last_hidden_state if masked else want).numpy()
        for runtime in ("saved_model", "tflite_fp32"):
            got = result.runtime(runtime)(**feed)  # a list of outputs, or the one output itself
            np.testing.assert_allclose(got[0] if masked else got, want, atol=2e-5, rtol=0)


def test_the_second_size_cuts_the_users_data() -> None:
    """At the second size parity runs on the user's own samples cut to it (a padded batch stays padded); seeded
    noise, or a second size larger than the data, falls back to random data (None here)."""
    from converter._convert.torchstage import _cut
    from converter.parity.data import ParityData

    ids = np.arange(5 * 12).reshape(5, 12)
    mask = (np.arange(12)[None] < np.array([12, 9, 7, 4, 2])[:, None]).astype(np.int64)
    cut = _cut(ParityData([ids, mask], None, "ids.npz"), [(1, 6), (1, 6)], 3)
    assert [x.shape for x in cut.inputs] == [(3, 6), (3, 6)]
    np.testing.assert_array_equal(cut.inputs[0], ids[:3, :6])
    np.testing.assert_array_equal(cut.inputs[1], mask[:3, :6])
    assert _cut(ParityData([ids, mask], None, "noise", real=False), [(1, 6), (1, 6)], 3) is None
    assert _cut(ParityData([ids, mask], None, "ids.npz"), [(1, 24), (1, 24)], 3) is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert_tiny", "gpt2_tiny_lm", "t5_tiny_encoder"])
def test_zoo_text_models_at_a_symbolic_length(tmp_path, name: str) -> None:
    """The zoo's text models with ``seq`` symbolic in every input, checked on their own padded batches (cut to the
    second size there): every fp32 and fp16 row passes."""
    from converter.zoo.models import ZOO

    entry = ZOO[name]
    arrays = entry.make_inputs(8, 1)
    np.savez(tmp_path / "batches.npz", **dict(zip(entry.input_names, arrays)))
    result = converter.convert(entry.build(), tuple(torch.from_numpy(a[:1]) for a in arrays), out_dir=tmp_path / name,
                               precisions=("fp32", "fp16"), parity_samples=8, parity_data=str(tmp_path / "batches.npz"),
                               input_names=tuple(entry.input_names), input_ranges=entry.input_ranges,
                               dynamic_dims={n: {1: "seq"} for n in entry.input_names})
    assert result.parity.passed, result.parity.to_markdown()
    assert result.parity.dynamic_dims == f"seq = {arrays[0].shape[1]} and {arrays[0].shape[1] // 2}"
