"""Keep TensorFlow's start-up chatter (C++/absl logs, Python warnings) off the user's terminal.

TensorFlow 2.21 logs through absl *before* ``absl::InitializeLog()`` runs, straight to file descriptor 2,
and no environment variable turns that off (``TF_CPP_MIN_LOG_LEVEL`` only covers part of it). So the quiet
route is: set the environment and warning filters, then import TensorFlow with fd 2 pointed at a temporary
file, and replay that file only if the import fails. After the import, TensorFlow is silent unless
something really goes wrong.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

# Modules whose Python warnings say nothing actionable to our users.
_NOISY_MODULES = ("tensorflow", "keras", "tf_keras", "absl", "google.protobuf", "onnx2tf", "tf2onnx", "h5py")


def quiet_tensorflow(verbose: bool = False) -> None:
    """Silence TensorFlow/absl logging and warnings unless ``verbose``; idempotent, call before the import.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3``, turns the ``tensorflow``/``absl``/``keras`` loggers down to ERROR and
    filters Python warnings raised from those modules. With ``verbose`` it changes nothing.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for module in _NOISY_MODULES:
        warnings.filterwarnings("ignore", module=module)
    for name in _NOISY_MODULES:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging  # a TensorFlow dependency

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send what native code writes to fd 2 into a temp file for the duration; replay it if the body raises.

    Python's own ``sys.stderr`` writes inside the block are flushed first and captured the same way, so
    keep the block short (an import). Does nothing when ``enabled`` is false or fd 2 cannot be duplicated.
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


def import_tensorflow(verbose: bool = False, *, legacy_keras: bool = False) -> ModuleType:
    """Import and return ``tensorflow`` quietly (see the module docstring); also loads its Keras.

    ``legacy_keras`` makes ``tf.keras`` the ``tf_keras`` package (Keras 2): the multi-worker route needs it,
    because Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy`` fails on ``PerReplica`` inputs. It only
    takes effect if TensorFlow was not imported yet in this process.
    """
    if legacy_keras:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    quiet_tensorflow(verbose)
    with native_stderr_silenced(not verbose):
        import tensorflow as tf

        if legacy_keras:
            import tf_keras  # noqa: F401  (loads its native parts while fd 2 is still silenced)
        else:
            import keras  # noqa: F401
    return tf
