"""Keep TensorFlow / absl / CUDA start-up chatter off the user's terminal unless they ask for it.

One module for the converter and the reference trainers (:mod:`reference_models.quiet` re-exports it).
:func:`quiet_tensorflow` must run before ``import tensorflow`` anywhere in the process: the C++ logger reads its
level once. A library caller's process keeps its warning filters and garbage collector as it had them: what is
process-wide (warning filters, ``gc.freeze``, refused optional imports) happens only in a process the toolkit
owns (:func:`own_process`: the ``convert`` and ``train-reference`` commands and the toolkit's child processes).
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import random
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

#: Modules whose Python warnings (any category) say nothing actionable to our users.
_NOISY_MODULES = ("tensorflow", "keras", "tf_keras", "absl", "google.protobuf", "onnx2tf", "tf2onnx", "h5py")
_owned = False
_quiet = False  # quiet_tensorflow(verbose=False) ran: own_process() then quiets the process too


def quiet_tensorflow(verbose: bool = False, *, fixed_rounding: bool = True) -> None:
    """Silence TF's C++ logs, absl, CUDA probing, the stack's loggers and, in a process the toolkit owns, its
    Python warnings (idempotent; changes nothing with ``verbose``).

    The environment (read once, when TensorFlow loads) and the loggers are set in any process. Warning filters
    act on every later warning of the process, so they are installed only in one the toolkit owns
    (:func:`own_process`, now or once it is declared); in a library caller's process the chatty calls run inside
    :func:`silenced`, which hides their warnings for the block only.
    ``fixed_rounding`` (default): oneDNN off, since it changes float rounding between runs and parity would count
    that as error; the reference trainers pass False (their speed matters, bitwise repeatability does not).
    """
    global _quiet
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if fixed_rounding:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    for name in (*_NOISY_MODULES, "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _quiet = True
    if _owned:
        _quiet_process()


def _quiet_process() -> None:
    """The process-wide part of :func:`quiet_tensorflow` (idempotent: ``filterwarnings`` drops duplicates)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for module in _NOISY_MODULES:
        warnings.filterwarnings("ignore", module=module)
    absl_logging = sys.modules.get("absl.logging")  # loaded with TensorFlow; importing it for this alone: ~30 ms
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.ERROR)


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


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send what native code writes to fd 2 into a temp file for the duration; replay it if the body raises.

    TensorFlow logs through absl *before* ``absl::InitializeLog()`` runs, straight to fd 2, and no environment
    variable turns all of that off. For an import whose failure must still be explained (the trainers');
    :func:`silenced` is for chatty calls whose output becomes an error message. Python's own ``sys.stderr``
    writes inside the block are flushed first and captured the same way, so keep the block short. Does nothing
    when ``enabled`` is false or fd 2 cannot be duplicated.
    """
    if not enabled:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


#: Optional imports TensorFlow's stack makes at load time and a conversion never uses, each inside a
#: ``try: import … except ImportError`` fallback (measured with ``-X importtime``): tf_keras' data adapter tries
#: pandas (0.37 s; installed here for mlxtend); TF's and tf_keras' v1 training loops try ``scipy.sparse`` and
#: tf_keras' image augmentation scipy (~0.2 s of wall time). (requests, 0.06 s, is not optional: TF imports it
#: bare.) Refused only in a process the toolkit owns (:func:`own_process`): the modules that tried them keep
#: their fallback (``pd = None``) for the process's life, which a library caller's own code must not inherit.
UNUSED_OPTIONAL_IMPORTS = ("pandas", "scipy")


def own_process() -> None:
    """Declare this process the toolkit's own (the ``convert`` and ``train-reference`` commands, the int8 and
    localisation children): :func:`quiet_tensorflow` installs its warning filters (at once if it already ran),
    :func:`import_tensorflow` refuses :data:`UNUSED_OPTIONAL_IMPORTS` and freezes what the import built."""
    global _owned
    _owned = True
    if _quiet:
        _quiet_process()


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
def gc_paused(freeze: bool = True) -> Iterator[None]:
    """No cyclic garbage collection inside the block; afterwards, with ``freeze``, every object alive is frozen
    (``gc.freeze``), and the collector is back in the state it was in.

    For big imports: TensorFlow + onnx2tf create ~480 k long-lived objects, and the collector's full passes over
    them while they load cost ~17 % of the import's CPU (3.2 -> 2.7 s on the 2-core VM). Frozen, they are never
    traversed again by later collections; module-level objects live as long as the process anyway. Freezing is
    for the toolkit's own processes (a library caller's objects would be frozen with them): elsewhere pass
    ``freeze=False``."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


def import_tensorflow(verbose: bool = False):
    """Import TensorFlow (and onnx2tf) with absl's start-up banner, which goes straight to fd 2, hidden.

    In a process the toolkit owns (:func:`own_process`) the :data:`UNUSED_OPTIONAL_IMPORTS` are refused *while*
    TensorFlow loads (their ``sys.modules`` entry is ``None``), so tf_keras takes its no-pandas, no-scipy
    paths; afterwards they import normally again.
    The collector is paused while they load; in an owned process what they built is then frozen (:func:`gc_paused`).
    onnx2tf's import tells the process to ignore every warning (``warnings.simplefilter("ignore")``, RuntimeWarning
    and FutureWarning too, measured with onnx2tf 1.28.8); a library caller's filters are put back after it, an
    owned process keeps them (the command's terminal stays as quiet as it always was). Both imports also reseed
    ``random`` and NumPy's global generator: :func:`global_rngs_kept`.
    The reference trainers import TensorFlow with its Keras instead (:func:`import_tensorflow_keras`)."""
    quiet_tensorflow(verbose)
    if "tensorflow" in sys.modules and "onnx2tf" in sys.modules:
        return sys.modules["tensorflow"]
    blocked = [name for name in UNUSED_OPTIONAL_IMPORTS if _owned and name not in sys.modules]
    try:
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # makes ``import name`` raise ImportError
        with silenced(verbose), gc_paused(freeze=_owned), global_rngs_kept():
            import tensorflow as tf

            with contextlib.nullcontext() if _owned else warnings.catch_warnings():
                import onnx2tf  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    if _owned and _quiet:
        _quiet_process()  # absl's Python logger exists now
    return tf


@contextlib.contextmanager
def global_rngs_kept() -> Iterator[None]:
    """In a library caller's process, ``random``'s and NumPy's global generators are back as they were after the
    block: onnx2tf seeds both (``random.seed(0)``, ``np.random.seed(0)``) when it loads and when each of its op
    modules loads, during its first conversions; importing TensorFlow moves them too. A process the toolkit owns
    keeps onnx2tf's seeding, as it always did (the conversion is then the same as it always was)."""
    if _owned:
        yield
        return
    import numpy as np

    states = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])


def import_tensorflow_keras(verbose: bool = False, *, legacy_keras: bool = False) -> ModuleType:
    """Import and return ``tensorflow`` quietly, with its Keras (the reference trainers; no onnx2tf).

    ``legacy_keras`` makes ``tf.keras`` the ``tf_keras`` package (Keras 2): the multi-worker route needs it,
    because Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy`` fails on ``PerReplica`` inputs. It only
    takes effect if TensorFlow was not imported yet in this process.
    """
    if legacy_keras:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    quiet_tensorflow(verbose, fixed_rounding=False)
    with native_stderr_silenced(not verbose):
        import tensorflow as tf

        if legacy_keras:
            import tf_keras  # noqa: F401  (loads its native parts while fd 2 is still silenced)
        else:
            import keras  # noqa: F401
    if _owned and _quiet:
        _quiet_process()  # absl's Python logger exists now
    return tf
