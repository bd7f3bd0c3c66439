"""Run a TFLite flatbuffer in a child process, so an interpreter that aborts cannot take the caller down.

Why: some int8 graphs are rejected by XNNPACK ("failed to prepare", a clean ``RuntimeError``) and, once a
neighbouring op stays float so XNNPACK no longer claims them, crash the reference kernels with SIGABRT
(seen on resnet18 with batch-norm-calibrated random weights: int8 ``ADD`` of a residual whose two
inputs' scales differ by orders of magnitude). Searching over quantisation variants runs many such models;
each runs here in ``python -m converter._proc.isolated`` and a crash becomes :class:`InterpreterAborted`.

The child imports only NumPy and LiteRT (no TensorFlow), so one call costs well under a second on top of
the inference itself.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter._convert.batches import chunks
from converter._proc import children


class InterpreterAborted(RuntimeError):
    """The TFLite interpreter refused the model or killed its process."""


@dataclass(frozen=True)
class Port:
    """One signature input or output: its name and the permutation from the PyTorch layout."""

    name: str
    perm: tuple[int, ...]


def ports(specs) -> list[Port]:
    """``Port`` of every :class:`converter._convert.tensorflow.TensorSpecInfo` (artifact layout)."""
    return [Port(s.name, tuple(s.artifact_perm)) for s in specs]


@dataclass(frozen=True)
class Job:
    """One model to run in a child: the flatbuffer, its signature ports and the batch it is fed at."""

    model: bytes
    inputs: list[Port]
    outputs: list[Port]
    batch: int | None


def run(model: bytes, inputs: list[Port], outputs: list[Port], arrays: list[np.ndarray], batch: int | None,
        *, timeout: float = 600) -> list[np.ndarray]:
    """Outputs (PyTorch layout) of ``model``'s ``serving_default`` signature on PyTorch-layout ``arrays``,
    fed ``batch`` samples at a time (any count when None). Raises :class:`InterpreterAborted`."""
    background = Background([Job(model, inputs, outputs, batch)], arrays, timeout=timeout)
    try:
        return background.result(0)
    finally:
        background.close()


class Background:
    """Several jobs on the same arrays in *one* child process, started at construction; the caller works
    meanwhile and collects with :meth:`result`.

    One child instead of one per job saves a process start and the LiteRT import per job. If the child
    dies, the jobs it finished keep their results; each other job is re-run in a child of its own, so the
    job that aborts is the one that fails (and only it)."""

    def __init__(self, jobs: list[Job], arrays: list[np.ndarray], *, timeout: float = 600) -> None:
        self.jobs, self.arrays, self.timeout = jobs, arrays, timeout
        self._work = tempfile.TemporaryDirectory(prefix="tflite-run-")
        self._dir = Path(self._work.name)
        (self._dir / "request.pkl").write_bytes(pickle.dumps((jobs, arrays), protocol=pickle.HIGHEST_PROTOCOL))
        self._child = children.start("converter._proc.isolated", str(self._dir), extra_env={"TF_CPP_MIN_LOG_LEVEL": "3"})
        self._returncode: int | None = None

    def result(self, index: int) -> list[np.ndarray]:
        """Outputs of job ``index``; raises :class:`InterpreterAborted` when the interpreter fails on it."""
        reply = self._dir / f"reply-{index}.pkl"
        if self._returncode is None:
            # ``timeout`` is per job: the child runs them one after another
            code = self._child.wait(self.timeout * len(self.jobs))
            self._returncode = code if code is not None else self._child.proc.returncode
        if reply.exists():
            return pickle.loads(reply.read_bytes())
        if len(self.jobs) > 1:  # the shared child died before this job: alone, it fails only for its own sake
            job = self.jobs[index]
            return run(job.model, job.inputs, job.outputs, self.arrays, job.batch, timeout=self.timeout)
        last = self._child.last_line() or f"exit status {self._returncode}"
        raise InterpreterAborted(f"the TFLite interpreter failed on this model: {last[:200]}")

    def close(self) -> None:
        """Stop the child if it still runs and remove its files."""
        self._child.close()
        self._work.cleanup()


def _invoke(model: bytes, inputs: list[Port], outputs: list[Port], arrays: list[np.ndarray],
            batch: int | None) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model).get_signature_runner("serving_default")
    # each input as the file declares it: token ids stay int64/int32, masks bool, images float32
    dtypes = {name: detail["dtype"] for name, detail in runner.get_input_details().items()}
    pieces = []
    for real, part in chunks(arrays, batch):
        result = runner(**{p.name: np.ascontiguousarray(np.transpose(x, p.perm)).astype(dtypes.get(p.name, np.float32))
                           for p, x in zip(inputs, part)})
        pieces.append([np.transpose(np.asarray(result[o.name]), np.argsort(o.perm))[:real] for o in outputs])
    return [np.concatenate([p[k] for p in pieces]) for k in range(len(outputs))]


def _main(work: str) -> None:
    """Child: run each job in order, writing ``reply-K.pkl`` (atomically) as soon as job K is done."""
    children.die_with_parent()
    jobs, arrays = pickle.loads((Path(work) / "request.pkl").read_bytes())
    for k, job in enumerate(jobs):
        result = _invoke(job.model, job.inputs, job.outputs, arrays, job.batch)
        partial = Path(work) / f"reply-{k}.tmp"
        partial.write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(partial, Path(work) / f"reply-{k}.pkl")


if __name__ == "__main__":
    _main(sys.argv[1])
