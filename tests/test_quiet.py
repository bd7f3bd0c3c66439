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
from converter.quiet import import_tensorflow, UNUSED_OPTIONAL_IMPORTS
import_tensorflow()
skipped = [m for m in UNUSED_OPTIONAL_IMPORTS if m in sys.modules]
import pandas  # still importable afterwards, for anyone who needs it
import tf_keras.src.engine.data_adapter as adapter
print(skipped, adapter.pd is None, pandas.__name__)
"""


def test_tensorflow_loads_without_pandas_which_stays_importable() -> None:
    """tf_keras' data adapter tries ``import pandas`` (0.37 s) inside a try/except: refused while TF loads,
    so tf_keras takes its no-pandas path; the refusal is lifted after, and nothing is printed."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] True pandas"
    assert "oneDNN" not in done.stderr and "cuda" not in done.stderr.lower(), done.stderr[-500:]


@pytest.mark.parametrize(("enabled_before", "raises"), [(True, False), (False, False), (True, True)])
def test_gc_paused_restores_the_collector_and_freezes_what_was_built(enabled_before: bool, raises: bool) -> None:
    """The collector is off inside the block (TF's import: -17 % CPU), back to its former state after, even on an
    error; objects alive at the end are frozen, so later collections do not traverse them."""
    from converter.quiet import gc_paused

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
