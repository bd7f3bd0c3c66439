"""``convert``: PyTorch (or ONNX) -> ONNX -> SavedModel + TFLite, then parity across every runtime.

Everything is written into a temporary directory beside ``out_dir`` and moved into place only when
complete, so an error or Ctrl-C never leaves a half-written output directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converter._convert import artifacts, interrupts, live, outdir, torchchild, torchstage
from converter.parity import run as checks
from converter.parity.offprocess import ChildRows
from converter.errors import EXIT_OK, EXIT_PARITY_FAILED, ArtifactsChanged, ConverterError, InputError, first_line
from converter.options import ConvertOptions
from converter.runtime import Runtime, load_runtime
from converter.parity.judge import ParityReport
from converter.parity.data import ParityData, load_calibration
from converter._convert.manifest import Manifest
from converter._convert.progress import Reporter, reporting, stage
from converter._convert.sources import LoadedModel, load_model, refuse_python_file, require_weights_file
from converter._convert.tensorflow import preload as preload_tensorflow


@dataclass
class ConversionResult:
    out_dir: Path
    manifest: Manifest
    parity: ParityReport | None
    #: what the caller should know that is not an error (e.g. full int8 skipped for want of real data)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.parity is None or self.parity.passed else EXIT_PARITY_FAILED

    def runtime(self, name: str) -> Runtime:
        """One artifact as a callable: ``result.runtime("tflite_fp32")(*inputs)`` takes the model's inputs (tensors or
        arrays, PyTorch layout, positionally or by input name) and returns NumPy outputs in the PyTorch layout (one
        array, or a tuple in the model's output order). Names: ``onnxruntime``, ``saved_model``, ``tflite_fp32``,
        ``tflite_fp16``, ``tflite_dynamic_int8``, ``tflite_int8`` (those this conversion built)."""
        return load_runtime(self.out_dir, name)


def convert(
    model: Any,
    sample_inputs: Any = None,
    *,
    out_dir: str | Path,
    options: ConvertOptions | None = None,
    weights: str | Path | None = None,
    input_shapes: list[tuple[int, ...]] | None = None,
    parity_data: str | ParityData = "random",
    calibration: list[np.ndarray] | str | Path | None = None,
    force: bool = False,
    isolate: bool = False,
    progress: bool | Reporter = False,
    **option_fields: Any,
) -> ConversionResult:
    """Convert ``model`` into ``out_dir`` (SavedModel, TFLite, ONNX) and, unless ``parity=False``, check parity.

    ``model``: a live ``nn.Module``, a TorchScript module, an ``ExportedProgram``, an ``.onnx`` path, or a source
    spec (``mnist_cnn``, ``mypkg.nets:build``, a model file; what the ``convert`` command takes).
    ``sample_inputs``: as ``torch.onnx.export`` takes them: a tensor, a tuple of tensors (positional arguments) or a
    dict of keyword tensors, of any dtype (float32/16, int32/64, bool); input shapes, dtypes and names (a dict's
    keys) come from them, and integer inputs draw their random parity data from a range their name and the sample
    imply (a 0/1 ``*mask``: padding masks; a Hugging Face model's ``input_ids``: its whole vocabulary; otherwise the
    sample's [min, max + 1); :meth:`converter._convert.live.Samples.ranges`) unless ``input_ranges`` says
    otherwise. Without them: ``input_shapes`` and ``input_dtypes``, or the source's defaults.
    ``options``: a :class:`ConvertOptions`; any of its fields may also be passed as a keyword
    (``precisions=("fp32", "fp16")``, ``dynamic_batch=True``, ``atol=1e-5``), overriding ``options``.
    ``calibration``: full-int8 representative inputs, one PyTorch-layout array per input, or an ``.npy`` path.
    ``isolate=True`` with a spec: the PyTorch side runs in a child process, never beside TensorFlow, and computes
    the reference outputs while this process builds the TF artifacts (what the CLI does). ``progress=True``: say on
    stderr which stage runs and for how long (the command's default; :mod:`converter._convert.progress`).

    Returns a :class:`ConversionResult`: ``result.parity`` (``raise_if_failed()``, ``to_markdown()``,
    ``to_json()``), ``result.runtime("tflite_fp32")`` (call it like the model; NumPy outputs in the PyTorch layout).
    Raises :class:`converter.errors.ConverterError` (exit code 2) for bad input or a failed conversion; a parity
    failure is *not* an exception: the artifacts are kept and ``result.exit_code`` is 1. A live module is left in
    the train/eval mode it came in.
    """
    live.reject_weights_for_live(model, weights)
    require_weights_file(weights)
    refuse_python_file(model)
    out_dir, parity_data = _paths(out_dir, parity_data, "out_dir='out/model'")
    if isinstance(calibration, os.PathLike):
        calibration = str(calibration)
    with live.modes_kept(model):
        return _convert(model, sample_inputs, out_dir, options, weights, input_shapes, parity_data, calibration, force,
                        isolate, progress, option_fields)


def _convert(model: Any, sample_inputs: Any, out_dir: Path, options: ConvertOptions | None, weights, input_shapes,
             parity_data: str | ParityData, calibration, force: bool, isolate: bool, progress: bool | Reporter,
             option_fields: dict[str, Any]) -> ConversionResult:
    """:func:`convert` once its arguments are checked."""
    options = _with_fields(options or ConvertOptions(), option_fields)
    model = live.as_source(model)
    if sample_inputs is not None:
        if input_shapes is not None:
            raise InputError("both sample_inputs and input_shapes were given",
                             "pass sample_inputs only: shapes and dtypes come from them")
        model, options = live.with_samples(model, live.samples_of(sample_inputs), options,
                                           allow_pickle=options.allow_pickle, weights=weights,
                                           random_data=isinstance(parity_data, str) and parity_data == "random")
        input_shapes, weights = list(model.default_input_shapes), None
    calibration_file = calibration if isinstance(calibration, str | Path) else None
    out_dir = _checked_out_dir(out_dir, force, model, weights, parity_data, calibration_file)
    if calibration_file is not None:
        calibration = [load_calibration(calibration_file)]
    notes = []
    real = calibration is not None or (parity_data.real if isinstance(parity_data, ParityData) else parity_data != "random")
    if options.precisions is None and not real and "tflite" in options.targets:
        notes.append("full int8 skipped — no real calibration data; pass --calibration-data FILE.npy (calibration= "
                     "in the API) or real --parity-data to build model_int8.tflite")
    options = options.with_default_precisions(real).with_default_samples(_is_reference_net(model))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    tmp = _outdir_call(outdir.make_staging, out_dir)
    if not options.parity and (calibration is not None or "int8" not in options.tflite_precisions):
        # parity off and nothing to calibrate: one seeded sample is all the export needs
        parity_data, options = "random", _replace(options, parity_samples=1)
    reporter = progress if isinstance(progress, Reporter) else Reporter() if progress else None
    try:
        with reporting(reporter):
            manifest, report = _build(model, weights, tmp, options, input_shapes, parity_data, calibration, isolate,
                                      timings, start)
        _outdir_call(outdir.move_into_place, tmp, out_dir, force=force, owned=is_conversion, what="manifest.json")
    except BaseException as exc:  # includes KeyboardInterrupt: never leave partial output
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(exc, KeyboardInterrupt) and outdir.disk_full(exc):
            raise InputError(f"the disk is full while writing beside {out_dir}",
                             "free some space or choose an --out on another disk") from None
        raise
    return ConversionResult(out_dir, manifest, report, notes)


def _paths(out_dir: Any, parity_data: Any, example: str) -> tuple[Path, str | ParityData]:
    """``out_dir`` and ``parity_data`` as the pipeline takes them; a module or tensor in their place is a one-line
    :class:`InputError` (``example`` shows ``out_dir`` in the caller's call)."""
    out_dir = live.path_argument(out_dir, "out_dir", example)
    if not isinstance(parity_data, ParityData):
        parity_data = str(live.path_argument(parity_data, "parity_data", "parity_data='data.npz' (or 'random')"))
    return out_dir, parity_data


def _is_reference_net(model: LoadedModel | str | None) -> bool:
    """Whether ``model`` is the reference net (more parity samples by default: :meth:`ConvertOptions.with_default_samples`)."""
    return model == "mnist_cnn" or (isinstance(model, LoadedModel) and model.reference_name == "mnist_cnn")


def _build(model, weights, tmp: Path, options: ConvertOptions, input_shapes, parity_data, calibration, isolate: bool,
           timings: dict[str, float], start: float) -> tuple[Manifest, ParityReport | None]:
    """Everything :func:`convert` writes, into the staging directory ``tmp``: the stages in order."""
    stage("loading the model and exporting it to ONNX")
    pending = _torch_side(model, weights, tmp, options, input_shapes, parity_data, isolate, export_onnx=True)
    rows: ChildRows | None = None
    try:
        side = pending.exported()
        timings["pytorch_stage"] = time.perf_counter() - start
        # parity's onnxruntime and TFLite rows start in a child as each file is written (beside the TF build)
        rows = ChildRows(side.data.inputs, side.chunks(options.dynamic_batch), options.opset,
                         options.verbose, reference_done=pending.done) if options.parity else None
        try:
            manifest = artifacts.build_tf(side, tmp, options, calibration, timings, rows and rows.written,
                                          pending.onnx_outputs, pending.done.wait)
        except ConverterError:
            # the child checks the export in onnxruntime while TF translates it: when that check fails, its error
            # (the export disagrees with PyTorch, or onnxruntime cannot run it) is the cause, not what TF made of it
            pending.onnx_outputs()
            raise
        t = time.perf_counter()
        if options.parity:
            stage("parity: the PyTorch reference outputs (computed beside the TF build)")
        side = pending.result()  # the reference outputs, computed in the child while TF built the artifacts
        timings["pytorch_reference_wait"] = time.perf_counter() - t
    except BaseException:
        pending.cancel()
        if rows is not None:
            rows.close()
        raise
    report = None
    if rows is None and options.class_axes:
        checks.class_axes(manifest, options)  # a --class-axis naming no output is refused with parity off too
    if rows is not None:
        t = time.perf_counter()
        try:
            report = checks.run_parity(tmp, manifest, side, options, timings, rows)
        finally:
            rows.close()
        _diagnose(model, weights, tmp, manifest, side, report, options, calibration)
        report.write(tmp)
        timings["parity"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    manifest.timings_s = {k: round(v, 3) for k, v in timings.items()}
    artifacts.write_manifest(tmp, manifest)
    interrupts.checkpoint()  # an interrupt a library swallowed still means: nothing in --out
    return manifest, report


#: How to --check a model recorded in manifest.json whose module the child could not import
RECORDED_IMPORT_HINT = ("a module recorded in manifest.json is never imported from the current directory: name the "
                        "model (convert pkg.module:factory --out DIR --check), or run from another directory with "
                        "its project on PYTHONPATH")


def check(model: Any, out_dir: str | Path, options: ConvertOptions = ConvertOptions(),
          *, weights: str | Path | None = None, parity_data: str | ParityData = "random",
          isolate: bool = False) -> ConversionResult:
    """Re-run parity of ``model`` against the artifacts already in ``out_dir`` (CI after a model change).

    ``model=None`` re-loads the source recorded in the manifest. Rewrites ``parity.json``/``parity.md``
    atomically; the artifacts are not touched. A live module is left in the train/eval mode it came in.
    """
    out_dir, parity_data = _paths(out_dir, parity_data, "converter.check(model, 'out/model')")
    live.reject_weights_for_live(model, weights)
    with live.modes_kept(model):
        return _check(model, out_dir, options, weights, parity_data, isolate)


def _check(model: Any, out_dir: Path, options: ConvertOptions, weights, parity_data: str | ParityData,
           isolate: bool) -> ConversionResult:
    """:func:`check` once its arguments are checked."""
    model = None if model is None else live.as_source(model)
    manifest = read_manifest(out_dir)
    changed = artifacts.changed_files(out_dir, manifest)
    if changed:
        raise ArtifactsChanged(f"{', '.join(changed)} in {out_dir} changed since convert wrote them (sha256 differs "
                               "from manifest.json)", "restore the files, or convert again with --force")
    import_cwd = model is not None
    if model is None:
        model, weights = manifest.source.spec, manifest.source.weights
        print(f"convert: --check loads {_describe_source(model, weights)}, as recorded in {out_dir}/manifest.json",
              file=sys.stderr)
    options = _replace(options, dynamic_batch=manifest.dynamic_batch, opset=manifest.opset,
                       dynamic_dims=options.dynamic_dims or _recorded_dynamic_dims(manifest)
                       ).with_default_samples(_is_reference_net(model))
    shapes = [tuple(i.pytorch_shape) for i in manifest.onnx_inputs]
    # a recorded source is loaded in the child even for library callers: in-process it would import with the
    # caller's sys.path, which may hold the current directory
    try:
        side = _torch_side(model, weights, out_dir, options, shapes, parity_data, isolate or not import_cwd,
                           export_onnx=False, import_cwd=import_cwd).result()
    except ConverterError as exc:
        if import_cwd or not str(exc).startswith("cannot import "):
            raise
        # the child's hint ("run from its project root") is the one thing that cannot work here
        raise InputError(str(exc).split(" — ")[0], RECORDED_IMPORT_HINT) from None
    report = checks.run_parity(out_dir, manifest, side, options)
    _diagnose(model, weights, out_dir, manifest, side, report, options, None, import_cwd)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".check-"))
    try:
        report.write(staging)
        interrupts.checkpoint()
        for name in ("parity.json", "parity.md"):
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionResult(out_dir, manifest, report)


def _recorded_dynamic_dims(manifest: Manifest) -> tuple[tuple[str, int, str], ...]:
    """The dynamic dimensions past the batch that ``out_dir``'s artifacts take (None in a signature's shape), as
    ``dynamic_dims`` entries: ``--check`` runs parity at their two sizes again."""
    return tuple((i.name, i.perm_from_pytorch[k], "") for i in manifest.inputs for k, d in enumerate(i.shape)
                 if d is None and i.perm_from_pytorch[k] != 0)


def read_manifest(out_dir: Path) -> Manifest:
    """``out_dir/manifest.json``; a one-line error if it is missing or not one of ours."""
    path = out_dir / "manifest.json"
    if not path.is_file():
        raise InputError(f"{out_dir} has no manifest.json", "pass a directory written by convert --out")
    try:
        return Manifest.read(out_dir)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not a convert manifest ({first_line(exc, 120)})",
                         "pass a directory written by convert --out, or convert again") from None


def _describe_source(spec: str, weights: str | None) -> str:
    """What loading a recorded source runs, in words (``--check`` says it before it does it)."""
    if ":" in spec and not Path(spec).exists():
        module, _, attr = spec.partition(":")
        what = (f"Python code: imports {module} (from PYTHONPATH and installed packages, never from the current "
                f"directory, even when PYTHONPATH names it) and calls {attr}()")
    elif spec.endswith(".onnx"):
        what = f"the ONNX file {spec}"
    elif spec.endswith(".pt2"):
        what = f"the ExportedProgram {spec}"
    elif Path(spec).suffix or Path(spec).exists():
        what = f"the TorchScript file {spec}"
    else:
        what = f"the reference model {spec}"
    return what + (f" with weights {weights}" if weights else "")


def _torch_side(model, weights, out: Path, options, input_shapes, parity_data, isolate: bool,
                export_onnx: bool, import_cwd: bool = True) -> torchstage.IsolatedStage | torchstage.Done:
    """The PyTorch stage, running: in a child process for an isolated spec (its ``exported()`` side arrives
    before its ``result()``), else done in this process."""
    if isinstance(model, str):
        if isolate and not isinstance(parity_data, ParityData) and torchchild.has_torch_side(model):
            stage = torchstage.start_isolated(model, None if weights is None else str(weights), out, options,
                                              input_shapes, parity_data, export_onnx=export_onnx,
                                              import_cwd=import_cwd)
            try:
                # overlaps the child's torch import and export
                preload_tensorflow(options.verbose, options.tflite_precisions, options.parity)
            except BaseException:
                stage.cancel()
                raise
            return stage
        model = load_model(model, weights, allow_pickle=options.allow_pickle)
    return torchstage.Done(torchstage.run(model, out, options, input_shapes, parity_data, export_onnx=export_onnx))


def _diagnose(model, weights, out: Path, manifest: Manifest, side, report: ParityReport, options: ConvertOptions,
              calibration, import_cwd: bool = True) -> None:
    """On a parity failure (or ``--localise``) name the first PyTorch module where each runtime diverges.

    A source spec (the CLI's case; ``.onnx`` files too, for one code path) is localised in a child process that
    loads the model before TensorFlow: loading it here, beside TensorFlow, can segfault (``torch._dynamo``
    imports triton) and a crashed child only costs the diagnosis. A live module stays in-process."""
    if report.passed and not options.localise:
        return
    stage("localising " + ("every row" if options.localise else "the failing rows"))
    if isinstance(model, str):
        from converter.diagnosis.localisechild import localise_in_child

        localise_in_child(model, weights, out, manifest, side.data, report, options, calibration,
                          import_cwd=import_cwd)
        return
    from converter.diagnosis.localise import localise_failures

    localise_failures(model, out, manifest.layout, side.data, report, options, calibration=calibration,
                      every_row=options.localise)


def _with_fields(options: ConvertOptions, fields: dict[str, Any]) -> ConvertOptions:
    """``options`` with the keyword fields a caller passed to :func:`convert` (lists become tuples; ``None`` for a
    field whose default is a tuple means that default, as it does for ``precisions``)."""
    from dataclasses import MISSING
    from dataclasses import fields as dataclass_fields

    defaults = {f.name: f.default_factory() if f.default is MISSING else f.default
                for f in dataclass_fields(ConvertOptions)}
    fields = {k: v for k, v in fields.items() if not (v is None and isinstance(defaults.get(k), tuple))}
    known = set(defaults)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(f"convert() got an unknown option {unknown[0]!r}",
                         f"pass one of the ConvertOptions fields: {', '.join(sorted(known))}")

    def frozen(value: Any) -> Any:
        return tuple(frozen(v) for v in value) if isinstance(value, list | tuple) else value

    return _replace(options, **{k: frozen(v) for k, v in fields.items()}) if fields else options


def _replace(options: ConvertOptions, **changes) -> ConvertOptions:
    from dataclasses import replace

    return replace(options, **changes)


def is_conversion(out: Path) -> bool:
    """Whether ``out`` holds a conversion this toolkit wrote (a ``manifest.json`` in its format)."""
    try:
        Manifest.read(out)
        return True
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def _checked_out_dir(out_dir: str | Path, force: bool, model, weights, parity_data, calibration) -> Path:
    """``out_dir`` validated (:func:`converter._convert.outdir.check`), after removing what killed runs left beside it."""
    out_dir = Path(out_dir)
    for left in outdir.sweep(out_dir):
        print(f"convert: removed {left.name}, left beside --out by a run that no longer exists", file=sys.stderr)
    inputs = [model if isinstance(model, str | Path) else None, weights,
              parity_data if isinstance(parity_data, str | Path) else None, calibration]
    return _outdir_call(outdir.check, out_dir, force=force, owned=is_conversion, what="manifest.json", inputs=inputs)


def _outdir_call(fn, *args, **kwargs):
    """``fn`` with its :class:`converter._convert.outdir.OutDirError` as the CLI's one-line :class:`InputError`."""
    try:
        return fn(*args, **kwargs)
    except outdir.OutDirError as exc:
        raise InputError(exc.problem, exc.fix) from None
