"""``convert``: PyTorch (or ONNX) -> ONNX -> SavedModel + TFLite, then parity across every runtime.

Everything is written into a temporary directory beside ``out_dir`` and moved into place only when
complete, so an error or Ctrl-C never leaves a half-written output directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter import artifacts, checks, interrupts, torchchild, torchstage
from converter.errors import EXIT_OK, EXIT_PARITY_FAILED, InputError
from converter.options import ConvertOptions
from converter.parity import ParityReport
from converter.paritydata import ParityData
from converter.sources import LoadedModel, load_model
from converter.tensorflow import preload as preload_tensorflow


@dataclass
class ConversionResult:
    out_dir: Path
    manifest: dict
    parity: ParityReport | None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.parity is None or self.parity.passed else EXIT_PARITY_FAILED


def convert(
    model: LoadedModel | str,
    out_dir: str | Path,
    options: ConvertOptions = ConvertOptions(),
    *,
    weights: str | Path | None = None,
    input_shapes: list[tuple[int, ...]] | None = None,
    parity_data: str | ParityData = "random",
    calibration: list[np.ndarray] | None = None,
    force: bool = False,
    isolate: bool = False,
) -> ConversionResult:
    """Convert ``model`` into ``out_dir`` and (unless ``options.parity`` is off) check parity.

    ``model`` is a :class:`LoadedModel` (a live module) or a source spec (``mnist_cnn``,
    ``pkg.mod:fn``, a file). With ``isolate=True`` and a spec, the PyTorch side runs in a child process
    that exits before TensorFlow loads (lower peak memory; what the CLI does).

    Raises :class:`converter.errors.ConverterError` (exit code 2) for bad input or a failed conversion;
    a parity failure is *not* an exception: the artifacts are kept and ``result.exit_code`` is 1.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    tmp = _make_tmp(out_dir)
    if not options.parity and (calibration is not None or "int8" not in options.tflite_precisions):
        # parity off and nothing to calibrate: one seeded sample is all the export needs
        parity_data, options = "random", _replace(options, parity_samples=1)
    try:
        side = _torch_side(model, weights, tmp, options, input_shapes, parity_data, isolate, export_onnx=True)
        timings["pytorch_stage"] = time.perf_counter() - start
        manifest = artifacts.build_tf(side, tmp, options, calibration, timings)
        report = None
        if options.parity:
            t = time.perf_counter()
            report = checks.run_parity(tmp, manifest, side, options)
            _diagnose(model, weights, tmp, manifest, side, report, options, calibration)
            report.write(tmp)
            timings["parity"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        manifest["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        artifacts.write_manifest(tmp, manifest)
        interrupts.checkpoint()  # an interrupt a library swallowed still means: nothing in --out
        _move_into_place(tmp, out_dir, force)
    except BaseException:  # includes KeyboardInterrupt: never leave partial output
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConversionResult(out_dir, manifest, report)


def check(model: LoadedModel | str | None, out_dir: str | Path, options: ConvertOptions = ConvertOptions(),
          *, weights: str | Path | None = None, parity_data: str | ParityData = "random",
          isolate: bool = False) -> ConversionResult:
    """Re-run parity of ``model`` against the artifacts already in ``out_dir`` (CI after a model change).

    ``model=None`` re-loads the source recorded in the manifest. Rewrites ``parity.json``/``parity.md``
    atomically; the artifacts are not touched.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{out_dir} has no manifest.json", "pass a directory written by convert --out")
    manifest = json.loads(manifest_path.read_text())
    if model is None:
        model, weights = manifest["source"]["spec"], manifest["source"].get("weights")
    options = _replace(options, dynamic_batch=manifest["dynamic_batch"], opset=manifest["opset"])
    shapes = [tuple(i["pytorch_shape"]) for i in manifest["onnx"]["inputs"]]
    side = _torch_side(model, weights, out_dir, options, shapes, parity_data, isolate, export_onnx=False)
    report = checks.run_parity(out_dir, manifest, side, options)
    _diagnose(model, weights, out_dir, manifest, side, report, options, None)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".check-"))
    try:
        report.write(staging)
        interrupts.checkpoint()
        for name in ("parity.json", "parity.md"):
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ConversionResult(out_dir, manifest, report)


def _torch_side(model, weights, out: Path, options, input_shapes, parity_data, isolate: bool,
                export_onnx: bool) -> torchstage.TorchSide:
    if isinstance(model, str):
        if isolate and not isinstance(parity_data, ParityData) and torchchild.has_torch_side(model):
            stage = torchstage.start_isolated(model, None if weights is None else str(weights), out, options,
                                              input_shapes, parity_data, export_onnx=export_onnx)
            try:
                preload_tensorflow(options.verbose)  # overlaps the child's torch import and export
            except BaseException:
                stage.cancel()
                raise
            return stage.result()
        model = load_model(model, weights)
    return torchstage.run(model, out, options, input_shapes, parity_data, export_onnx=export_onnx)


def _diagnose(model, weights, out: Path, manifest: dict, side, report: ParityReport, options: ConvertOptions,
              calibration) -> None:
    """On a parity failure (or ``--localise``) name the first PyTorch module where each runtime diverges.

    The CLI's TF side has no torch module in memory: the model is loaded here, only when needed."""
    if report.passed and not options.localise:
        return
    from converter.localise import localise_failures

    loaded = model
    if isinstance(model, str):
        loaded = load_model(model, weights) if not model.endswith(".onnx") else load_model(model)
    localise_failures(loaded, out, manifest, side.data, report, options, calibration=calibration,
                      every_row=options.localise)


def _replace(options: ConvertOptions, **changes) -> ConvertOptions:
    from dataclasses import replace

    return replace(options, **changes)


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not force:
        raise InputError(f"{out_dir} already exists", "pass --force to overwrite it, or choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a directory", "choose another --out")


def _make_tmp(out_dir: Path) -> Path:
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=parent, prefix=f".{out_dir.name}.partial-"))
    except OSError as exc:
        raise InputError(f"cannot write to {parent}: {exc.strerror}",
                         "choose an --out in a writable directory") from None


def _move_into_place(tmp: Path, out_dir: Path, force: bool) -> None:
    if out_dir.exists() and force:
        old = Path(tempfile.mkdtemp(dir=out_dir.resolve().parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "previous")
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, out_dir)
