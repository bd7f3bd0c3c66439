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

from converter import artifacts, checks
from converter.errors import EXIT_OK, EXIT_PARITY_FAILED, InputError
from converter.options import ConvertOptions
from converter.parity import ParityReport
from converter.paritydata import ParityData, load_parity_data
from converter.sources import LoadedModel


@dataclass
class ConversionResult:
    out_dir: Path
    manifest: dict
    parity: ParityReport | None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.parity is None or self.parity.passed else EXIT_PARITY_FAILED


def convert(
    model: LoadedModel,
    out_dir: str | Path,
    options: ConvertOptions = ConvertOptions(),
    *,
    input_shapes: list[tuple[int, ...]] | None = None,
    parity_data: str | ParityData = "random",
    calibration: list[np.ndarray] | None = None,
    force: bool = False,
) -> ConversionResult:
    """Convert ``model`` into ``out_dir`` and (unless ``options.parity`` is off) check parity.

    Raises :class:`converter.errors.ConverterError` (exit code 2) for bad input or a failed conversion;
    a parity failure is *not* an exception: the artifacts are kept and ``result.exit_code`` is 1.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    shapes, dtypes = artifacts.resolve_inputs(model, input_shapes)
    data = parity_data if isinstance(parity_data, ParityData) else load_parity_data(
        parity_data, shapes, dtypes, options.parity_samples, options.seed)
    timings["load_data"] = time.perf_counter() - start
    tmp = _make_tmp(out_dir)
    try:
        manifest = artifacts.build(model, tmp, options, shapes, dtypes, data, calibration, timings)
        report = None
        if options.parity:
            t = time.perf_counter()
            report = checks.run_parity(model, tmp, manifest, data, options)
            report.write(tmp)
            timings["parity"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        manifest["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        artifacts.write_manifest(tmp, manifest)
        _move_into_place(tmp, out_dir, force)
    except BaseException:  # includes KeyboardInterrupt: never leave partial output
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConversionResult(out_dir, manifest, report)


def check(model: LoadedModel, out_dir: str | Path, options: ConvertOptions = ConvertOptions(),
          *, parity_data: str | ParityData = "random") -> ConversionResult:
    """Re-run parity of ``model`` against the artifacts already in ``out_dir`` (CI after a model change).

    Rewrites ``parity.json``/``parity.md`` in place (atomically); the artifacts are not touched.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{out_dir} has no manifest.json", "pass a directory written by convert --out")
    manifest = json.loads(manifest_path.read_text())
    shapes = [tuple(i["pytorch_shape"]) for i in manifest["inputs"]]
    dtypes = [np.dtype(i["dtype"]) for i in manifest["inputs"]]
    data = parity_data if isinstance(parity_data, ParityData) else load_parity_data(
        parity_data, shapes, dtypes, options.parity_samples, options.seed)
    report = checks.run_parity(model, out_dir, manifest, data, options)
    for name in ("parity.json", "parity.md"):
        report_tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".check-"))
        try:
            report.write(report_tmp)
            os.replace(report_tmp / name, out_dir / name)
        finally:
            shutil.rmtree(report_tmp, ignore_errors=True)
    return ConversionResult(out_dir, manifest, report)


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
