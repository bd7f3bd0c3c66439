"""The zoo's own small architectures: the recurrent, attention, U-Net and two-input / two-output shapes that the
torchvision and third-party entries do not cover."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LSTMClassifier(nn.Module):
    """Two-layer batch-first LSTM over (B, T, 16) embeddings; classifies from the last step."""

    def __init__(self, dim: int = 16, hidden: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.rnn = nn.LSTM(dim, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


class GRUTagger(nn.Module):
    """Bidirectional batch-first GRU tagging every step of (B, T, 16) embeddings into 7 tags."""

    def __init__(self, dim: int = 16, hidden: int = 24, tags: int = 7) -> None:
        super().__init__()
        self.rnn = nn.GRU(dim, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.fc(y)


class TransformerClassifier(nn.Module):
    """Two-layer batch-first TransformerEncoder over (B, T, 32); mean-pools real tokens; optional padding mask."""

    def __init__(self, dim: int = 32, heads: int = 4, classes: int = 5, masked: bool = False) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.fc = nn.Linear(dim, classes)
        self.masked = masked

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return self.fc(self.encoder(x).mean(dim=1))
        y = self.encoder(x, src_key_padding_mask=mask < 0.5)
        pooled = (y * mask[:, :, None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        return self.fc(pooled)


class SmallUNet(nn.Module):
    """Two-level U-Net: strided convs down, ConvTranspose2d and bilinear F.interpolate up, torch.cat skips."""

    def __init__(self, channels: int = 3, width: int = 8, classes: int = 2) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = nn.Sequential(nn.Conv2d(4 * width, 2 * width, 3, padding=1), nn.ReLU())
        self.dec1 = nn.Sequential(nn.Conv2d(3 * width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([self.up2(self.mid(e2)), e2], dim=1))
        up1 = F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(self.dec1(torch.cat([up1, e1], dim=1)))


class TwoInTwoOut(nn.Module):
    """An image (B, 3, H, W) and a feature vector (B, 10) in; class logits (B, 5) and a box (B, 4) out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.meta = nn.Sequential(nn.Linear(10, 16), nn.ReLU())
        self.cls = nn.Linear(32, 5)
        self.box = nn.Linear(32, 4)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.conv(image).flatten(1), self.meta(meta)], dim=1)
        return self.cls(h), torch.sigmoid(self.box(h))
