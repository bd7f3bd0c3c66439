"""Keep TensorFlow / absl / CUDA start-up chatter off the user's terminal unless they ask for it.

Must run before ``import tensorflow`` anywhere in the process: the C++ logger reads its level once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator


def quiet_tensorflow(verbose: bool = False) -> None:
    """Silence TF's C++ logs, absl, Python warnings from the stack, and CUDA probing (idempotent)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN changes float rounding between runs
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("tensorflow", "absl", "tf2onnx", "onnx2tf", "h5py", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def silenced(verbose: bool = False) -> Iterator[io.StringIO]:
    """Capture Python-level stdout/stderr *and* the C-level file descriptors 1 and 2.

    Yields a buffer holding what the Python side printed (for error messages). onnx2tf, TFLite's MLIR
    converter and absl write straight to the fds, so redirecting ``sys.stdout`` alone is not enough.
    """
    buffer = io.StringIO()
    if verbose:
        yield buffer
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def import_tensorflow(verbose: bool = False):
    """Import TensorFlow (and onnx2tf) with absl's start-up banner, which goes straight to fd 2, hidden."""
    quiet_tensorflow(verbose)
    with silenced(verbose):
        import onnx2tf  # noqa: F401
        import tensorflow as tf
    return tf
