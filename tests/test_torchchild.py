"""The PyTorch child is started early (``convert`` prestarts it) and never outlives a command that did not use it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from converter import cli
from converter._convert import torchchild
from converter._convert.side import FREE_CHUNK
from tests.conftest import ROOT, message_lines


@pytest.fixture
def spawned(monkeypatch) -> list[subprocess.Popen]:
    """Every child ``torchchild`` starts in the test, killed afterwards whatever happened."""
    procs: list[subprocess.Popen] = []
    real_spawn = torchchild.spawn

    def recording_spawn(import_cwd: bool = True):
        child = real_spawn(import_cwd)
        procs.append(child.proc)
        return child

    monkeypatch.setattr(torchchild, "spawn", recording_spawn)
    monkeypatch.chdir(ROOT)
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    torchchild.discard()


def test_prestarted_child_is_taken_once_then_new_ones_are_spawned(spawned) -> None:
    torchchild.prestart()
    torchchild.prestart()  # idempotent: still one child waiting
    assert len(spawned) == 1
    first = torchchild.take()
    second = torchchild.take()
    assert first.proc is spawned[0] and second.proc is spawned[1] and len(spawned) == 2
    for child in (first, second):
        child.close()
        assert child.proc.poll() is not None and child.log.closed


def test_discard_kills_a_child_nobody_took(spawned) -> None:
    torchchild.prestart()
    torchchild.discard()
    assert spawned[0].poll() is not None
    assert torchchild.take().proc is spawned[1]  # nothing prestarted is left to hand out


@pytest.mark.parametrize("argv", [
    ["mnist_cnn", "--weights", "does-not-exist.pt"],  # the child takes the request and reports the error
    ["mnist_cnn", "--input-shape", "1,x,28"],  # fails parsing a shape: the child never gets a request
])
def test_a_command_that_fails_early_leaves_no_child_running(spawned, tmp_path, argv) -> None:
    code = cli.main([*argv, "--out", str(tmp_path / "out")])
    assert code == 2
    assert len(spawned) == 1 and spawned[0].poll() is not None  # prestarted, then stopped on the way out
    assert not (tmp_path / "out").exists()


def test_a_child_that_crashes_is_reported_with_the_last_line_it_printed(spawned, tmp_path, capsys) -> None:
    code = cli.main(["tests.toy_models:crashing_factory", "--out", str(tmp_path / "out")])
    assert code == 2
    err = message_lines(capsys.readouterr().err)
    assert len(err) == 1 and "the PyTorch stage crashed (exit 7): toy_models: about to crash natively" in err[0]
    assert not (tmp_path / "out").exists() and spawned[0].poll() == 7


def test_an_onnx_source_starts_no_child(spawned, tmp_path) -> None:
    assert cli.main([str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "out")]) == 2
    assert spawned == []


def test_child_given_no_request_exits_on_its_own() -> None:
    """If the parent dies before handing over a request, the child sees end-of-file on stdin and exits (3)
    once torch has imported, instead of waiting forever."""
    done = subprocess.run([sys.executable, "-m", "converter._convert.torchstage"], stdin=subprocess.DEVNULL,
                          capture_output=True, cwd=ROOT, timeout=120)
    assert done.returncode == 3, done.stderr[-1000:]


def test_the_exported_side_arrives_before_the_reference_outputs(spawned, tmp_path) -> None:
    """The parent builds the TF artifacts from the exported side while the child still computes the PyTorch
    reference (eager and TorchScript on every parity sample); the whole side follows with the same data."""
    from converter._convert import torchstage
    from converter.options import ConvertOptions

    stage = torchstage.start_isolated("tests.toy_models:slow_reference", None, tmp_path, ConvertOptions(parity_samples=100),
                                      [[1, 4]], "random")
    try:
        early = stage.exported()
        assert stage.spawned.proc.poll() is None  # eager sleeps 1 s on its first parity chunk
        assert early.outputs == {} and (tmp_path / "model.onnx").is_file()
        # handed over before onnxruntime ran the file: its outputs follow, checked against PyTorch, while the
        # child is still at the reference
        assert early.onnx_outputs is None and early.graph is not None and early.graph.nodes >= 1
        checked = stage.onnx_outputs()
        assert stage.spawned.proc.poll() is None
        whole = stage.result()
    finally:
        stage.cancel()
    assert set(whole.outputs) == {"pytorch", "torchscript"} and whole.output_names == early.output_names
    assert np.array_equal(whole.data.inputs[0], early.data.inputs[0]) and whole.data.inputs[0].shape == (100, 4)
    assert whole.outputs["pytorch"][FREE_CHUNK][0].shape == (100, 3)
    # onnxruntime's outputs on the sample come from the child: the TF process needs no session of its own
    import onnx
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {early.input_names[0]: early.data.inputs[0][:1]})
    assert len(checked) == 1 and checked[0].shape == (1, 3)
    np.testing.assert_allclose(checked[0], expected[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(whole.onnx_outputs[0], checked[0])
    # the facts the TF side reads of the file, without parsing it again
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert early.graph.nodes == len(proto.graph.node)
    assert set(early.graph.op_types) == {n.op_type for n in proto.graph.node}
    assert early.graph.opset == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert not (tmp_path / ".torch_stage").exists()  # the hand-over files go with the child


def test_a_failed_export_check_is_the_error_even_when_the_translation_fails_first(tmp_path, monkeypatch) -> None:
    """The child runs the exported file in onnxruntime against PyTorch while TF already translates it: when the
    translation fails before that check is in, the check's own error is reported (the cause), not TF's."""
    from converter import api
    from converter._convert import tensorflow
    from converter.errors import ConverterError, TensorFlowConversionError
    from converter.options import ConvertOptions

    def refuse(*args, **kwargs):
        raise TensorFlowConversionError("onnx2tf cannot build this graph", "-")

    monkeypatch.setattr(tensorflow, "onnx_to_keras", refuse)
    with pytest.raises(ConverterError, match="the exported ONNX graph disagrees with PyTorch"):
        api.convert("tests.toy_models:drifting", out_dir=tmp_path / "out", input_shapes=[(1, 4)],
                    options=ConvertOptions(parity_samples=8, precisions=("fp32",)), isolate=True)
    assert not (tmp_path / "out").exists()
