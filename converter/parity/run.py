"""Run the same inputs through every runtime of an output directory and compare with the reference.

The PyTorch rows arrive precomputed from :mod:`converter._convert.torchstage` (so this module never imports
torch); everything else runs here.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from converter.parity import classes, judge as parity, runtimes
from converter.parity.offprocess import ROUNDTRIP, ChildRows
from converter.options import ConvertOptions
from converter._convert.quiet import silenced
from converter._convert.feeding import feeding_lines
from converter._convert.manifest import Manifest
from converter._convert.progress import stage
from converter._convert.side import TorchSide


def build_runners(out: Path, manifest: Manifest, side: TorchSide, loaded: Callable[[], object],
                  timings: dict[str, float]) -> tuple[list[runtimes.Runner], dict[tuple[str, str], str]]:
    """In-process runners for the SavedModel (``loaded()``: the SavedModel, loaded once) and the reference net's
    native Keras port, and the rows whose runtime could not even load its artifact, with why (the PyTorch rows are
    precomputed; the other rows run in the child). ``timings`` gets each set-up's seconds as
    ``parity_<runtime>_<precision>``."""
    makers: list[tuple[tuple[str, str], Callable[[], runtimes.Runner]]] = []
    if "saved_model" in manifest.artifacts:
        makers.append((("saved_model", "fp32"), lambda: runtimes.saved_model_runner(
            out / "saved_model", manifest, manifest.fixed_batch, loaded())))
    if side.keras_state is not None:
        def keras_native() -> runtimes.Runner:
            import tf_keras  # already loaded by onnx2tf; Keras 3 would cost a ~3 s import for one small net

            from reference_models.port import state_to_keras

            return runtimes.keras_native_runner(state_to_keras(side.keras_state, tf_keras), manifest.inputs)

        makers.append((("keras_native", "fp32"), keras_native))
    found, crashed = [], {}
    for key, make in makers:
        t = time.perf_counter()
        try:
            found.append(make())
        except Exception as exc:  # a SavedModel TF cannot load: a failed row, not a dead conversion
            crashed[key] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        timings[f"parity_{key[0]}_{key[1]}"] = time.perf_counter() - t
    return found, crashed


def roundtrip_optimized(out: Path, manifest: Manifest, options: ConvertOptions, workdir: Path,
                        loaded: Callable[[], object], inputs: list[np.ndarray], chunks: tuple[int, ...]
                        ) -> tuple[str, dict[int, list[np.ndarray]]]:
    """The round trip again with tf2onnx's optimizers, run in onnxruntime here: (artifact, outputs per chunk size).
    For the graphs onnxruntime refuses without them (a TensorList loop is valid only after grappler and tf2onnx's
    loop optimizer); raises when it still cannot."""
    from converter._proc import isolated

    artifact, job = runtimes.tf2onnx_roundtrip_job(out / "saved_model", manifest, options.opset, workdir,
                                                   manifest.fixed_batch, options.verbose, loaded(), optimize=True)
    run_one = isolated.onnxruntime_fn(job.model, job.outputs)
    return artifact, {c: isolated.feed(replace(job, batch=job.batch or c), run_one, inputs) for c in chunks}


def run_parity(out: Path, manifest: Manifest, side: TorchSide, options: ConvertOptions,
               timings: dict[str, float] | None = None, rows: ChildRows | None = None) -> parity.ParityReport:
    """Compare every runtime with the reference on the same data; the report says who passed and by how much.
    ``timings`` (e.g. the manifest's ``timings_s``) gets the seconds of each in-process row (``parity_<runtime>_
    <precision>``: set-up and run) and the wait for the child's rows after them (``parity_child_wait``). ``rows``:
    the child rows the conversion queued while it wrote the artifacts (:mod:`converter.parity.offprocess`; the
    caller closes them); without it, every row is queued in a child started and closed here."""
    from converter._convert.quiet import import_tensorflow

    names = [o.name for o in manifest.outputs]
    axes = class_axes(manifest, options)
    import_tensorflow(options.verbose)
    data = side.data
    stage(f"parity: {len(data.inputs[0])} samples through every runtime")
    chunks = side.chunks(manifest.dynamic_batch)
    outputs, crashed, artifacts = _run_runtimes(out, manifest, side, options, chunks, {} if timings is None else timings,
                                                rows)
    for runtime, by_chunk in side.outputs.items():
        outputs[(runtime, "fp32")] = by_chunk
    if "pytorch" in side.outputs:
        reference_name, ref_out = "pytorch", side.outputs["pytorch"][chunks[0]]
    else:
        reference_name, ref_out = "onnxruntime", outputs[("onnxruntime", "fp32")][chunks[0]]
    ref_acc = parity.accuracy_of(ref_out[0], data.labels, axes[0]) if axes[0] is not None else None
    scale, warnings = parity.reference_warnings(ref_out, data.labels, reference_name=reference_name,
                                                output_names=names, class_axes=axes)
    rows = []
    prepared = parity.prepare_reference(ref_out)  # once for every row
    for (runtime, precision), by_chunk in sorted(outputs.items(), key=lambda kv: _ORDER.index(kv[0][0])):
        tol = parity.tolerance_for(precision, options.atol, options.rtol)
        worst = None
        for got in by_chunk.values():
            row = parity.compare(runtime, precision, artifacts.get((runtime, precision)), prepared, got, data.labels,
                                 ref_acc, tol, names, axes)
            if worst is None or (row.passed, -row.max_rel_err) < (worst.passed, -worst.max_rel_err):  # fails first
                worst = row
        # what each call got: a fixed-batch artifact is fed at its batch whatever the chunk (the PyTorch rows run
        # FREE_CHUNK samples a call)
        fixed = manifest.fixed_batch if runtime in _ARTIFACT_RUNTIMES else None
        worst.batch_sizes = [fixed or c for c in by_chunk]
        worst.size_bytes = manifest.artifact_bytes(worst.artifact)
        rows.append(worst)
    if side.resized is not None:
        stage(f"parity at the second size ({_second_sizes(side.dynamic_dims)})")
        _judge_second_size(out, manifest, side, options, rows, names, axes)
    for (runtime, precision), reason in crashed.items():
        rows.append(parity.failed_row(runtime, precision, artifacts.get((runtime, precision)),
                                      parity.tolerance_for(precision, options.atol, options.rtol),
                                      f"cannot run: {reason}"))
    rows.sort(key=lambda r: _ORDER.index(r.runtime))
    for row in rows:
        _require_quantised(out, row)
    for key, reason in manifest.failed_artifacts.items():
        precision = key.removeprefix("tflite_")
        rows.append(parity.failed_row("tflite", precision, f"model_{precision}.tflite",
                                      parity.tolerance_for(precision), f"not built: {reason}"))
    passed = all(r.passed for r in rows) and not warnings
    return parity.ParityReport(passed, reference_name, len(data.inputs[0]), rows, ref_acc, scale, warnings,
                               data.description, {n: None if a is None else a.to_json() for n, a in zip(names, axes)},
                               feeding_lines(manifest), side.dynamic_dims)


def _judge_second_size(out: Path, manifest: Manifest, side: TorchSide, options: ConvertOptions,
                       rows: list[parity.RuntimeResult], names: list[str], axes) -> None:
    """Run every runtime again on ``side.resized`` (the dynamic dimensions at their second size) and fold the result
    into each row: a row fails when either size fails, and its errors are the worse of the two. The TorchScript row
    is judged at the sample's size only (a trace may fix sizes; it is not an artifact that ships)."""
    chunk = (manifest.fixed_batch or side.chunks(False)[0],)
    second = replace(side, data=side.resized, outputs={})
    outputs, crashed, _ = _run_runtimes(out, manifest, second, options, chunk, {})
    if "pytorch" in side.resized_outputs:
        reference = side.resized_outputs["pytorch"]
    elif ("onnxruntime", "fp32") in outputs:
        reference = outputs[("onnxruntime", "fp32")][chunk[0]]
    else:
        reference = None
    where = f"at the second size ({_second_sizes(side.dynamic_dims)})"
    reference = None if reference is None else parity.prepare_reference(reference)
    for row in rows:
        key = (row.runtime, row.precision)
        if row.runtime in ("pytorch", "torchscript") or not row.passed:
            continue
        if key in crashed or reference is None:
            row.passed, row.reason = False, f"{where}: cannot run: {crashed.get(key, 'no reference')}"
            continue
        if key not in outputs:
            continue
        again = parity.compare(row.runtime, row.precision, row.artifact, reference, outputs[key][chunk[0]], None,
                               None, row.tolerance, names, axes)
        row.max_abs_err, row.mean_abs_err = max(row.max_abs_err, again.max_abs_err), max(row.mean_abs_err, again.mean_abs_err)
        row.max_rel_err, row.cosine_min = max(row.max_rel_err, again.max_rel_err), min(row.cosine_min, again.cosine_min)
        if not again.passed:
            row.passed, row.reason = False, f"{where}: {again.reason}"


def _second_sizes(description: str) -> str:
    """``seq = 8`` from ``seq = 16 and 8`` (each label's second size)."""
    return ", ".join(part.split(" = ")[0] + " = " + part.rsplit(" and ", 1)[-1] for part in description.split(", ") if part)


def class_axes(manifest: Manifest, options: ConvertOptions) -> list[classes.ClassAxis | None]:
    """Each output's class axis (``--class-axis``, else the rule of :mod:`converter.parity.classes`), from the
    names and PyTorch shapes of the outputs; a ``--class-axis`` naming no output, or an axis or channel range that
    output does not have, is an :class:`~converter.errors.InputError` (first checkable here, where the names are
    known: before any runtime runs, and inside the staging directory, so nothing is written)."""
    return classes.resolve([o.name for o in manifest.outputs], [o.pytorch_shape for o in manifest.outputs],
                           options.class_axes)


def _run_runtimes(out: Path, manifest: Manifest, side: TorchSide, options: ConvertOptions, chunks: tuple[int, ...],
                  timings: dict[str, float], rows: ChildRows | None = None
                  ) -> tuple[dict[tuple[str, str], dict[int, list[np.ndarray]]], dict[tuple[str, str], str],
                             dict[tuple[str, str], str | None]]:
    """Every runtime's outputs on the parity data, per chunk size; the rows that could not run, with why; each
    row's artifact. The child's rows (``rows``, else started here with every artifact queued, and closed) are
    collected last. The tf2onnx round trip was converted and queued as soon as the SavedModel was written
    (:meth:`ChildRows.written`); after its own rows this process runs the onnxruntime rows the child has not started
    (:meth:`ChildRows.run_unstarted_here`), and the round trip with tf2onnx's optimizers when the plain one could
    not be converted or run."""
    inputs = side.data.inputs
    own = rows is None
    if own:
        rows = ChildRows(inputs, chunks, options.opset, options.verbose)
        rows.written_all(out, manifest)
    outputs: dict[tuple[str, str], dict[int, list[np.ndarray]]] = {}
    try:
        # LiteRT's XNNPACK and TF print to the C-level fds while runtimes start; keep that off the terminal
        with tempfile.TemporaryDirectory(prefix="parity-") as work, silenced(options.verbose):
            loaded = functools.cache(lambda: runtimes.load_saved_model(out / "saved_model"))  # one load, two rows
            runners, crashed = build_runners(out, manifest, side, loaded, timings)
            for r in runners:
                t = time.perf_counter()
                try:
                    outputs[(r.runtime, r.precision)] = {c: runtimes.run_batched(r, inputs, c) for c in chunks}
                except Exception as exc:  # a runtime that cannot run the artifact is a failed row, not a crash
                    crashed[(r.runtime, r.precision)] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
                key = f"parity_{r.runtime}_{r.precision}"
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            rows.run_unstarted_here()  # onnxruntime rows the child has not reached: this process is free now
            timings["parity_child_rows_here"] = time.perf_counter() - t
            t = time.perf_counter()
            child_outputs, child_crashed = rows.collect()
            timings["parity_child_wait"] = time.perf_counter() - t
            if "saved_model" in manifest.artifacts:
                timings["parity_tf2onnx_roundtrip_fp32"] = rows.roundtrip_s  # converted as the SavedModel was written
            if "saved_model" in manifest.artifacts and (not rows.roundtrip_queued or ROUNDTRIP in child_crashed):
                t = time.perf_counter()
                try:
                    rows.artifacts[ROUNDTRIP], child_outputs[ROUNDTRIP] = roundtrip_optimized(
                        out, manifest, options, Path(work), loaded, inputs, chunks)
                    child_crashed.pop(ROUNDTRIP, None)
                except Exception as exc:  # e.g. onnxruntime rejecting tf2onnx's graph: a failed row, not a crash
                    child_crashed[ROUNDTRIP] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
                timings["parity_tf2onnx_roundtrip_fp32"] += time.perf_counter() - t
    finally:
        if own:
            rows.close()
    artifacts = {(r.runtime, r.precision): r.artifact for r in runners}
    return {**outputs, **child_outputs}, {**crashed, **child_crashed}, {**artifacts, **rows.artifacts}


def _require_quantised(out: Path, row: parity.RuntimeResult) -> None:
    """An int8 row passes only if its file really is quantised: a converter that quietly fell back to float
    (seen: full int8 calibrated on an empty set) would otherwise pass every accuracy check."""
    if row.runtime != "tflite" or row.precision not in ("int8", "dynamic_int8") or not row.passed:
        return
    from converter._convert.halfcast import MIN_ELEMENTS
    from converter._convert.tfexport import quantised_tensors, unquantised

    if quantised_tensors(out / row.artifact):
        return
    why = unquantised(out / row.artifact, row.precision)
    if why is None:  # dynamic-range int8 of a model without a weight TFLite quantises: float, as it should be
        row.reason = f"float: no weight reaches the {MIN_ELEMENTS}-element size TFLite quantises"  # said, not failed
    else:
        row.passed = False
        row.reason = f"{row.artifact} is not quantised: {why}"


#: rows that run an artifact file (fed at the artifact's fixed batch, when it has one)
_ARTIFACT_RUNTIMES = ("onnxruntime", "saved_model", "tflite", "tf2onnx_roundtrip")
_ORDER = ["pytorch", "torchscript", "onnxruntime", "saved_model", "tflite", "keras_native", "tf2onnx_roundtrip"]
