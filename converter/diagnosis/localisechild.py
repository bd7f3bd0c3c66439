"""Failure localisation in a child process, for model sources given as a spec (the CLI's case).

Why: localisation needs the PyTorch model *and* TensorFlow in one process (torch hooks, then the TF/TFLite
replays of :mod:`converter.diagnosis.localise`). The ``convert`` process has TensorFlow loaded by then, and importing
``torch._dynamo`` (it imports triton), ``torch.export`` or some torchvision ops after TensorFlow segfaults
(both bundle LLVM): loading a Hugging Face model there killed the whole command with exit 139 and no output.
The child loads the model first and TensorFlow only afterwards (the safe order, the one tests/conftest.py
claims); whatever still crashes it becomes ``{"error": ...}`` in the rows, never a failed conversion.

The parent hands everything over through a work directory: ``request.json`` (spec, weights, out_dir, options,
the report rows as ``[runtime, precision, passed]``), ``arrays.npz`` (parity inputs, calibration); the child
writes ``result.json``: one localisation (or None) per report row, in order.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from converter._convert.manifest import Manifest

#: Seconds the child may take: a TFLite int8 replay of a large model takes minutes on 2 cores.
TIMEOUT_S = 900.0
MODULE = "converter.diagnosis.localisechild"
_CRASHED = "the localisation child process crashed"


def localise_in_child(spec: str, weights: str | Path | None, out_dir: Path, manifest: Manifest, data, report, options,
                      calibration=None, *, import_cwd: bool = True, timeout: float = TIMEOUT_S) -> None:
    """Fill ``row.localisation`` as :func:`converter.diagnosis.localise.localise_failures` would, from a child process.

    ``data``: the :class:`ParityData` parity used (only ``inputs`` travel); ``report``: a
    :class:`ParityReport` (its rows' ``runtime``, ``precision``, ``passed`` travel). Never raises for the child:
    a crash or a timeout gives every row that was to be localised ``{"error": ...}`` with the child's last
    stderr line. An interrupt in the parent kills the child and propagates. ``import_cwd``: a ``module:callable``
    spec may import from the current directory (as in the PyTorch stage); False for a source read from a manifest.
    """
    rows = report.runtimes
    every_row = bool(options.localise)
    wanted = [row for row in rows if every_row or not row.passed]
    if not wanted:
        return
    from converter._proc import children

    with tempfile.TemporaryDirectory(prefix="localise-") as tmp:
        work = Path(tmp)
        request = {"spec": spec, "weights": None if weights is None else str(weights), "out_dir": str(out_dir),
                   "options": options.to_json(), "layout": manifest.layout,
                   "rows": [[r.runtime, r.precision, bool(r.passed)] for r in rows], "every_row": every_row}
        (work / "request.json").write_text(json.dumps(request))
        arrays = {f"input/{i}": np.asarray(x) for i, x in enumerate(data.inputs)}
        arrays.update({f"calibration/{i}": np.asarray(x) for i, x in enumerate(calibration or [])})
        np.savez(work / "arrays.npz", **arrays)
        child = children.start(MODULE, str(work), import_cwd=import_cwd)  # imports as the PyTorch stage did
        try:  # an interrupt in the parent: close() kills the child, it must not outlive the command
            code = child.wait(timeout)
            last = child.last_line()
            if options.verbose:
                child.log.seek(0)
                sys.stderr.write(child.log.read().decode(errors="replace"))
        finally:
            child.close()
        result = work / "result.json"
        if code == 0 and result.is_file():
            for row, found in zip(rows, json.loads(result.read_text())):
                if found is not None:
                    row.localisation = found
            return
        how = "no result" if code == 0 else children.exit_reason(code, timeout)
        if code is not None and code < 0:
            how = f"exit {code}, {how.removeprefix('signal ')}"
        error = f"{_CRASHED if code is not None else 'the localisation child process'} ({how})" + \
            (f": {last[:200]}" if last else "")
    for row in wanted:
        row.localisation = {"error": error}


# ----------------------------------------------------------------------------------------- child process

@dataclass
class _Row:
    """What :func:`converter.diagnosis.localise.localise_failures` reads and writes of a report row."""

    runtime: str
    precision: str
    passed: bool
    localisation: dict | None = None


@dataclass
class _Report:
    runtimes: list[_Row]


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _child(work: Path) -> int:
    from converter.options import ConvertOptions
    from converter.parity.data import ParityData
    from converter._convert.quiet import own_process, quiet_tensorflow

    request = json.loads((work / "request.json").read_text())
    options = ConvertOptions.from_json(request["options"])
    quiet_tensorflow(options.verbose)
    own_process()
    with np.load(work / "arrays.npz", allow_pickle=False) as z:
        inputs = [z[k] for k in sorted((k for k in z.files if k.startswith("input/")), key=_index)]
        calibration = [z[k] for k in sorted((k for k in z.files if k.startswith("calibration/")), key=_index)]
    report = _Report([_Row(*row) for row in request["rows"]])
    try:
        model = _load(request["spec"], request["weights"], options.allow_pickle)
    except Exception as exc:  # loaded fine in the PyTorch stage; a diagnosis never fails the conversion
        for row in report.runtimes:
            if request["every_row"] or not row.passed:
                row.localisation = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    else:
        # TensorFlow is imported lazily by the first replay, after the model has loaded and run under the torch
        # hooks: imports a forward makes on first use (HF models probe torch._dynamo) also precede TensorFlow's
        from converter.diagnosis.localise import localise_failures

        localise_failures(model, request["out_dir"], request["layout"],
                          ParityData(inputs, None, "parity inputs"), report, options,
                          calibration=calibration or None, every_row=request["every_row"])
    done = work / "result.json.partial"
    done.write_text(json.dumps([row.localisation for row in report.runtimes], default=_jsonable))
    os.replace(done, work / "result.json")
    return 0


def _load(spec: str, weights: str | None, allow_pickle: bool):
    """The model as the PyTorch stage loaded it (an ``.onnx`` source has no weights to apply)."""
    from converter._convert.sources import load_model

    return load_model(spec, None if spec.endswith(".onnx") else weights, allow_pickle=allow_pickle)


def _index(key: str) -> int:
    return int(key.rsplit("/", 1)[1])


if __name__ == "__main__":
    from converter._proc.children import die_with_parent
    from converter._convert.quiet import exit_without_teardown

    # a killed `convert` leaves no orphan replaying; armed at the start, not in a preexec_fn: that runs between
    # fork and exec in a parent full of TensorFlow threads, where Python code can deadlock
    die_with_parent()
    # torch's and TensorFlow's teardown costs ~1 s after result.json is written; the parent waits for the exit
    exit_without_teardown(_child(Path(sys.argv[1])))
