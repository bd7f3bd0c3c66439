"""Importing TensorFlow for a conversion: quiet, and without the optional imports a conversion never uses."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
from converter._convert.quiet import import_tensorflow, own_process, UNUSED_OPTIONAL_IMPORTS
if sys.argv[1] == "owned":
    own_process()
import_tensorflow()
skipped = [m for m in UNUSED_OPTIONAL_IMPORTS if m in sys.modules]
import pandas, scipy.sparse  # importable afterwards either way, for anyone who needs them
import tf_keras.src.engine.data_adapter as adapter
import tf_keras.src.engine.training_v1 as training_v1
print(skipped, adapter.pd is None, training_v1.issparse is None, pandas.__name__, scipy.__name__)
"""


@pytest.mark.parametrize(("process", "expected"), [
    # the convert command's own process: refused while TF loads (pandas 0.37 s, scipy ~0.2 s), tf_keras takes
    # its fallbacks, and both import normally afterwards
    ("owned", "[] True True pandas scipy"),
    # a library caller's process: nothing refused, so its own tf_keras code keeps pandas / scipy support
    ("library", "['pandas', 'scipy'] False False pandas scipy"),
])
def test_tensorflow_loads_without_unused_optional_imports_only_in_owned_process(process: str, expected: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, process], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == expected
    assert "oneDNN" not in done.stderr and "cuda" not in done.stderr.lower(), done.stderr[-500:]


@pytest.mark.parametrize(("enabled_before", "raises"), [(True, False), (False, False), (True, True)])
def test_gc_paused_restores_the_collector_and_freezes_what_was_built(enabled_before: bool, raises: bool) -> None:
    """The collector is off inside the block (TF's import: -17 % CPU), back to its former state after, even on an
    error; objects alive at the end are frozen, so later collections do not traverse them."""
    from converter._convert.quiet import gc_paused

    (gc.enable if enabled_before else gc.disable)()
    try:
        frozen_before = gc.get_freeze_count()
        with contextlib.suppress(RuntimeError), gc_paused():
            assert not gc.isenabled()
            built = [[i] for i in range(1000)]  # 1001 new tracked containers
            if raises:
                raise RuntimeError("import failed")
        assert gc.isenabled() is enabled_before
        assert gc.get_freeze_count() >= frozen_before + len(built)
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.parametrize(("precisions", "parity", "loaded"), [
    (("fp32",), False, ""),
    (("fp32", "fp16"), False, "ai_edge_quantizer"),
    (("fp32",), True, "tf2onnx"),
])
def test_preload_imports_what_the_requested_stages_import_first(precisions, parity, loaded: str) -> None:
    """While the PyTorch child exports, the TF process imports the fp16 cast's quantiser and parity's tf2onnx too,
    only when the conversion will use them."""
    script = (f"import sys\nfrom converter._convert.tensorflow import preload\npreload(False, {precisions!r}, {parity})\n"
              "print(','.join(m for m in ('ai_edge_quantizer', 'tf2onnx') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == loaded
