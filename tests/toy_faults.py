"""Toy models that crash their process natively, loaded as ``tests.toy_faults:NAME`` (module:callable sources).

They stand in for real models whose loading segfaults in some processes: a Hugging Face model imports
``torch._dynamo`` (and triton) when it loads, which kills a process that has imported TensorFlow first.
"""

from __future__ import annotations

import os
import signal
import sys

import torch
from torch import nn


class TinyNet(nn.Module):
    """Conv2d + Linear on a 1x3x8x8 input: enough modules for localisation to check."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _segfault(why: str) -> None:
    """Die as a native crash does: no Python exception, no traceback, a signal for an exit status."""
    print(f"toy_faults: {why}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def crashes_beside_tensorflow() -> nn.Module:
    """A TinyNet whose loading segfaults in a process that has imported TensorFlow (as ``torch._dynamo`` does)."""
    if "tensorflow" in sys.modules:
        _segfault("loaded after TensorFlow")
    torch.manual_seed(0)
    return TinyNet()


def crashes_in_localisation() -> nn.Module:
    """A TinyNet that loads in the PyTorch stage but segfaults in the localisation child, wherever it imports."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "converter.diagnosis.localisechild":
        _segfault("crashing the localisation child")
    torch.manual_seed(0)
    return TinyNet()
