"""What a training run reports: per-epoch numbers, the final ``metrics.json``, and weight checksums."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class EpochLog:
    """Per-epoch loss and throughput, appended by the trainer as epochs finish."""

    losses: list[float] = field(default_factory=list)
    samples_per_second: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)

    def add(self, epoch: int, epochs: int, loss: float, samples: int, seconds: float, *, echo: bool) -> None:
        """Record one epoch; with ``echo``, print ``epoch i/n  loss  samples/s`` to stderr."""
        rate = samples / seconds if seconds > 0 else float("nan")
        self.losses.append(float(loss))
        self.samples_per_second.append(rate)
        self.seconds.append(seconds)
        self.samples.append(int(samples))
        if echo:
            print(f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  {rate:,.0f} samples/s  ({seconds:.1f} s)",
                  file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunMetrics:
    """The fields every ``metrics.json`` carries; framework-specific ones go in ``extra``."""

    framework: str
    epochs: int
    batch_size: int
    lr: float
    seed: int
    train_samples: int
    eval_samples: int
    train_source: str
    eval_source: str
    test_accuracy: float
    final_loss: float
    train_seconds: float
    samples_per_second: float
    epoch_losses: list[float]
    epoch_samples_per_second: list[float]
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data.update(data.pop("extra"))
        data["python"] = platform.python_version()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def write(self, directory: Path) -> Path:
        path = Path(directory) / "metrics.json"
        path.write_text(self.to_json())
        return path


def weights_checksum(arrays: list[np.ndarray]) -> str:
    """SHA-256 over the float32 bytes of ``arrays`` in order: equal iff the weights are bit-identical."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float(np.mean(np.argmax(np.asarray(logits, dtype=np.float32), axis=1) == labels))
