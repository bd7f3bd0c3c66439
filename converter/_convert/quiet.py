"""Keep TensorFlow / absl / CUDA start-up chatter off the user's terminal unless they ask for it.

Must run before ``import tensorflow`` anywhere in the process: the C++ logger reads its level once.
"""

from __future__ import annotations

import contextlib
import gc
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


#: Optional imports TensorFlow's stack makes at load time and a conversion never uses, each inside a
#: ``try: import … except ImportError`` fallback (measured with ``-X importtime``): tf_keras' data adapter tries
#: pandas (0.37 s; installed here for mlxtend); TF's and tf_keras' v1 training loops try ``scipy.sparse`` and
#: tf_keras' image augmentation scipy (~0.2 s of wall time). (requests, 0.06 s, is not optional: TF imports it
#: bare.) Refused only in a process the toolkit owns (:func:`own_process`): the modules that tried them keep
#: their fallback (``pd = None``) for the process's life, which a library caller's own code must not inherit.
UNUSED_OPTIONAL_IMPORTS = ("pandas", "scipy")
_owned = False


def own_process() -> None:
    """Declare this process the toolkit's own (the ``convert`` command, the int8 child): TensorFlow then
    loads without :data:`UNUSED_OPTIONAL_IMPORTS`."""
    global _owned
    _owned = True


def exit_without_teardown(code: int) -> None:
    """End one of the toolkit's own processes once its files are written and closed: the atexit hooks run
    (logging.shutdown, autograph's temp-file removal), the interpreter's teardown of TensorFlow's / torch's
    module graph (0.3-0.9 s on 2 cores, measured) is skipped."""
    import atexit

    atexit._run_exitfuncs()  # noqa: SLF001 — the documented hooks
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; afterwards every object alive is frozen (``gc.freeze``).

    For big imports: TensorFlow + onnx2tf create ~480 k long-lived objects, and the collector's full passes over
    them while they load cost ~17 % of the import's CPU (3.2 -> 2.7 s on the 2-core VM). Frozen, they are never
    traversed again by later collections; module-level objects live as long as the process anyway."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def import_tensorflow(verbose: bool = False):
    """Import TensorFlow (and onnx2tf) with absl's start-up banner, which goes straight to fd 2, hidden.

    In a process the toolkit owns (:func:`own_process`) the :data:`UNUSED_OPTIONAL_IMPORTS` are refused *while*
    TensorFlow loads (their ``sys.modules`` entry is ``None``), so tf_keras takes its no-pandas, no-scipy
    paths; afterwards they import normally again.
    The collector is paused while they load (:func:`gc_paused`)."""
    quiet_tensorflow(verbose)
    if "tensorflow" in sys.modules and "onnx2tf" in sys.modules:
        return sys.modules["tensorflow"]
    blocked = [name for name in UNUSED_OPTIONAL_IMPORTS if _owned and name not in sys.modules]
    try:
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # makes ``import name`` raise ImportError
        with silenced(verbose), gc_paused():
            import onnx2tf  # noqa: F401
            import tensorflow as tf
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return tf
