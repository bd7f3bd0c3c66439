"""The parity rows that run in a child process, each queued as soon as its artifact exists.

onnxruntime on ``model.onnx``, every TFLite file and onnxruntime on the tf2onnx round trip run in one
:class:`converter._proc.isolated.Background` child (NumPy, LiteRT, onnxruntime; no TensorFlow), one job after
another. A conversion with parity creates :class:`ChildRows` when its TensorFlow side starts and tells it of each
artifact as it is ready (:meth:`ChildRows.written`, called by :func:`converter._convert.artifacts.build_tf`): the
child runs the onnxruntime row while the SavedModel is written (not during the translation, when the PyTorch child
still computes the reference on the other core), the round trip (converted from the SavedModel as soon as it is
written) and each TFLite row while the next file is built, on the core that TensorFlow's single-threaded stages
leave idle. :func:`converter.parity.run.run_parity` runs the SavedModel row, then in its own process the
onnxruntime rows the child has not reached (:meth:`ChildRows.run_unstarted_here`), and collects every row.
``--check`` and the second size of ``--dynamic-dim`` queue everything at once (:meth:`ChildRows.written_all`).
"""

from __future__ import annotations

import tempfile
import time
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from converter._proc import isolated
from converter._convert.manifest import Manifest
from converter.parity import runtimes

Key = tuple[str, str]  # (runtime, precision)
ROUNDTRIP: Key = ("tf2onnx_roundtrip", "fp32")


class ChildRows:
    """The child and its queued rows: each row runs once per chunk size in ``chunks`` (a runner with a fixed batch
    is fed that batch instead)."""

    def __init__(self, inputs: Sequence[np.ndarray], chunks: tuple[int, ...], opset: int = 17,
                 verbose: bool = False, reference_done: threading.Event | None = None) -> None:
        """``reference_done``: set when the PyTorch child has computed the reference and ended. Until then the
        onnxruntime row of ``model.onnx`` waits (a thread queues it then): its session would hold the model's
        weights beside the TF build's and the reference's (convnext_tiny's peak: 2.55 -> 2.3 GiB), a third
        process on two cores."""
        self.chunks, self._inputs = chunks, list(inputs)
        self._deferred: tuple[Path, Manifest] | None = None  # model.onnx's row, until the reference is done
        self._reference_done = reference_done
        self._lock = threading.RLock()  # the thread that queues the deferred row, and this process's calls
        self._closed = False
        self._opset, self._verbose = opset, verbose  # for the tf2onnx round trip
        self._background: isolated.Background | None = None  # the child starts with the first row
        #: (row, chunk, the indices of its jobs: one, or two halves of the samples), in queue order
        self._queued: list[tuple[Key, int, list[int]]] = []
        self.artifacts: dict[Key, str] = {}
        #: the round trip's conversion: its seconds, and whether tf2onnx converted the plain graph (queued)
        self.roundtrip_s, self.roundtrip_queued = 0.0, False
        self._work: tempfile.TemporaryDirectory | None = None  # the round trip's ONNX file, until close()

    def submit(self, key: Key, artifact: str, job: isolated.Job) -> None:
        """Queue the row ``key`` (its file ``artifact``), run as ``job`` at every chunk size; an onnxruntime row as
        two jobs, each half of the samples, so the half the child has not reached when this process is done with
        its own rows can run here (:meth:`run_unstarted_here`)."""
        with self._lock:
            self.artifacts[key] = artifact
            if self._background is None:
                self._background = isolated.Background([], self._inputs)
            for chunk in self.chunks:
                sized = replace(job, batch=job.batch or chunk)
                self._queued.append((key, chunk, [self._background.submit(part) for part in self._halves(sized)]))

    def _halves(self, job: isolated.Job) -> list[isolated.Job]:
        """An onnxruntime job as two, split at a multiple of its batch (so every sample is fed in the same chunk as
        unsplit, and the numbers are the same); a TFLite job whole (only the child may run it)."""
        count = len(self._inputs[0])
        middle = count // 2 // job.batch * job.batch
        if job.runtime != "onnxruntime" or not 0 < middle < count:
            return [job]
        return [replace(job, samples=(0, middle)), replace(job, samples=(middle, count))]

    def written(self, out: Path, manifest: Manifest, name: str) -> None:
        """``manifest.artifacts[name]`` was just written into ``out``: queue its row. For the SavedModel that is
        its tf2onnx round trip, converted here, now: the child runs it while the TFLite files are converted, when
        it would otherwise idle (the SavedModel's own row runs in the TensorFlow process, at parity)."""
        if name == "onnx":
            with self._lock:
                self._deferred = (out, manifest)
            if self._reference_done is None or self._reference_done.is_set():
                self._submit_deferred()
            else:
                threading.Thread(target=self._submit_when_done, daemon=True).start()
        elif name == "saved_model":
            self._roundtrip(out, manifest)
        elif name != "onnx" and manifest.artifacts[name].precision is not None:
            art = manifest.artifacts[name]
            self.submit(("tflite", art.precision), art.path, runtimes.tflite_job(out / art.path, manifest,
                                                                                 manifest.fixed_batch))

    def _roundtrip(self, out: Path, manifest: Manifest) -> None:
        """Convert the SavedModel back to ONNX with tf2onnx (without its optimizers) and queue its onnxruntime row;
        when tf2onnx cannot, ``roundtrip_queued`` stays False and parity converts it with them
        (:func:`converter.parity.run.roundtrip_optimized`). What the conversion loaded goes back at once."""
        from converter._convert import memory
        from converter._convert.progress import stage

        stage("parity: the SavedModel back to ONNX (tf2onnx round trip)")
        t = time.perf_counter()
        if self._work is None:
            self._work = tempfile.TemporaryDirectory(prefix="roundtrip-")
        try:
            self.submit(ROUNDTRIP, *runtimes.tf2onnx_roundtrip_job(out / "saved_model", manifest, self._opset,
                                                                   Path(self._work.name), manifest.fixed_batch,
                                                                   self._verbose))
            self.roundtrip_queued = True
        except Exception:
            self.roundtrip_queued = False
        memory.give_back()  # the loaded SavedModel and the frozen graph: the TFLite converter starts lower
        self.roundtrip_s += time.perf_counter() - t

    def _submit_when_done(self) -> None:
        self._reference_done.wait()
        self._submit_deferred()

    def _submit_deferred(self) -> None:
        with self._lock:
            if self._deferred is not None and not self._closed:
                out, manifest = self._deferred
                self._deferred = None
                self.submit(("onnxruntime", "fp32"), "model.onnx", runtimes.onnx_job(out / "model.onnx", manifest))

    def written_all(self, out: Path, manifest: Manifest) -> None:
        """Queue the rows of every artifact ``out`` already holds."""
        for name in manifest.artifacts:
            self.written(out, manifest, name)

    def run_unstarted_here(self) -> None:
        """Run here, last queued first, the onnxruntime rows the child has not started (this process has nothing
        else to do, and would only wait for the child): the two share the tail of the queue instead of one core
        idling. The same onnxruntime, on one thread either side, so a row's numbers do not depend on who ran it."""
        self._submit_deferred()
        if self._background is None:
            return
        for _, _, indices in reversed(self._queued):
            for index in reversed(indices):
                self._background.take(index)

    def collect(self) -> tuple[dict[Key, dict[int, list[np.ndarray]]], dict[Key, str]]:
        """Wait for the child: every row's outputs per chunk size, and the rows that could not run, with why."""
        self._submit_deferred()
        outputs: dict[Key, dict[int, list[np.ndarray]]] = {}
        crashed: dict[Key, str] = {}
        for key, chunk, indices in self._queued:
            if key in crashed:  # an earlier chunk size of this file already failed: one row says so
                continue
            try:
                parts = [self._background.result(index) for index in indices]
                outputs.setdefault(key, {})[chunk] = [np.concatenate(pieces) for pieces in zip(*parts)]
            except isolated.InterpreterAborted as exc:
                outputs.pop(key, None)
                crashed[key] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        return outputs, crashed

    def close(self) -> None:
        """Stop the child if it still runs, and remove its files."""
        with self._lock:
            self._closed = True
        if self._background is not None:
            self._background.close()
        if self._work is not None:
            self._work.cleanup()

