"""Small models the converter tests load through ``tests.toy_models:NAME`` (module:callable sources)."""

from __future__ import annotations

import time

import torch
from torch import nn


class ImageAndSequence(nn.Module):
    """Two inputs (an NCHW image and a [B, T, C] sequence), two outputs (class logits and a [B, T, C]
    sequence). The sequence must keep its layout in every artifact: onnx2tf would transpose it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.proj = nn.Linear(6, 8)
        self.head = nn.Linear(16, 5)

    def forward(self, image: torch.Tensor, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.relu(self.conv(image)).mean(dim=(2, 3))
        s = torch.tanh(self.proj(seq))
        logits = self.head(torch.cat([img, s.mean(dim=1)], dim=1))
        return logits, s * 2.0


def image_and_sequence() -> nn.Module:
    return ImageAndSequence()


class SegmentationHead(nn.Module):
    """A 4-D output: under --layout nhwc it stays channels-last, under keep it is NCHW again."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def segmentation_head() -> nn.Module:
    return SegmentationHead()


def not_a_module() -> str:
    return "I am a string"


def broken_factory() -> nn.Module:
    raise RuntimeError("factory exploded")


def crashing_factory() -> nn.Module:
    """Kills its process the way a native crash would (no Python exception to catch)."""
    import os
    import sys

    print("toy_models: about to crash natively", file=sys.stderr, flush=True)
    os._exit(7)


class TinyLinear(nn.Module):
    """The smallest model worth converting: [B, 4] -> [B, 3] (fast fault tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def tiny_linear() -> nn.Module:
    return TinyLinear()


class SlowReference(TinyLinear):
    """TinyLinear whose eager forward sleeps 1 s on its first batch of more than one sample (the first chunk of the
    reference outputs on the parity data), not while probed at batch 1 or traced for an export."""

    def __init__(self) -> None:
        super().__init__()
        self.slept = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
        if not exporting and x.shape[0] > 1 and not self.slept:
            self.slept = True
            time.sleep(1.0)
        return self.fc(x)


def slow_reference() -> nn.Module:
    return SlowReference()


class Drifting(TinyLinear):
    """TinyLinear plus how many times it was called: the exported graph bakes in the count of its trace, so
    onnxruntime disagrees with the next eager call (what a module keeping Python-side state does)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x) + float(self.calls)


def drifting() -> nn.Module:
    return Drifting()


class DictOutputs(nn.Module):
    """Returns a dict, which the ONNX tracer refuses as such: its tensors are exported in order."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x), "doubled": x * 2.0}


def dict_outputs() -> nn.Module:
    return DictOutputs()


#: Not a callable: ``tests.toy_models:NOT_CALLABLE`` must be refused by name.
NOT_CALLABLE = 3


class TinyText(nn.Module):
    """Token ids + an attention mask (both int64) -> class logits: the shape of a text classifier's inputs."""

    def __init__(self, vocab: int = 100) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(ids) * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


def tiny_text() -> nn.Module:
    return TinyText()
