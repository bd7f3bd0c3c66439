"""Models that output NaN for some inputs, for ``tests/test_data_faults.py`` (loaded as ``tests.toy_data_faults:NAME``).

Their weights are fixed, not random, so the test can count the samples whose output is NaN on the seeded parity
data and expect exactly that count in the report.
"""

from __future__ import annotations

import torch
from torch import nn


class SqrtHead(nn.Module):
    """``sqrt(fc(x) + 1)`` on ``[B, 4]`` -> ``[B, 3]``: NaN wherever a feature of ``fc(x)`` falls below -1, i.e.
    for some N(0,1) samples and not others (the domain error of a real model fed inputs it never saw)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.fc(x) + 1.0)


def sqrt_head() -> nn.Module:
    return SqrtHead()


class LogOfInput(nn.Module):
    """``log(x)`` of an image, ``[B, 2, 4, 4]`` -> ``[B, 2, 4, 4]``: NaN at every negative input (about half of
    N(0,1) data), in a 4-D output whose layout onnx2tf may change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x) * 2.0


def log_of_input() -> nn.Module:
    return LogOfInput()


class NaNCube(nn.Module):
    """A conv whose output, ``[B, 4, 4, 4]``, is NaN everywhere: NCHW and NHWC have the same shape, so nothing
    tells which layout the TF graph returned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sqrt(-torch.ones(()))


def nan_cube() -> nn.Module:
    return NaNCube()
