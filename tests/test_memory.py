"""Memory handed back between stages (:mod:`converter._convert.memory`): the heap glibc keeps after a stage goes back to
the OS, and the TFLite files are converted with no Keras model alive when none of them needs it."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import converter
from tests.conftest import ROOT


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_give_back_returns_the_freed_heap_to_the_os() -> None:
    """300 MB in 4 KiB blocks, every other one freed (a fragmented heap glibc keeps), then the rest freed: the RSS
    stays up until ``give_back`` trims it."""
    script = textwrap.dedent("""
        import gc
        from converter._convert import memory

        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

        gc.disable()
        blocks = [bytearray(4096) for _ in range(75_000)]
        keep = blocks[-1:]  # a live block at the top of the heap: glibc cannot shrink it from the end
        del blocks
        before = rss()
        memory.give_back()
        print(before, rss())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert before - after > 150, (before, after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_rewriting_a_graph_read_from_a_file_leaves_one_copy_of_its_weights() -> None:
    """A 64 MiB weight the rewrites replace (a scale folded into it, the scale itself folded from two constants,
    beside an initializer nothing reads): once ``prepare_for_onnx2tf`` returns, the process holds the rewritten
    graph and nothing of the one it was given. protobuf keeps every replaced or re-appended message in the
    graph's arena until the whole graph is freed, so the edited graph must be freed, not kept, and no node of it
    held in a reference cycle (onnx's ReferenceEvaluator keeps what it is given in one)."""
    script = textwrap.dedent("""
        import numpy as np
        import onnx
        import onnx.reference  # imported before the baseline: the fold's evaluator
        from onnx import TensorProto, helper, numpy_helper
        from converter._convert import memory, rewrites

        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

        n = 4096
        inits = [numpy_helper.from_array(np.full((n, n), 0.5, np.float32), "w"),
                 numpy_helper.from_array(np.float32(0.25), "a"), numpy_helper.from_array(np.float32(0.25), "b"),
                 numpy_helper.from_array(np.zeros(1024, np.float32), "unused")]
        nodes = [helper.make_node("Add", ["a", "b"], ["half"], name="/half"),
                 helper.make_node("Mul", ["x", "half"], ["h"], name="/scale"),
                 helper.make_node("MatMul", ["h", "w"], ["y"], name="/fc")]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
        data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        memory.give_back()
        before = rss()
        prepared = rewrites.prepare_for_onnx2tf(onnx.ModelProto.FromString(data), fast=True, in_place=True)
        memory.trim()
        print(rss() - before, ",".join(prepared.applied))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    grown, applied = out.split()
    assert "scale_into_matmul" in applied and "fold_constants" in applied
    assert 48 < float(grown) < 100, grown  # the rewritten 64 MiB weight, not also the one it replaced


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_dropping_dead_initializers_copies_none_of_the_others() -> None:
    """The rewrites drop unread initializers after each change: in place, since clearing the list and extending it
    with the kept ones copies each into the graph's arena (a 64 MiB weight, three times over)."""
    script = textwrap.dedent("""
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper
        from converter._convert import memory
        from converter._convert.rewrites.graph import _remove_dead

        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

        inits = [numpy_helper.from_array(np.full((4096, 4096), 0.5, np.float32), "w"),
                 numpy_helper.from_array(np.zeros(8, np.float32), "unused")]
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc"),
                 helper.make_node("Relu", ["x"], ["dead"], name="/dead")]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], inits)
        memory.give_back()
        before = rss()
        for _ in range(3):
            _remove_dead(graph)
            graph.initializer.append(numpy_helper.from_array(np.zeros(8, np.float32), "unused"))
        memory.trim()
        print(rss() - before, len(graph.node), [t.name for t in graph.initializer])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    grown, rest = out.split(maxsplit=1)
    assert rest.strip() == "1 ['w', 'unused']"
    assert float(grown) < 16, grown


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize(("precisions", "keep_float", "alive"), [
    (("fp32", "fp16"), (), False),
    (("fp32", "int8"), (), False),
    (("fp32", "int8"), ("auto",), True),  # selective int8 searches on the Keras graph: it must stay
])
def test_tflite_files_are_converted_without_the_keras_model(tmp_path, monkeypatch, precisions, keep_float,
                                                            alive) -> None:
    """Every TFLite file is read from the SavedModel, so the Keras model onnx2tf built (and its traced function) is
    released before the first conversion starts: no ``tf_keras`` Model is alive while the converter runs, unless
    selective int8 needs it."""
    from tf_keras import Model

    from converter._convert import tfexport

    seen: list[int] = []
    convert_tflite = tfexport.convert_tflite

    def counting(*args, **kwargs):
        gc.collect()
        seen.append(sum(isinstance(o, Model) for o in gc.get_objects()))
        return convert_tflite(*args, **kwargs)

    monkeypatch.setattr(tfexport, "convert_tflite", counting)
    torch.manual_seed(0)
    calibration = [np.random.default_rng(0).random((32, 3, 16, 16), np.float32)]
    result = converter.convert(_Small().eval(), torch.rand(1, 3, 16, 16), out_dir=tmp_path / "out",
                               precisions=precisions, parity_samples=16, calibration=calibration,
                               int8_keep_float=keep_float)
    assert result.parity.passed, result.parity.to_markdown()
    assert seen and all((n > 0) == alive for n in seen), seen


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_torchscript_row_reloads_its_file_without_holding_it_in_memory() -> None:
    """The TorchScript row saves and reloads the traced module through a file: its peak adds about one copy of the
    weights (the reloaded module's, 1.6x here), not the serialised buffer and load's copies of it too (5.2x: +0.4 GiB on
    convnext_tiny beside the TensorFlow process). And the reloaded module computes what the module does."""
    script = textwrap.dedent("""
        import numpy as np
        import torch
        from converter.parity.runtimes import torchscript_runner

        def status(field):  # MiB; VmHWM is this process image's peak (ru_maxrss keeps the forking parent's)
            line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
            return int(line.split()[1]) / 1024

        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 8)).eval()
        x = np.random.default_rng(0).standard_normal((2, 4096)).astype(np.float32)
        before = status("VmRSS")
        runner = torchscript_runner(module, [x], None)
        peak = status("VmHWM")
        with torch.no_grad():
            same = np.array_equal(runner.fn([x])[0], module(torch.from_numpy(x)).numpy())
        print(peak - before, same)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    added, same = out.split()
    weights_mb = 4096 * 4104 * 4 / 2**20  # 64 MB
    assert same == "True"
    assert float(added) < 2.5 * weights_mb, (added, weights_mb)  # through a buffer: 5.2x


def test_the_torchscript_copy_is_made_after_the_eager_reference(monkeypatch) -> None:
    """The PyTorch child runs eager on every sample before it traces and reloads the TorchScript file, so the
    reloaded copy of the weights is not held during the eager run (which overlaps the TF process's translation
    peak); both rows still come out, equal here."""
    from converter._convert import torchstage
    from converter._convert.sources import LoadedModel
    from converter.parity import runtimes
    from converter.parity.data import ParityData

    events: list[str] = []
    run_batched, torchscript_runner = runtimes.run_batched, runtimes.torchscript_runner
    monkeypatch.setattr(runtimes, "run_batched", lambda r, xs, c: events.append(f"run {r.runtime}") or
                        run_batched(r, xs, c))
    monkeypatch.setattr(runtimes, "torchscript_runner", lambda *a: events.append("trace") or torchscript_runner(*a))
    torch.manual_seed(0)
    data = ParityData([np.random.default_rng(0).random((5, 3, 8, 8), np.float32)], None, "random")
    model = LoadedModel(name="small", kind="callable", module=_Small().eval())
    outputs = torchstage._torch_outputs(model, data, [data.inputs[0][:1]], (4,), None)
    assert events == ["run pytorch", "trace", "run torchscript"], events
    assert np.allclose(outputs["pytorch"][4][0], outputs["torchscript"][4][0], atol=1e-6)


@pytest.mark.parametrize("release", [False, True], ids=["kept", "released"])
def test_the_child_drops_the_module_before_the_torchscript_row(release: bool) -> None:
    """With ``release`` (the PyTorch child, which ends after the hand-over) nothing holds the module once the
    TorchScript file is reloaded, so its weights are freed before that row runs beside the TF process's
    translation; without it (an in-process conversion of the user's live module) the module is left alone."""
    import weakref

    from converter._convert import torchstage
    from converter._convert.sources import LoadedModel
    from converter.parity import runtimes
    from converter.parity.data import ParityData

    torch.manual_seed(0)
    data = ParityData([np.random.default_rng(0).random((5, 3, 8, 8), np.float32)], None, "random")
    model = LoadedModel(name="small", kind="callable", module=_Small().eval())
    alive = weakref.ref(model.module)
    seen: list[bool] = []  # is the module alive when the TorchScript row runs?
    run_batched = runtimes.run_batched

    def watch(runner, xs, chunk):
        if runner.runtime == "torchscript":
            seen.append(alive() is not None)
        return run_batched(runner, xs, chunk)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtimes, "run_batched", watch)
        outputs = torchstage._torch_outputs(model, data, [data.inputs[0][:1]], (4,), None, release)
    assert seen == [not release]
    assert (model.module is None) == release
    assert np.allclose(outputs["pytorch"][4][0], outputs["torchscript"][4][0], atol=1e-6)


@pytest.mark.parametrize(("heavy_bytes", "waits"), [(0, True), (2**40, False)], ids=["heavy", "light"])
def test_the_first_tflite_conversion_waits_for_the_reference_when_the_weights_are_heavy(tmp_path, monkeypatch,
                                                                                        heavy_bytes, waits) -> None:
    """From ``HEAVY_TFLITE_BYTES`` of SavedModel on, the TFLite conversion (the TF process's heaviest stage) starts
    only once the PyTorch child's reference is done (``reference_done`` returned), so the two never hold their peaks
    side by side; under it the build never waits. The wait is timed in the manifest's stage times."""
    import onnx

    from converter._convert import artifacts, tfexport
    from converter._convert.side import TorchSide
    from converter.options import ConvertOptions
    from converter.parity.data import ParityData

    x = torch.rand(1, 3, 16, 16)
    torch.onnx.export(_Small().eval(), (x,), str(tmp_path / "model.onnx"), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    assert onnx.load(str(tmp_path / "model.onnx")).graph.node
    events: list[str] = []
    convert_tflite = tfexport.convert_tflite

    def converting(*args, **kwargs):
        events.append("tflite")
        return convert_tflite(*args, **kwargs)

    def reference_done() -> None:
        events.append("reference")

    monkeypatch.setattr(tfexport, "convert_tflite", converting)
    monkeypatch.setattr(artifacts, "HEAVY_TFLITE_BYTES", heavy_bytes)
    side = TorchSide("onnx", ["x"], ["y"], [(1, 3, 16, 16)], ["float32"],
                     ParityData([np.random.default_rng(0).random((4, 3, 16, 16), np.float32)], None, "noise", False),
                     source={"name": "model.onnx", "kind": "onnx", "spec": str(tmp_path / "model.onnx")})
    timings: dict[str, float] = {}
    manifest = artifacts.build_tf(side, tmp_path, ConvertOptions(precisions=("fp32", "fp16")), None, timings,
                                  reference_done=reference_done)
    assert events == (["reference", "tflite"] if waits else ["tflite"]), events
    assert ("pytorch_reference_wait_before_tflite" in timings) == waits
    assert {"tflite_fp32", "tflite_fp16"} <= set(manifest.artifacts)
