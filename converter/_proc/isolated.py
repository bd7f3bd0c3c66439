"""Run a TFLite flatbuffer (or an ONNX graph) in a child process, so an interpreter that aborts cannot take the
caller down, and so the caller works meanwhile.

Why: some int8 graphs are rejected by XNNPACK ("failed to prepare", a clean ``RuntimeError``) and, once a
neighbouring op stays float so XNNPACK no longer claims them, crash the reference kernels with SIGABRT
(seen on resnet18 with batch-norm-calibrated random weights: int8 ``ADD`` of a residual whose two
inputs' scales differ by orders of magnitude). Searching over quantisation variants runs many such models;
each runs here in ``python -m converter._proc.isolated`` and a crash becomes :class:`InterpreterAborted`.

The child imports only NumPy and LiteRT (no TensorFlow; onnxruntime for an ONNX job), so one call costs well
under a second on top of the inference itself. Parity also runs its onnxruntime rows here: on the other core,
beside the TensorFlow work of the caller (:mod:`converter.parity.offprocess`).
"""

from __future__ import annotations

import os
import pickle
import queue
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter._convert.batches import chunks
from converter._convert import memory
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
    """One model to run in a child: the flatbuffer (``runtime="tflite"``, its ``serving_default`` signature) or
    the ONNX graph (``"onnxruntime"``), its ports (fed and read by name) and the batch it is fed at. ``model`` is
    the file's bytes, or the path of a file that stays unchanged until the job's result is read: the child then
    reads it itself and the parent never holds a copy (a zoo model's four artifacts: ~0.4 GiB)."""

    model: bytes | Path
    inputs: list[Port]
    outputs: list[Port]
    batch: int | None
    runtime: str = "tflite"
    #: the samples [start, stop) of the arrays this job runs; None: all of them
    samples: tuple[int, int] | None = None


def run(model: bytes, inputs: list[Port], outputs: list[Port], arrays: list[np.ndarray], batch: int | None,
        *, timeout: float = 600) -> list[np.ndarray]:
    """Outputs (PyTorch layout) of ``model``'s ``serving_default`` signature on PyTorch-layout ``arrays``,
    fed ``batch`` samples at a time (any count when None). Raises :class:`InterpreterAborted`."""
    return _alone(Job(model, inputs, outputs, batch), arrays, timeout)


def _alone(job: Job, arrays: list[np.ndarray], timeout: float) -> list[np.ndarray]:
    background = Background([job], arrays, timeout=timeout)
    try:
        return background.result(0)
    finally:
        background.close()


class Background:
    """Several jobs on the same arrays in *one* child process, started at construction; the caller works
    meanwhile, may :meth:`submit` more jobs while the child runs the first ones, and collects with :meth:`result`.

    One child instead of one per job saves a process start and the LiteRT import per job. If the child
    dies, the jobs it finished keep their results; each other job is re-run in a child of its own, so the
    job that aborts is the one that fails (and only it)."""

    def __init__(self, jobs: list[Job], arrays: list[np.ndarray], *, timeout: float = 600) -> None:
        self.jobs: list[Job] = []
        self.arrays, self.timeout = arrays, timeout
        self._work = tempfile.TemporaryDirectory(prefix="tflite-run-")
        self._dir = Path(self._work.name)
        (self._dir / "arrays.pkl").write_bytes(pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL))
        # job K is the file job-K.pkl, announced by the line "K RUNTIME" on the child's stdin; closing it means:
        # no more
        self._child = children.start("converter._proc.isolated", str(self._dir), stdin=True,
                                     extra_env={"TF_CPP_MIN_LOG_LEVEL": "3"})
        self._returncode: int | None = None
        #: jobs this process took before the child started them (:meth:`take`): outputs, or why they failed
        self._taken: dict[int, list[np.ndarray] | str] = {}
        for job in jobs:
            self.submit(job)

    def submit(self, job: Job) -> int:
        """Queue ``job`` behind the others; returns its index for :meth:`result`."""
        if self._returncode is not None:
            raise RuntimeError("submit after result: the child has ended")
        index = len(self.jobs)
        self.jobs.append(job)
        partial = self._dir / f"job-{index}.tmp"
        partial.write_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(partial, self._dir / f"job-{index}.pkl")
        try:
            self._child.proc.stdin.write(f"{index} {job.runtime}\n".encode())
            self._child.proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # the child died: result() re-runs this job alone
            pass
        return index

    def take(self, index: int) -> bool:
        """Run onnxruntime job ``index`` in this process if the child has not started it (whoever renames its file
        first runs it; the child skips a job it finds gone): False when the child had, or for a TFLite job, which
        stays in the child (an interpreter abort there fails one row, here it would end the conversion)."""
        job = self.jobs[index]
        if job.runtime != "onnxruntime":
            return False
        try:
            os.rename(self._dir / f"job-{index}.pkl", self._dir / f"job-{index}.taken")
        except FileNotFoundError:
            return False
        try:
            self._taken[index] = _invoke(job, self.arrays)
        except Exception as exc:  # onnxruntime refusing the graph: the row fails as it would in the child
            self._taken[index] = " ".join(f"{type(exc).__name__}: {exc}".split())
        return True

    def result(self, index: int) -> list[np.ndarray]:
        """Outputs of job ``index``; raises :class:`InterpreterAborted` when the interpreter fails on it. The first
        call ends the queue and waits for the child to finish every job."""
        if index in self._taken:
            taken = self._taken[index]
            if isinstance(taken, str):
                raise InterpreterAborted(f"onnxruntime failed on this model: {taken[:200]}")
            return taken
        reply = self._dir / f"reply-{index}.pkl"
        if self._returncode is None:
            try:
                self._child.proc.stdin.close()
            except BrokenPipeError:
                pass
            # ``timeout`` is per job: the child runs them one after another
            code = self._child.wait(self.timeout * len(self.jobs))
            self._returncode = code if code is not None else self._child.proc.returncode
        what = "onnxruntime" if self.jobs[index].runtime == "onnxruntime" else "the TFLite interpreter"
        if reply.exists():
            return pickle.loads(reply.read_bytes())
        if reply.with_suffix(".err").exists():  # a clean exception: the child went on with the next job
            raise InterpreterAborted(f"{what} failed on this model: {reply.with_suffix('.err').read_text()[:200]}")
        if len(self.jobs) > 1:  # the shared child died before this job: alone, it fails only for its own sake
            return _alone(self.jobs[index], self.arrays, self.timeout)
        last = self._child.last_line() or f"exit status {self._returncode}"
        raise InterpreterAborted(f"{what} failed on this model: {last[:200]}")

    def close(self) -> None:
        """Stop the child if it still runs and remove its files."""
        self._child.close()
        self._work.cleanup()


def _invoke(job: Job, arrays: list[np.ndarray]) -> list[np.ndarray]:
    if job.samples is not None:
        arrays = [x[slice(*job.samples)] for x in arrays]
    return feed(job, onnxruntime_fn(job.model, job.outputs) if job.runtime == "onnxruntime" else _tflite(job.model),
                arrays)


def feed(job: Job, run_one, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``arrays`` (PyTorch layout) through ``run_one`` (a feed dict -> outputs by name, e.g. :func:`onnxruntime_fn`)
    ``job.batch`` samples at a time, each port transposed to the model's layout and back."""
    pieces = []
    for real, part in chunks(arrays, job.batch):
        result = run_one({p.name: np.ascontiguousarray(np.transpose(x, p.perm)) for p, x in zip(job.inputs, part)})
        pieces.append([np.transpose(np.asarray(result[o.name]), np.argsort(o.perm))[:real] for o in job.outputs])
    return [np.concatenate([p[k] for p in pieces]) for k in range(len(job.outputs))]


def _tflite(model: bytes | Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model)) if isinstance(model, Path) else Interpreter(model_content=model)
    runner = interpreter.get_signature_runner("serving_default")
    # each input as the file declares it: token ids stay int64/int32, masks bool, images float32
    dtypes = {name: detail["dtype"] for name, detail in runner.get_input_details().items()}
    return lambda feed: runner(**{name: x.astype(dtypes.get(name, np.float32), copy=False) for name, x in feed.items()})


def onnxruntime_fn(model: bytes | Path, outputs: list[Port]):
    """An onnxruntime session on ``model`` as a feed dict -> outputs by name; raises when onnxruntime refuses it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # one thread, and no spinning while it waits: parity's child and the TensorFlow process share the machine
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model) if isinstance(model, Path) else model, options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in outputs]
    return lambda feed: dict(zip(names, session.run(names, feed)))


def _announced(stream) -> Iterator[list[tuple[int, str]]]:
    """The jobs announced on ``stream`` ("K RUNTIME" lines) and not yet handed out, as a list :func:`_main` takes
    from; it blocks only while the list is empty, and ends when the stream closes and the list is empty."""
    arrived: queue.Queue[tuple[int, str] | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            index, _, runtime = line.strip().partition(" ")
            arrived.put((int(index), runtime or "tflite"))
        arrived.put(None)

    threading.Thread(target=read, daemon=True).start()
    pending: list[tuple[int, str]] = []
    closed = False
    while pending or not closed:
        if not pending:
            got = arrived.get()
            if got is None:
                return
            pending.append(got)
        while True:
            try:
                got = arrived.get_nowait()
            except queue.Empty:
                break
            if got is None:
                closed = True
                break
            pending.append(got)
        yield pending


def _main(work: str) -> None:
    """Child: run the jobs announced on stdin ("K RUNTIME"), writing ``reply-K.pkl`` (atomically) as soon as one is
    done, or ``reply-K.err`` with the exception's line when the runtime raises; end when stdin closes.

    Of the jobs waiting, a TFLite one goes first: the parent may run an onnxruntime job it finds unstarted
    (:meth:`Background.take`), never a TFLite one, so those are what only this process can do."""
    children.die_with_parent()
    arrays = pickle.loads((Path(work) / "arrays.pkl").read_bytes())
    for pending in _announced(sys.stdin):
        k, runtime = next((job for job in pending if job[1] == "tflite"), pending[0])
        pending.remove((k, runtime))
        try:  # claim the job; the parent may have taken it first (Background.take)
            os.rename(Path(work) / f"job-{k}.pkl", Path(work) / f"job-{k}.run")
        except FileNotFoundError:
            continue
        try:
            reply = pickle.dumps(_invoke(pickle.loads((Path(work) / f"job-{k}.run").read_bytes()), arrays),
                                 protocol=pickle.HIGHEST_PROTOCOL)
            name = f"reply-{k}.pkl"
        except Exception as exc:  # e.g. XNNPACK "failed to prepare", onnxruntime refusing a graph
            reply, name = " ".join(f"{type(exc).__name__}: {exc}".split()).encode(), f"reply-{k}.err"
        partial = Path(work) / f"reply-{k}.tmp"
        partial.write_bytes(reply)
        os.replace(partial, Path(work) / name)
        del reply
        # what the job's session or interpreter freed stays in glibc's heap until trimmed, and this process then
        # waits for the next artifact beside the others' peaks (convnext_tiny's onnxruntime half: 0.27 -> 0.1 GiB)
        memory.trim()


if __name__ == "__main__":
    _main(sys.argv[1])
