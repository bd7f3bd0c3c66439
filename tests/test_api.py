"""The Python API as a user calls it: ``converter.convert(model, sample_inputs, out_dir=...)`` with a live module
(or a TorchScript module, an ExportedProgram, an ``.onnx`` path, a spec) and sample inputs of any dtype, then every
artifact called like the model through ``result.runtime(name)``."""

from __future__ import annotations

import dataclasses
import re

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import converter
from converter.errors import InputError
from tests.conftest import ROOT

FP32 = dict(precisions=("fp32",), parity_samples=16)


class KeywordText(nn.Module):
    """Called like a Hugging Face model (``input_ids=``, ``attention_mask=``); returns a dict with a nested tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(64, 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        h0 = self.emb(input_ids) * attention_mask[..., None].float()
        h1 = torch.tanh(self.mix(h0))
        pooled = (h1 * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1)
        return {"logits": self.head(pooled), "hidden_states": (h0, h1)}


def _text_inputs(batch: int = 2, steps: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 60, (batch, steps), generator=g)
    mask = torch.ones(batch, steps, dtype=torch.int64)
    mask[1:, steps // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    torch.manual_seed(0)
    model = KeywordText().eval()
    inputs = _text_inputs()
    result = converter.convert(model, inputs, out_dir=tmp_path_factory.mktemp("api") / "text",
                               precisions=("fp32", "fp16"), parity_samples=16)
    return model, inputs, result


def test_keyword_inputs_keep_their_names_dtypes_and_the_sample_range(text) -> None:
    _, inputs, result = text
    assert result.parity.passed, result.parity.to_markdown()
    assert [(i.name, i.dtype, i.pytorch_shape) for i in result.manifest.onnx_inputs] == [
        ("input_ids", "int64", [2, 10]), ("attention_mask", "int64", [2, 10])]
    assert [o.name for o in result.manifest.outputs] == ["logits", "hidden_states_0", "hidden_states_1"]
    ids = inputs["input_ids"]
    tflite = result.manifest.artifacts["tflite_fp32"].details
    assert tflite["input_order"] == ["attention_mask", "input_ids"]  # TFLite sorts by name: parity.md says so
    assert any("lists inputs as attention_mask, input_ids" in line and "not by position" in line
               for line in result.parity.feeding), result.parity.feeding
    assert "- input `input_ids`: int64 [2, 10]" in (result.out_dir / "parity.md").read_text()
    drawn = f"int64 in [{int(ids.min())}, {int(ids.max()) + 1}), attention_mask: padding masks (1s then 0s)"
    assert drawn in result.parity.data, result.parity.data  # random ids stay inside the sample's vocabulary range
    fed = {(r.runtime, r.precision): r.batch_sizes for r in result.parity.runtimes}
    assert fed[("tflite", "fp32")] == fed[("onnxruntime", "fp32")] == [2] and fed[("pytorch", "fp32")] == [16], fed


@pytest.mark.parametrize(("runtime", "atol"), [("onnxruntime", 1e-5), ("saved_model", 1e-5), ("tflite_fp32", 1e-5),
                                               ("tflite_fp16", 5e-3)])
def test_every_artifact_is_callable_like_the_model(text, runtime: str, atol: float) -> None:
    model, inputs, result = text
    with torch.no_grad():
        want = model(**inputs)
    want = [want["logits"], *want["hidden_states"]]
    call = result.runtime(runtime)
    positional = call(*inputs.values())
    by_name = call(**{k: v.numpy() for k, v in inputs.items()})
    assert len(positional) == 3
    for got, named, ref in zip(positional, by_name, want):
        np.testing.assert_allclose(got, ref.numpy(), atol=atol, rtol=0)
        np.testing.assert_array_equal(got, named)


def test_several_outputs_unpack_in_order_and_read_by_name(text) -> None:
    _, inputs, result = text
    out = result.runtime("onnxruntime")(**inputs)
    logits, first, second = out  # a tuple in the model's order
    assert out["logits"] is logits and out["hidden_states_1"] is second and out[1] is first
    assert out.logits is logits and out.hidden_states_0 is first
    assert list(dict(out)) == ["logits", "hidden_states_0", "hidden_states_1"]
    with pytest.raises(KeyError, match="no output 'pooler': the outputs are logits, hidden_states_0"):
        out["pooler"]


def test_a_fixed_batch_artifact_takes_any_number_of_samples(text) -> None:
    model, _, result = text
    five = _text_inputs(batch=5)
    with torch.no_grad():
        want = model(**five)["logits"].numpy()
    np.testing.assert_allclose(result.runtime("tflite_fp32")(**five)[0], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("call", "message"), [
    (lambda rt: rt(torch.zeros(2, 10, dtype=torch.int64)), "takes 2 inputs (input_ids, attention_mask); got 1"),
    (lambda rt: rt(torch.zeros(2, 7, dtype=torch.int64), torch.zeros(2, 7, dtype=torch.int64)),
     "input 'input_ids' of tflite_fp32 has shape [2, 7], expected 2x10"),
    (lambda rt: rt(ids=torch.zeros(2, 10), attention_mask=torch.zeros(2, 10)), "takes inputs input_ids, attention_mask"),
], ids=["count", "shape", "names"])
def test_a_runtime_called_wrongly_says_how(text, call, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        call(text[2].runtime("tflite_fp32"))


def test_an_unknown_runtime_lists_the_built_ones(text) -> None:
    with pytest.raises(InputError, match="has no runtime 'tflite_int8'.*onnxruntime, saved_model, tflite_fp32, tflite_fp16"):
        text[2].runtime("tflite_int8")


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(3, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x) + self.b(y), self.b(y)


def _module():
    torch.manual_seed(1)
    return TwoInputs().eval()


def _scripted():
    return torch.jit.script(_module())


SAMPLES = (torch.randn(1, 6, generator=torch.Generator().manual_seed(4)),
           torch.randn(1, 3, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize(("build", "kind"), [(_module, "module"), (_scripted, "torchscript")], ids=["module", "script"])
def test_live_modules_convert_from_a_tuple_of_samples(tmp_path, build, kind: str, monkeypatch) -> None:
    from converter.parity import runtimes

    sessions = []  # onnxruntime sessions of model.onnx: the export's check only (the TF side reuses its outputs)
    make = runtimes.onnxruntime_runner
    monkeypatch.setattr(runtimes, "onnxruntime_runner", lambda path, *a, **k: sessions.append(path) or make(path, *a, **k))
    model = build()
    model.a.train()  # a caller's mixed train/eval flags: the conversion runs in eval mode and gives them back
    result = converter.convert(model, SAMPLES, out_dir=tmp_path / "out", **FP32)
    assert result.parity.passed, result.parity.to_markdown()
    assert model.a.training and not model.training and not model.b.training
    assert len(sessions) == 1
    assert result.manifest.source.kind == kind
    assert [i.name for i in result.manifest.inputs] == ["input_0", "input_1"]
    with torch.no_grad():
        want = model(*SAMPLES)
    for got, ref in zip(result.runtime("saved_model")(*SAMPLES), want):
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-5, rtol=0)


def test_an_onnx_path_with_keyword_samples_in_another_order(tmp_path) -> None:
    path = tmp_path / "two.onnx"
    torch.onnx.export(_module(), SAMPLES, str(path), input_names=["x", "y"], output_names=["sum", "side"], dynamo=False)
    x, y = SAMPLES
    result = converter.convert(path, {"y": y, "x": x}, out_dir=tmp_path / "out", **FP32)
    assert result.parity.passed, result.parity.to_markdown()
    assert [i.name for i in result.manifest.inputs] == ["x", "y"]
    got = result.runtime("tflite_fp32")(y=y, x=x)
    np.testing.assert_allclose(got[0], _module()(x, y)[0].detach().numpy(), atol=1e-5, rtol=0)


def test_a_spec_string_takes_samples_too(tmp_path) -> None:
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(6))
    result = converter.convert("tests.toy_models:tiny_linear", x, out_dir=tmp_path / "out", **FP32)
    assert result.parity.passed and result.manifest.onnx_inputs[0].pytorch_shape == [3, 4]


def test_an_exported_program_converts(tmp_path) -> None:
    """In its own process: ``torch.export`` must load before TensorFlow (beside it, importing it can segfault)."""
    script = textwrap.dedent(f"""
        import sys, numpy as np, torch
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_api import SAMPLES, _module
        import converter
        program = torch.export.export(_module(), SAMPLES)
        result = converter.convert(program, SAMPLES, out_dir={str(tmp_path / 'out')!r}, precisions=("fp32",),
                                   parity_samples=8)
        got = result.runtime("tflite_fp32")(*SAMPLES)
        print(result.manifest.source.kind, result.parity.passed,
              float(np.abs(got[0] - _module()(*SAMPLES)[0].detach().numpy()).max()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    kind, passed, error = done.stdout.split()[-3:]
    assert (kind, passed) == ("exported_program", "True") and float(error) < 1e-5


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(model="tests.toy_models:tiny_linear", sample_inputs=torch.zeros(1, 4), input_shapes=[(1, 4)]),
     "both sample_inputs and input_shapes"),
    (dict(model="tests.toy_models:tiny_linear", sample_inputs=[1.0, 2.0]), "sample input #0 is a float, not a tensor"),
    (dict(model="tests.toy_models:tiny_linear", sample_inputs=torch.zeros(1, 4, dtype=torch.complex64)),
     "sample input #0 has dtype complex64"),
    (dict(model="tests.toy_models:tiny_linear", sample_inputs=torch.zeros(1, 4), precision=("fp32",)),
     "unknown option 'precision'"),
    (dict(model=42, sample_inputs=torch.zeros(1, 4)), "cannot convert a int"),
    (dict(model="tests.toy_models:tiny_linear", sample_inputs=torch.zeros(1, 4), input_dtypes=("int64",)),
     "input_dtypes int64 differ from the sample inputs' float32"),
], ids=["shapes-too", "not-tensor", "complex", "unknown-option", "not-a-model", "dtype-clash"])
def test_bad_api_calls_are_one_line_errors(tmp_path, kwargs: dict, message: str) -> None:
    model = kwargs.pop("model")
    with pytest.raises(InputError, match=message):
        converter.convert(model, out_dir=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("call", "message"), [
    (lambda out: converter.convert(_module(), SAMPLES, out_dir=out, weights=out.parent / "w.pt"),
     "weights= was given with a live TwoInputs, which is converted with the weights it holds — load them into the "
     "module first"),
    (lambda out: converter.convert(_module(), SAMPLES, out_dir=_module()), "out_dir is a TwoInputs, not a path"),
    (lambda out: converter.convert(_module(), SAMPLES, out_dir=out, parity_data=SAMPLES[0]),
     "parity_data is a Tensor, not a path — pass parity_data as a str or Path"),
    (lambda out: converter.check(out, _module()), "out_dir is a TwoInputs, not a path"),
    (lambda out: converter.check(_module(), out, weights=out.parent / "w.pt"), "weights= was given with a live"),
    (lambda out: converter.load_runtime(_module(), "tflite_fp32"), "out_dir is a TwoInputs, not a path"),
], ids=["live-module-with-weights", "module-as-out-dir", "tensor-as-parity-data", "check-arguments-swapped",
        "check-live-module-with-weights", "runtime-of-a-module"])
def test_a_misplaced_argument_is_a_one_line_error(tmp_path, call, message: str) -> None:
    """Never a bare TypeError from ``os.fspath``, and never a file quietly ignored (a weights file beside a live
    module: the artifacts would carry the module's own weights)."""
    with pytest.raises(InputError, match=re.escape(message)):
        call(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_call_gives_the_module_its_mode_back(tmp_path) -> None:
    model = _module().train()
    with pytest.raises(InputError, match="both sample_inputs and input_shapes"):
        converter.convert(model, SAMPLES, out_dir=tmp_path / "out", input_shapes=[(1, 6), (1, 3)])
    assert all(m.training for m in model.modules())


@dataclasses.dataclass
class _Heads:
    logits: torch.Tensor
    embedding: torch.Tensor
    unused: torch.Tensor | None = None  # left None: not an output


class DataclassOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head, self.embed = nn.Linear(6, 3), nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> _Heads:
        return _Heads(self.head(x), self.embed(x))


def test_a_dataclass_output_is_named_after_its_fields(tmp_path) -> None:
    torch.manual_seed(2)
    model = DataclassOutputs().eval()
    result = converter.convert(model, SAMPLES[0], out_dir=tmp_path / "out", **FP32)
    assert result.parity.passed, result.parity.to_markdown()
    assert [o.name for o in result.manifest.outputs] == ["logits", "embedding"]
    logits, embedding = result.runtime("tflite_fp32")(SAMPLES[0])
    with torch.no_grad():
        want = model(SAMPLES[0])
    np.testing.assert_allclose(embedding, want.embedding.numpy(), atol=1e-5, rtol=0)


class _DynamicCache:  # what a Hugging Face causal LM returns beside its logits unless use_cache=False
    def __repr__(self) -> str:
        return "DynamicCache()"


class ReturnsThis(nn.Module):
    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> object:
        return self.value if not isinstance(self.value, tuple) else (x * 2, *self.value)


@pytest.mark.parametrize(("value", "message"), [
    ("text", "the model returned a value of type str: 'text' — return tensors, or a tuple, list, dict or dataclass"),
    ((_DynamicCache(),), "the model returned a value of type _DynamicCache: DynamicCache() — build the model with "
                         "use_cache=False"),
], ids=["a-string", "a-cache-beside-the-logits"])
def test_an_output_that_is_no_tensor_is_named(tmp_path, value, message: str) -> None:
    from converter.errors import ExportError

    with pytest.raises(ExportError, match=re.escape(message)):
        converter.convert(ReturnsThis(value), SAMPLES[0], out_dir=tmp_path / "out", **FP32)
    assert not (tmp_path / "out").exists()


def test_parity_samples_default_like_the_command() -> None:
    """The API and the command agree: 1000 samples for the reference net, 100 for any other model."""
    from converter.api import _is_reference_net
    from converter.options import ConvertOptions

    assert ConvertOptions().parity_samples is None
    assert ConvertOptions().with_default_samples(_is_reference_net("mnist_cnn")).parity_samples == 1000
    assert ConvertOptions().with_default_samples(_is_reference_net("tests.toy_models:tiny_linear")).parity_samples == 100
    assert ConvertOptions(parity_samples=7).with_default_samples(True).parity_samples == 7


def test_none_means_the_default_for_tuple_options() -> None:
    """``input_ranges=None`` (e.g. forwarded from a caller's own optional argument) is the default, not a
    TypeError from deep inside the options; ``precisions=None`` keeps its meaning (every precision)."""
    from converter.api import _with_fields
    from converter.options import ConvertOptions

    nones = dict.fromkeys(("input_ranges", "dynamic_dims", "int8_keep_float", "input_names", "class_axes"))
    assert _with_fields(ConvertOptions(), nones) == ConvertOptions()
    assert _with_fields(ConvertOptions(precisions=("fp32",)), {"precisions": None}).precisions is None


def test_full_int8_of_a_model_with_integer_inputs_calibrates_on_integers(tmp_path) -> None:
    """Representative samples keep each input's dtype (token ids stay int64): the selective-int8 search and the
    calibration would otherwise feed float32 to an int64 input and stop."""
    from tests.toy_models import tiny_text

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 100, (64, 16)), np.ones((64, 16), np.int64)]
    result = converter.convert(tiny_text(), (torch.randint(0, 100, (1, 16)), torch.ones(1, 16, dtype=torch.int64)),
                               out_dir=tmp_path / "out", precisions=("int8",), parity_samples=64,
                               calibration=calibration, int8_keep_float=("auto",))
    int8 = next(r for r in result.parity.runtimes if r.precision == "int8")
    assert int8.passed, int8.reason
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(result.out_dir / "model_int8.tflite")).get_input_details()
    assert {str(np.dtype(d["dtype"])) for d in details} == {"int64"}


@pytest.mark.parametrize(("name", "values", "config", "want"), [
    ("attention_mask", [[1, 1, 1, 1]], None, (0, 2)),  # an all-ones sample mask: parity still feeds padding
    ("attention_mask", [[1, 1, 0, 0]], None, (0, 2)),
    ("padding_mask", [[0, 2, 1, 1]], None, (0, 3)),  # not 0/1: not a mask
    ("input_ids", [[5, 17, 300, 2]], {"vocab_size": 1000}, (0, 1000)),  # the whole vocabulary
    ("input_ids", [[5, 17, 300, 2]], None, (2, 301)),  # no config: the sample's range
    ("input_ids", [[5, 17, 1200, 2]], {"vocab_size": 1000}, (2, 1201)),  # a config the sample contradicts: ignored
    ("token_type_ids", [[0, 0, 0, 0]], {"type_vocab_size": 2}, (0, 2)),
    ("labels", [[3, 4, 4, 9]], {"vocab_size": 1000}, (3, 10)),
])
def test_sample_ranges_by_input_name(name: str, values, config, want) -> None:
    from types import SimpleNamespace

    from converter._convert.live import Samples

    samples = Samples((np.array(values, np.int64), np.zeros((1, 4), np.float32)), (name, "x"))
    got = samples.ranges(SimpleNamespace(**config) if config else None)
    assert got == (want, (0, 1))
