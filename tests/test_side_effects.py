"""A library call leaves the caller's process as it found it: ``converter.api.convert`` in-process does not change
the caller's warning filters, garbage collector, random generators, working directory or TFLite converter class.

Process-wide settings (warning filters, ``gc.freeze``) are for the toolkit's own processes only
(:func:`converter._convert.quiet.own_process`); this test's process is a library caller's.
"""

from __future__ import annotations

# TensorFlow adds warning filters of its own when it is imported (scipy, urllib3): the caller's process has them
# before the snapshot, as any program that imports TensorFlow does. torchvision first, as conftest.py requires.
import torchvision  # noqa: F401  isort: skip
import tensorflow  # noqa: F401  isort: skip

import gc
import os
import random
import warnings

import numpy as np
import torch

from converter._convert.sources import LoadedModel
from converter.api import convert
from converter.options import ConvertOptions


def _snapshot() -> dict:
    from tensorflow.lite.python.lite import TFLiteConverterBase

    return {
        "warning filters": list(warnings.filters),
        "gc enabled": gc.isenabled(),
        "gc freeze count": gc.get_freeze_count(),
        "torch rng": torch.random.get_rng_state().clone(),
        "python rng": random.getstate(),
        "numpy rng": np.random.get_state(),
        "cwd": os.getcwd(),
        "TFLiteConverterBase._original_model_type": TFLiteConverterBase._original_model_type,  # noqa: SLF001
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple) and a and isinstance(a[0], str):  # np.random.get_state(): ('MT19937', keys, ...)
        return all(np.array_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_convert_leaves_the_callers_process_as_it_found_it(tmp_path) -> None:
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    module = torch.nn.Linear(4, 3).eval()
    model = LoadedModel("tiny", "callable", module, default_input_shapes=((1, 4),))
    before = _snapshot()

    result = convert(model, out_dir=tmp_path / "out", options=ConvertOptions(precisions=("fp32",), parity_samples=8),
                     input_shapes=[(1, 4)])

    after = _snapshot()
    assert result.parity is not None and result.parity.passed, result.parity
    changed = [key for key in before if not _same(before[key], after[key])]
    assert not changed, {key: (before[key], after[key]) for key in changed if key != "torch rng"}
