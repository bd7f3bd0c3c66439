"""The PyTorch side of a conversion: load, export to ONNX, and compute the PyTorch rows of the report.

It runs in-process for API callers that hand over a live ``nn.Module``, and in a child process for the
CLI (:func:`start_isolated`; the command starts that child before anything else, :mod:`converter._convert.torchchild`):
the child imports torch, then takes its request and writes ``model.onnx`` with everything the TF build needs (names,
shapes, dtypes, the parity data: the *exported* side). The parent, which imported TensorFlow meanwhile, builds the TF
artifacts from that while the child computes the PyTorch reference outputs on one core (:meth:`IsolatedStage.exported`,
then :meth:`IsolatedStage.result` before parity). The two frameworks never share a process's memory or thread
pools. ``.onnx`` sources need no torch at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from converter._convert import export, memory
from converter._convert.manifest import Manifest
from converter._convert.side import GraphFacts, TorchSide, take
from converter._convert import torchchild as child
from converter.errors import ConverterError, ExportError, InputError, first_line
from converter.options import ConvertOptions
from converter.parity.data import ParityData, load_parity_data
from converter._convert.sources import LoadedModel

_STAGE_FILE = ".torch_stage"
#: The child's early hand-over (``exported.json`` / ``.npz``: the side without reference outputs); ``side.*`` is
#: the whole one
_EXPORTED, _WHOLE = "exported", "side"
#: The child's onnxruntime outputs on the sample, once they matched PyTorch's (``checked.json`` / ``.npz``)
_CHECKED = "checked"


def run(model: LoadedModel, out: Path, options: ConvertOptions, input_shapes, parity_data,
        *, export_onnx: bool = True, on_exported: Callable[[TorchSide], None] | None = None,
        on_checked: Callable[[TorchSide], None] | None = None, release_module: bool = False) -> TorchSide:
    """Export ``model`` into ``out/model.onnx`` (unless ``export_onnx`` is False, for ``--check``) and
    compute its PyTorch outputs on the parity data. ``on_exported`` gets the side as soon as ``model.onnx`` is
    written and passed ``check_onnx``, before onnxruntime ran it and before any reference output exists (the child
    hands it to the parent there: 0.3 s sooner on convnext_tiny); ``on_checked`` once its ``onnx_outputs`` matched
    PyTorch's (the parent awaits them after its translation). ``release_module``
    (the child, which ends after this): ``model.module`` is dropped once the TorchScript row's reloaded copy
    exists, so the last row runs beside one copy of the weights, not two."""
    shapes, dtypes = export.resolve_inputs(model, input_shapes, None if export_onnx else out / "model.onnx",
                                           options.input_dtypes)
    _check_ranges(options.input_ranges, dtypes)
    if model.module is not None:  # a wrong --input-shape/--input-dtype/--input-range is the model's complaint
        export.probe_outputs(model.module, _extreme_inputs(shapes, dtypes, options.input_ranges),
                             export.describe_inputs(shapes, dtypes))
    data = parity_data if isinstance(parity_data, ParityData) else load_parity_data(
        parity_data, shapes, dtypes, options.parity_samples, options.seed, options.input_ranges,
        _input_names(model, options, len(shapes), out, export_onnx)
        if str(parity_data).endswith(".npz") or parity_data == "random" else ())
    sample = [take(x, shapes[0][0]) for x in data.inputs]
    exported: dict = {}  # how model.onnx was written (the exporter), for the manifest's source
    facts = None
    if export_onnx:
        in_names, out_names, exported, facts = export.export_model(model, out, options, shapes, sample)
    else:
        manifest = Manifest.read(out)
        in_names = [i.name for i in manifest.inputs]
        out_names = [o.name for o in manifest.outputs]
    side = TorchSide(model.kind, in_names, out_names, [tuple(s) for s in shapes], [str(np.dtype(d)) for d in dtypes],
                     data, reference_name=model.reference_name,
                     source={"name": model.name, "kind": model.kind, "spec": model.spec, "weights": model.weights,
                             **exported}, graph=facts)
    if on_exported is not None:
        on_exported(side)
    if facts is not None:
        side.onnx_outputs = export.check_in_onnxruntime(model.module, out / "model.onnx", sample)
        if on_checked is not None:
            on_checked(side)
    if on_exported is not None:
        memory.give_back()  # the export's garbage, before the reference outputs (RSS beside the parent's peak)
    if model.module is not None and options.parity and model.reference_name == "mnist_cnn":
        side.keras_state = {k: v.detach().cpu().numpy() for k, v in model.module.state_dict().items()}
    if options.dynamic_dims:
        _second_size(side, model, options, shapes, dtypes)
    if model.module is not None and options.parity:  # last: with release_module, the module goes during it
        # an ExportedProgram is specialised to the batch it was exported at: feed it exactly that
        fixed = shapes[0][0] if model.kind == "exported_program" else None
        side.outputs = _torch_outputs(model, data, sample, side.chunks(options.dynamic_batch), fixed, release_module)
    return side


def _check_ranges(ranges: tuple[tuple[int, int], ...], dtypes) -> None:
    """``--input-range`` is positional: a range (other than a 0,1 or 0,2 placeholder) that falls on a float or bool
    input was meant for an integer input further on, and would silently leave that one at 0,2."""
    for k, ((low, high), dtype) in enumerate(zip(ranges, dtypes)):
        if not np.issubdtype(np.dtype(dtype), np.integer) and (low, high) not in ((0, 1), (0, 2)):
            raise InputError(f"--input-range {low},{high} (#{k + 1}) falls on input #{k + 1}, which is "
                             f"{np.dtype(dtype)}: ranges are given in input order and only integer inputs take one",
                             "give one --input-range per input in order, 0,1 for a float input (e.g. --input-range 0,1 "
                             "--input-range 0,50 for an image then token ids)")


#: Parity samples at the second size of the dynamic dimensions
SECOND_SIZE_SAMPLES = 32


def _cut(data: ParityData, shapes: list[tuple[int, ...]], samples: int) -> ParityData | None:
    """The first ``samples`` of the user's ``data``, each input cut to ``shapes`` (past the batch axis); None for
    seeded noise or where a shape does not fit inside the data."""
    if not data.real or any(len(x.shape) != len(s) or any(d > have for d, have in zip(s[1:], x.shape[1:]))
                            for x, s in zip(data.inputs, shapes)):
        return None
    cut = [np.ascontiguousarray(x[(slice(0, samples), *(slice(0, d) for d in s[1:]))])
           for x, s in zip(data.inputs, shapes)]
    return ParityData(cut, None, f"{data.description}, cut to the second size")


def _second_size(side: TorchSide, model: LoadedModel, options: ConvertOptions, shapes, dtypes) -> None:
    """``side.resized``: parity data with every dynamic dimension at its second size, and the PyTorch outputs on it;
    a model that rejects that size says so in one line. The user's own data is cut to that size (a padded batch of
    token ids stays a padded batch: seeded noise would mask whole rows of attention, whose outputs are garbage in
    every runtime); seeded random data otherwise, or where the second size is larger than the data."""
    from converter._convert.dims import resolve
    from converter.parity import runtimes

    dims = resolve(options.dynamic_dims, side.input_names, shapes)
    side.dynamic_dims = dims.describe()
    resized = dims.resized(shapes)
    samples = min(options.parity_samples, SECOND_SIZE_SAMPLES)
    side.resized = _cut(side.data, resized, samples) or load_parity_data(
        "random", resized, dtypes, samples, options.seed + 1, options.input_ranges, side.input_names)
    if model.module is None or not options.parity:
        return
    try:
        side.resized_outputs["pytorch"] = runtimes.run_batched(runtimes.torch_runner(model.module),
                                                               side.resized.inputs, side.chunks(False)[0])
    except Exception as exc:
        raise InputError(f"the model rejects its dynamic dimensions at their second size ({dims.describe()}): "
                         f"{first_line(exc)}", "drop --dynamic-dim for a dimension the model fixes") from None


def _input_names(model: LoadedModel, options: ConvertOptions, count: int, out: Path, export_onnx: bool) -> list[str]:
    """The names the artifacts give the inputs (as :func:`export.export_model` decides them, or as ``--check``'s
    manifest recorded them), known before the export: an ``.npz`` of parity data is keyed by them."""
    if not export_onnx:
        return [i.name for i in Manifest.read(out).inputs]
    if model.kind == "onnx" and not options.input_names:
        return export.graph_input_names(export.check_onnx(model.onnx_path))
    return export.io_names(options.input_names, count, "input")


def _extreme_inputs(shapes, dtypes, ranges) -> list[np.ndarray]:
    """Zeros, except integer inputs with an ``--input-range``: its largest value (HIGH - 1), so a range beyond an
    embedding table is refused here, in one line, before any parity data is drawn from it."""
    arrays = []
    for k, (shape, dtype) in enumerate(zip(shapes, dtypes)):
        top = ranges[k][1] - 1 if k < len(ranges) and np.issubdtype(dtype, np.integer) else 0
        arrays.append(np.full(shape, top, dtype))
    return arrays


def _torch_outputs(model: LoadedModel, data: ParityData, sample, chunks, fixed: int | None, release: bool = False
                   ) -> dict[str, dict[int, list[np.ndarray]]]:
    from converter.parity import runtimes

    eager = runtimes.torch_runner(model.module, batch=fixed)
    outputs = {r.runtime: {c: runtimes.run_batched(r, data.inputs, c) for c in chunks} for r in (eager,)}
    # traced and reloaded only now: its copy of the weights is not held while eager runs, beside the TF process's
    # translation (0.11 GiB on convnext_tiny)
    scripted = runtimes.torchscript_runner(model.module, sample, fixed)
    if release:  # from here the reloaded file's weights are the only ones used (convnext_tiny: 110 MB fewer)
        eager = model.module = None
        memory.give_back()
    try:
        outputs[scripted.runtime] = {c: runtimes.run_batched(scripted, data.inputs, c) for c in chunks}
    except Exception:
        # a trace can bake the sample's batch into the graph (a Hugging Face causal mask indexes by it): feed the
        # TorchScript file at the batch it was traced at, as the ONNX and TF artifacts are fed at theirs
        traced = replace(scripted, batch=len(sample[0]))
        outputs[scripted.runtime] = {c: runtimes.run_batched(traced, data.inputs, c) for c in chunks}
    return outputs


@dataclass
class Done:
    """A PyTorch stage that ran in this process: the same face as :class:`IsolatedStage`."""

    side: TorchSide

    def exported(self) -> TorchSide:
        return self.side

    def onnx_outputs(self) -> list[np.ndarray] | None:
        return self.side.onnx_outputs

    def result(self) -> TorchSide:
        return self.side

    @property
    def done(self) -> threading.Event:
        """Set: the reference outputs exist (they were computed in this process)."""
        event = threading.Event()
        event.set()
        return event

    def cancel(self) -> None:
        pass


# ----------------------------------------------------------------------------------------- child process

class IsolatedStage:
    """A running PyTorch child (:func:`start_isolated`): :meth:`exported` waits for ``model.onnx``, :meth:`result`
    for the whole side and the child's exit.

    The CLI imports TensorFlow while the child exports: the two imports are the largest fixed costs of a
    conversion and overlap on two cores. Then the parent translates the ONNX graph while the child computes the
    reference outputs (one thread: eager and TorchScript on every parity sample, seconds on a large model).
    """

    #: How often :meth:`exported` looks for the child's hand-over file
    POLL_S = 0.01

    def __init__(self, stage: Path, spawned: child.Child) -> None:
        self.stage, self.spawned = stage, spawned
        self._whole: TorchSide | None = None
        self._failure: ConverterError | None = None
        #: set when the child has ended (the reference computed, or an error): parity's other rows wait for it
        self.done = threading.Event()
        threading.Thread(target=lambda: (spawned.proc.wait(), self.done.set()), daemon=True).start()

    def exported(self) -> TorchSide:
        """The side as soon as ``model.onnx`` is written (no onnxruntime or reference outputs yet); the whole
        :meth:`result` when the child ended first (an error, or nothing left to compute)."""
        if not self._await(_EXPORTED):
            return self.result()
        return _read_side(self.stage, _EXPORTED)

    def onnx_outputs(self) -> list[np.ndarray] | None:
        """onnxruntime's outputs of the exported ``model.onnx`` on the sample, once the child has checked them against
        PyTorch's (its ExportError, should they disagree); None when it did not export the file."""
        if not self._await(_CHECKED):
            return self.result().onnx_outputs
        count = json.loads((self.stage / f"{_CHECKED}.json").read_text())["onnx_outputs"]
        with np.load(self.stage / f"{_CHECKED}.npz", allow_pickle=False) as z:
            return [z[f"onnx_out/{i}"] for i in range(count)]

    def _await(self, name: str) -> bool:
        """Whether the child wrote ``name.json``; False once it ended without it."""
        while not (self.stage / f"{name}.json").is_file():
            if self.spawned.proc.poll() is not None:
                return (self.stage / f"{name}.json").is_file()  # written just before the exit
            time.sleep(self.POLL_S)
        return True

    def result(self) -> TorchSide:
        """The whole side (the reference outputs too), once the child has ended; its error, if it failed."""
        if self._failure is not None:  # asked again (the error path awaits the child's own error): the same answer
            raise self._failure
        if self._whole is None:
            try:
                self._whole = self._collect()
            except ConverterError as exc:
                self._failure = exc
                raise
        return self._whole

    def _collect(self) -> TorchSide:
        try:
            returncode = self.spawned.wait()
            if returncode != 0:
                message = _read_error(self.stage / "error.json")
                if message is not None:
                    raise ConverterError(message)
                tail = self.spawned.last_line() or "(no output)"
                raise ExportError(f"the PyTorch stage crashed (exit {returncode}): {tail[:200]}",
                                  "rerun with --verbose; check the model runs on CPU")
            if not (self.stage / f"{_WHOLE}.json").is_file():  # e.g. the model's code called sys.exit(0)
                raise ExportError(f"the PyTorch stage exited without a result: {self.spawned.last_line() or '(no output)'}",
                                  "check the model's factory and forward() do not exit the process")
            return _read_side(self.stage, _WHOLE)
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop the child if it still runs (an error or Ctrl-C in the parent) and remove its files."""
        import shutil

        self.spawned.close()
        shutil.rmtree(self.stage, ignore_errors=True)


def start_isolated(spec: str, weights: str | None, out: Path, options: ConvertOptions, input_shapes,
                   parity_data: str, *, export_onnx: bool = True, import_cwd: bool = True) -> IsolatedStage:
    """Run :func:`run` in a child process (the prestarted one, else a new one); its ConverterError comes back
    from ``result()`` as the same one-line error."""
    request = {"spec": spec, "weights": weights, "out": str(out), "options": options.to_json(),
               "input_shapes": input_shapes, "parity_data": parity_data, "export_onnx": export_onnx}
    stage = out / _STAGE_FILE
    stage.mkdir(exist_ok=True)
    (stage / "request.json").write_text(json.dumps(request))
    spawned = child.take(import_cwd)
    try:
        spawned.proc.stdin.write(f"{stage}\n".encode())
        spawned.proc.stdin.close()
    except BrokenPipeError:  # it died importing torch: result() reports its stderr
        pass
    return IsolatedStage(stage, spawned)


def _read_error(path: Path) -> str | None:
    """The child's one-line error, if it managed to write it whole (a full disk can leave the file empty)."""
    try:
        return str(json.loads(path.read_text())["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_side(stage: Path, side: TorchSide, name: str) -> None:
    """``name.npz`` then ``name.json``: the JSON file's presence says both are whole."""
    arrays: dict[str, np.ndarray] = {}
    for i, x in enumerate(side.data.inputs):
        arrays[f"input/{i}"] = x
    if side.data.labels is not None:
        arrays["labels"] = side.data.labels
    for runtime, by_chunk in side.outputs.items():
        for chunk, outs in by_chunk.items():
            for i, o in enumerate(outs):
                arrays[f"out/{runtime}/{chunk}/{i}"] = o
    for k, v in (side.keras_state or {}).items():
        arrays[f"keras/{k}"] = v
    arrays.update({f"onnx_out/{i}": o for i, o in enumerate(side.onnx_outputs or [])})
    if side.resized is not None:
        arrays.update({f"resized/{i}": x for i, x in enumerate(side.resized.inputs)})
        for runtime, outs in side.resized_outputs.items():
            arrays.update({f"resized_out/{runtime}/{i}": o for i, o in enumerate(outs)})
    np.savez(stage / f"{name}.npz", **arrays)
    meta = {"kind": side.kind, "input_names": side.input_names, "output_names": side.output_names,
            "shapes": side.shapes, "dtypes": side.dtypes, "description": side.data.description,
            "real": side.data.real, "reference_name": side.reference_name,
            "has_keras": side.keras_state is not None, "source": side.source, "dynamic_dims": side.dynamic_dims,
            "resized": None if side.resized is None else side.resized.description,
            "onnx_outputs": None if side.onnx_outputs is None else len(side.onnx_outputs),
            "graph": None if side.graph is None else side.graph.to_json()}
    _publish(stage, name, meta)


def _write_checked(stage: Path, side: TorchSide) -> None:
    """``checked.npz`` then ``checked.json``: onnxruntime's outputs on the sample, once they matched PyTorch's."""
    np.savez(stage / f"{_CHECKED}.npz", **{f"onnx_out/{i}": o for i, o in enumerate(side.onnx_outputs)})
    _publish(stage, _CHECKED, {"onnx_outputs": len(side.onnx_outputs)})


def _publish(stage: Path, name: str, meta: dict) -> None:
    """``name.json``, written last: its presence says ``name.npz`` is whole (the parent polls for it)."""
    (stage / f"{name}.json.tmp").write_text(json.dumps(meta))
    os.replace(stage / f"{name}.json.tmp", stage / f"{name}.json")


def _read_side(stage: Path, name: str) -> TorchSide:
    meta = json.loads((stage / f"{name}.json").read_text())
    with np.load(stage / f"{name}.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    inputs = [arrays[f"input/{i}"] for i in range(len(meta["shapes"]))]
    data = ParityData(inputs, arrays.get("labels"), meta["description"], meta["real"])
    outputs: dict[str, dict[int, list[np.ndarray]]] = {}
    for key in sorted(k for k in arrays if k.startswith("out/")):
        _, runtime, chunk, index = key.split("/")
        outputs.setdefault(runtime, {}).setdefault(int(chunk), []).append((int(index), arrays[key]))
    outputs = {r: {c: [a for _, a in sorted(v)] for c, v in by.items()} for r, by in outputs.items()}
    keras = {k[len("keras/"):]: v for k, v in arrays.items() if k.startswith("keras/")} if meta["has_keras"] else None
    side = TorchSide(meta["kind"], meta["input_names"], meta["output_names"], [tuple(s) for s in meta["shapes"]],
                     meta["dtypes"], data, outputs, keras, meta["reference_name"], meta["source"],
                     dynamic_dims=meta.get("dynamic_dims", ""),
                     graph=None if meta.get("graph") is None else GraphFacts.from_json(meta["graph"]),
                     onnx_outputs=None if meta.get("onnx_outputs") is None
                     else [arrays[f"onnx_out/{i}"] for i in range(meta["onnx_outputs"])])
    if meta.get("resized") is not None:
        side.resized = ParityData([arrays[f"resized/{i}"] for i in range(len(meta["shapes"]))], None,
                                  meta["resized"], False)
        for key in sorted(k for k in arrays if k.startswith("resized_out/")):
            _, runtime, index = key.split("/")
            side.resized_outputs.setdefault(runtime, []).append((int(index), arrays[key]))
        side.resized_outputs = {r: [a for _, a in sorted(v)] for r, v in side.resized_outputs.items()}
    return side


def _child() -> int:
    from converter._proc.children import die_with_parent
    from converter._convert.quiet import gc_paused, quiet_tensorflow
    from converter._convert.sources import load_model

    die_with_parent()
    with gc_paused():  # the child's CPU is the parent's TF import's competition on 2 cores
        import torch
        import torch.onnx  # noqa: F401
    line = sys.stdin.readline().strip()  # the stage directory, once the parent has written the request
    if not line:
        return 3  # the parent gave up before the PyTorch stage (or died): nothing to do
    stage = Path(line)
    request = json.loads((stage / "request.json").read_text())
    options = ConvertOptions.from_json(request["options"])
    quiet_tensorflow(options.verbose)

    # the parent imports TensorFlow meanwhile (single-threaded): leave it a core (2 cores: TF import 3.6 -> 3.2 s)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    try:
        model = load_model(request["spec"], request["weights"], allow_pickle=options.allow_pickle)
        shapes = [tuple(s) for s in request["input_shapes"]] if request["input_shapes"] else None
        side = run(model, Path(request["out"]), options, shapes, request["parity_data"],
                   export_onnx=request["export_onnx"], on_exported=lambda early: _write_side(stage, early, _EXPORTED),
                   on_checked=lambda checked: _write_checked(stage, checked), release_module=True)
        _write_side(stage, side, _WHOLE)
    except ConverterError as exc:
        print(exc, file=sys.stderr, flush=True)  # the parent's fallback if the file below cannot be written
        (stage / "error.json").write_text(json.dumps({"message": str(exc)}))
        return 2
    return 0


if __name__ == "__main__":
    from converter._convert.quiet import exit_without_teardown

    # torch's teardown takes ~0.33 s after the last file is written: the parent waits for this process to end
    # before parity (and before anything at all with export_onnx=False or parity off on a fast TF build)
    exit_without_teardown(_child())
