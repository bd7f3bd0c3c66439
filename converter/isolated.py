"""Run a TFLite flatbuffer in a child process, so an interpreter that aborts cannot take the caller down.

Why: some int8 graphs are rejected by XNNPACK ("failed to prepare", a clean ``RuntimeError``) and, once a
neighbouring op stays float so XNNPACK no longer claims them, crash the reference kernels with SIGABRT
(seen on resnet18 with batch-norm-calibrated random weights: int8 ``ADD`` of a residual whose two
inputs' scales differ by orders of magnitude). Searching over quantisation variants runs many such models;
each runs here in ``python -m converter.isolated`` and a crash becomes :class:`InterpreterAborted`.

The child imports only NumPy and LiteRT (no TensorFlow), so one call costs well under a second on top of
the inference itself.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class InterpreterAborted(RuntimeError):
    """The TFLite interpreter refused the model or killed its process."""


@dataclass(frozen=True)
class Port:
    """One signature input or output: its name and the permutation from the PyTorch layout."""

    name: str
    perm: tuple[int, ...]


def ports(specs) -> list[Port]:
    """``Port`` of every :class:`converter.tensorflow.TensorSpecInfo` (artifact layout)."""
    return [Port(s.name, tuple(s.artifact_perm)) for s in specs]


def run(model: bytes, inputs: list[Port], outputs: list[Port], arrays: list[np.ndarray], batch: int | None,
        *, timeout: float = 600) -> list[np.ndarray]:
    """Outputs (PyTorch layout) of ``model``'s ``serving_default`` signature on PyTorch-layout ``arrays``,
    fed ``batch`` samples at a time (any count when None). Raises :class:`InterpreterAborted`."""
    with tempfile.TemporaryDirectory(prefix="tflite-run-") as work:
        request, reply = Path(work) / "request.pkl", Path(work) / "reply.pkl"
        request.write_bytes(pickle.dumps((model, inputs, outputs, arrays, batch), protocol=pickle.HIGHEST_PROTOCOL))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, "-m", "converter.isolated", str(request), str(reply)],
                              capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=str(Path(__file__).resolve().parents[1]))
        if done.returncode != 0 or not reply.exists():
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise InterpreterAborted(f"the TFLite interpreter failed on this model: {last[:200]}")
        return pickle.loads(reply.read_bytes())


def _invoke(model: bytes, inputs: list[Port], outputs: list[Port], arrays: list[np.ndarray],
            batch: int | None) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model).get_signature_runner("serving_default")
    n = len(arrays[0])
    size = batch or n
    pieces = []
    for start in range(0, n, size):
        part = [x[start:start + size] for x in arrays]
        real = len(part[0])
        if real < size:
            part = [np.concatenate([p, np.repeat(p[:1], size - real, axis=0)]) for p in part]
        result = runner(**{p.name: np.ascontiguousarray(np.transpose(x, p.perm)).astype(np.float32)
                           for p, x in zip(inputs, part)})
        pieces.append([np.transpose(np.asarray(result[o.name]), np.argsort(o.perm))[:real] for o in outputs])
    return [np.concatenate([p[k] for p in pieces]) for k in range(len(outputs))]


def _main(request: str, reply: str) -> None:
    model, inputs, outputs, arrays, batch = pickle.loads(Path(request).read_bytes())
    result = _invoke(model, inputs, outputs, arrays, batch)
    Path(reply).write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
