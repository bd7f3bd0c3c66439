"""Run the same inputs through every runtime of an output directory and compare with the reference."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from converter import parity, runtimes
from converter.options import ConvertOptions
from converter.quiet import silenced
from converter.paritydata import ParityData
from converter.sources import LoadedModel

#: With ``--dynamic-batch`` every runtime is fed at these batch sizes (the reference at the first).
DYNAMIC_BATCHES = (1, 3)
#: Runtimes that take any batch get chunks of this size when the artifacts have a fixed batch.
FREE_CHUNK = 64


def build_runners(model: LoadedModel, out: Path, manifest: dict, sample: list[np.ndarray],
                  options: ConvertOptions, workdir: Path) -> tuple[runtimes.Runner, list[runtimes.Runner]]:
    """(reference, candidates) for every artifact present in ``out``."""
    fixed = None if manifest["dynamic_batch"] else manifest["inputs"][0]["pytorch_shape"][0]
    onnx_runner = runtimes.onnxruntime_runner(out / "model.onnx", artifact="model.onnx", batch=fixed)
    candidates: list[runtimes.Runner] = []
    if model.module is not None:
        # PyTorch takes any batch: feeding it one sample at a time would only measure Python overhead
        reference = runtimes.torch_runner(model.module)
        candidates.append(runtimes.torch_runner(model.module))
        candidates.append(runtimes.torchscript_runner(model.module, sample, None))
    else:
        reference = onnx_runner
    candidates.append(onnx_runner)
    arts = manifest["artifacts"]
    if "saved_model" in arts:
        candidates.append(runtimes.saved_model_runner(out / "saved_model", manifest, fixed))
    for key, art in arts.items():
        if key.startswith("tflite_"):
            candidates.append(runtimes.tflite_runner(out / art["path"], art["precision"], manifest, fixed))
    if model.reference_name == "mnist_cnn":
        from reference_models.port import torch_to_keras

        candidates.append(runtimes.keras_native_runner(torch_to_keras(model.module), manifest["inputs"]))
    if "saved_model" in arts:
        candidates.append(runtimes.tf2onnx_roundtrip_runner(out / "saved_model", manifest, options.opset, workdir,
                                                            fixed, options.verbose))
    return reference, candidates


def run_parity(model: LoadedModel, out: Path, manifest: dict, data: ParityData,
               options: ConvertOptions) -> parity.ParityReport:
    """Compare every runtime with the reference on ``data``; the report says who passed and by how much."""
    batch = manifest["inputs"][0]["pytorch_shape"][0]
    sample = [np.ascontiguousarray(x[:batch]) for x in data.inputs]
    if len(sample[0]) < batch:
        sample = [np.concatenate([x] * batch)[:batch] for x in sample]
    # LiteRT's XNNPACK and TF print to the C-level fds while runtimes start; keep that off the terminal
    with tempfile.TemporaryDirectory(prefix="parity-") as work, silenced(options.verbose):
        reference, candidates = build_runners(model, out, manifest, sample, options, Path(work))
        chunks = DYNAMIC_BATCHES if manifest["dynamic_batch"] else (FREE_CHUNK,)
        ref_out = runtimes.run_batched(reference, data.inputs, chunks[0])
        ref_acc = parity._accuracy(ref_out[0], data.labels)
        scale, warnings = parity.reference_warnings(ref_out)
        rows = []
        for runner in candidates:
            rows.append(_compare_at(runner, data, ref_out, ref_acc, chunks, options, manifest))
    degenerate = bool(warnings)
    passed = all(r.passed for r in rows) and not degenerate
    return parity.ParityReport(passed, reference.runtime, len(data.inputs[0]), rows, ref_acc, scale, warnings,
                               data.description)


def _compare_at(runner, data: ParityData, ref_out, ref_acc, chunks, options, manifest) -> parity.RuntimeResult:
    tol = parity.tolerance_for(runner.precision, options.atol, options.rtol)
    worst = None
    for chunk in chunks:
        got = runtimes.run_batched(runner, data.inputs, chunk)
        row = parity.compare(runner.runtime, runner.precision, runner.artifact, ref_out, got, data.labels, ref_acc, tol)
        if worst is None or (worst.passed and not row.passed) or row.max_rel_err > worst.max_rel_err:
            worst = row
    worst.batch_sizes = list(chunks) if manifest["dynamic_batch"] else [runner.batch or FREE_CHUNK]
    worst.size_bytes = _artifact_bytes(manifest, runner.artifact)
    return worst


def _artifact_bytes(manifest: dict, artifact: str | None) -> int | None:
    for art in manifest["artifacts"].values():
        if art.get("path") == artifact:
            return art.get("bytes")
    return None
