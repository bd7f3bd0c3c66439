"""The guide's MNIST network, corrected, in PyTorch and in Keras with the same layer names.

The guide prints ``Conv2d(1, 32, 3) -> fc1(32*13*13, 128)`` but a 3x3 conv on 28x28 gives 26x26; the
corrected net pools 2x2 after the conv, so fc1 really sees 32*13*13 = 5408 features, and adds the
missing 10-class head:

    Conv(1->32, 3x3) -> ReLU -> MaxPool 2x2 -> Flatten -> Dense 128 -> ReLU -> Dense 10 (logits)

Layer names (``conv1``, ``fc1``, ``fc2``) are shared by both frameworks so porting weights is mechanical
(see ``reference_models.port``).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from reference_models.mnist_keras import (  # noqa: F401  (re-exported: one place for the architecture)
    CONV_CHANNELS,
    HIDDEN,
    IMAGE_SHAPE_NCHW,
    IMAGE_SHAPE_NHWC,
    NUM_CLASSES,
    POOLED,
    build_keras_model,
    build_keras_subclassed,
)


class MnistCNN(nn.Module):
    """PyTorch form: input ``[B, 1, 28, 28]`` float32 (normalised to [-1, 1]), output ``[B, 10]`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, CONV_CHANNELS, kernel_size=3, stride=1)
        self.fc1 = nn.Linear(CONV_CHANNELS * POOLED * POOLED, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)
