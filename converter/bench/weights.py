"""Weights for benchmarking the reference net when no trained ``model.pt`` is given.

Accuracy rows (e.g. "int8 loses <= 0.3 pp") mean nothing on random weights (~10 % accuracy), so the
benchmarks prefer, in order: the weights the user passes; ``train-reference --framework torch``; and
failing that a quick stand-in trained here on the 4,500 embedded training digits (never on the 10k test
set the benchmarks evaluate on). The stand-in is for benchmarking only — it is not the reference model.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def reference_weights(out_dir: Path, *, epochs: int = 3, seed: int = 0) -> tuple[Path, str]:
    """Return ``(model.pt, how it was made)``, trained into ``out_dir`` (reused if already there)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.pt"
    if path.is_file():
        return path, (out_dir / "HOW").read_text().strip() if (out_dir / "HOW").is_file() else "cached"
    how = _via_train_reference(out_dir) or _quick_train(path, epochs, seed)
    (out_dir / "HOW").write_text(how + "\n")
    return path, how


def _via_train_reference(out_dir: Path) -> str | None:
    exe = Path(sys.executable).with_name("train-reference")
    if not exe.is_file():
        return None
    run = subprocess.run([str(exe), "--framework", "torch", "--out", str(out_dir), "--epochs", "2"],
                         capture_output=True, text=True)
    if run.returncode == 0 and (out_dir / "model.pt").is_file():
        return "train-reference --framework torch --epochs 2"
    return None


def _quick_train(path: Path, epochs: int, seed: int) -> str:
    import torch
    from torch import nn

    from reference_models.data import load_mnist, normalize_nchw
    from reference_models.mnist_cnn import MnistCNN

    torch.manual_seed(seed)
    train = load_mnist("embedded", "train")
    x = torch.from_numpy(normalize_nchw(train.images))
    y = torch.from_numpy(train.labels.astype("int64"))
    model = MnistCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    torch.save(model.state_dict(), path)
    return f"stand-in: {epochs} epochs Adam on the {len(x)} embedded training digits (bench_weights)"
