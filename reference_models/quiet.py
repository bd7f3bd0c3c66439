"""Keep TensorFlow's start-up chatter off the user's terminal: the converter's implementation
(:mod:`converter._convert.quiet`), under the names the trainers and their tests import.

``import_tensorflow(verbose, legacy_keras=...)`` imports TensorFlow with its Keras; ``quiet_tensorflow`` must run
before TensorFlow loads; ``native_stderr_silenced`` hides what native code writes to fd 2 (replayed on failure).
"""

from converter._convert.quiet import import_tensorflow_keras as import_tensorflow
from converter._convert.quiet import native_stderr_silenced, own_process, quiet_tensorflow

__all__ = ["import_tensorflow", "native_stderr_silenced", "own_process", "quiet_tensorflow"]
