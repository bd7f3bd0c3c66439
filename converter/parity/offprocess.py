"""The parity rows that run in a child process, each queued as soon as its artifact exists.

onnxruntime on ``model.onnx``, every TFLite file and onnxruntime on the tf2onnx round trip run in one
:class:`converter._proc.isolated.Background` child (NumPy, LiteRT, onnxruntime; no TensorFlow), one job after
another. A conversion with parity creates :class:`ChildRows` when its TensorFlow side starts and tells it of each
artifact as it is ready (:meth:`ChildRows.written`, called by :func:`converter._convert.artifacts.build_tf`): the
child runs the onnxruntime row while the SavedModel is written (not during the translation, when the PyTorch child
still computes the reference on the other core) and each TFLite row while the next file is built, on the core
that TensorFlow's single-threaded stages leave idle. :func:`converter.parity.run.run_parity` adds the
round trip, runs in its own process the onnxruntime rows the child has not reached once its in-process rows are
done (:meth:`ChildRows.run_unstarted_here`), and collects every row. ``--check`` and the second size of ``--dynamic-dim`` queue everything at once
(:meth:`ChildRows.written_all`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from converter._proc import isolated
from converter._convert.manifest import Manifest
from converter.parity import runtimes

Key = tuple[str, str]  # (runtime, precision)


class ChildRows:
    """The child and its queued rows: each row runs once per chunk size in ``chunks`` (a runner with a fixed batch
    is fed that batch instead)."""

    def __init__(self, inputs: Sequence[np.ndarray], chunks: tuple[int, ...]) -> None:
        self.chunks, self._inputs = chunks, list(inputs)
        self._background: isolated.Background | None = None  # the child starts with the first row
        #: (row, chunk, job index), in queue order
        self._queued: list[tuple[Key, int, int]] = []
        self.artifacts: dict[Key, str] = {}

    def submit(self, key: Key, artifact: str, job: isolated.Job) -> None:
        """Queue the row ``key`` (its file ``artifact``), run as ``job`` at every chunk size."""
        self.artifacts[key] = artifact
        if self._background is None:
            self._background = isolated.Background([], self._inputs)
        for chunk in self.chunks:
            self._queued.append((key, chunk, self._background.submit(replace(job, batch=job.batch or chunk))))

    def written(self, out: Path, manifest: Manifest, name: str) -> None:
        """``manifest.artifacts[name]`` was just written into ``out``: queue its row (the SavedModel's rows run in
        the TensorFlow process, so they are not queued here)."""
        if name == "onnx":
            self.submit(("onnxruntime", "fp32"), "model.onnx", runtimes.onnx_job(out / "model.onnx", manifest))
        elif manifest.artifacts[name].precision is not None:
            art = manifest.artifacts[name]
            self.submit(("tflite", art.precision), art.path, runtimes.tflite_job(out / art.path, manifest,
                                                                                 manifest.fixed_batch))

    def written_all(self, out: Path, manifest: Manifest) -> None:
        """Queue the rows of every artifact ``out`` already holds."""
        for name in manifest.artifacts:
            self.written(out, manifest, name)

    def run_unstarted_here(self) -> None:
        """Run here, last queued first, the onnxruntime rows the child has not started (this process has nothing
        else to do, and would only wait for the child): the two share the tail of the queue instead of one core
        idling. The same onnxruntime, on one thread either side, so a row's numbers do not depend on who ran it."""
        if self._background is None:
            return
        for _, _, index in reversed(self._queued):
            self._background.take(index)

    def collect(self) -> tuple[dict[Key, dict[int, list[np.ndarray]]], dict[Key, str]]:
        """Wait for the child: every row's outputs per chunk size, and the rows that could not run, with why."""
        outputs: dict[Key, dict[int, list[np.ndarray]]] = {}
        crashed: dict[Key, str] = {}
        for key, chunk, index in self._queued:
            if key in crashed:  # an earlier chunk size of this file already failed: one row says so
                continue
            try:
                outputs.setdefault(key, {})[chunk] = self._background.result(index)
            except isolated.InterpreterAborted as exc:
                outputs.pop(key, None)
                crashed[key] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        return outputs, crashed

    def close(self) -> None:
        """Stop the child if it still runs, and remove its files."""
        if self._background is not None:
            self._background.close()

