"""MNIST for PyTorch: the torchvision route (Dataset + transforms + DataLoader) and the fast tensor route.

Both produce identical pixels: ``ToTensor()`` + ``Normalize((0.5,), (0.5,))`` per item on the torchvision
route, :func:`reference_models.data.normalize_nchw` (the same float32 arithmetic) once for the whole set
on the tensor route.

Why the tensor route is the default: the torchvision route spends 100-350 us per *image* (measured on
the 2-core dev machine) in PIL conversion, ``ToTensor``, ``Normalize`` and collation, i.e. 0.5-1.5 s per
4,500-image epoch, on the order of the training compute itself; DataLoader worker processes only move
that cost onto the same two cores the training threads need. The tensor route normalises once, then
each batch is one ``index_select`` (an epoch's batching costs a few milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from reference_models.data import MnistArrays, normalize_nchw

LOADERS = ("tensor", "torchvision")


def mnist_transform():
    """The guide's transform: ``Compose([ToTensor(), Normalize((0.5,), (0.5,))])``."""
    from torchvision import transforms

    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


class ArrayMNIST(Dataset):
    """A torchvision-style MNIST dataset over uint8 arrays: PIL image -> ``transform`` per item.

    Does what ``torchvision.datasets.MNIST.__getitem__`` does, for data that came from any source.
    """

    def __init__(self, arrays: MnistArrays, transform=None) -> None:
        self.images = torch.from_numpy(arrays.images)
        self.targets = torch.from_numpy(arrays.labels)
        self.transform = transform if transform is not None else mnist_transform()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = Image.fromarray(self.images[index].numpy(), mode="L")
        return self.transform(image), int(self.targets[index])


class TensorBatches:
    """Shuffled mini-batches sliced from pre-normalised tensors; an iterable like a DataLoader.

    Shuffling uses a ``DistributedSampler`` (``num_replicas=1`` when not distributed), so the order is a
    pure function of ``(seed, epoch)`` and each rank sees its own shard. Call :meth:`set_epoch` each epoch.
    """

    def __init__(self, arrays: MnistArrays, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False) -> None:
        self.images = torch.from_numpy(normalize_nchw(arrays.images))
        self.labels = torch.from_numpy(arrays.labels)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = DistributedSampler(range(len(self.labels)), num_replicas=world_size, rank=rank,
                                          shuffle=True, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, len(order)), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)


class TorchvisionBatches:
    """The guide's route: ``ArrayMNIST`` + ``DataLoader`` (shuffle via ``DistributedSampler``, workers)."""

    def __init__(self, arrays: MnistArrays, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, workers: int = 0) -> None:
        dataset = ArrayMNIST(arrays)
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
                                 persistent_workers=workers > 0, generator=generator)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)


def train_batches(arrays: MnistArrays, *, loader: str, batch_size: int, seed: int, rank: int = 0,
                  world_size: int = 1, workers: int = 0) -> TensorBatches | TorchvisionBatches:
    """The training iterable for ``loader`` (``"tensor"`` or ``"torchvision"``), sharded by rank."""
    if loader == "tensor":
        return TensorBatches(arrays, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size)
    if loader == "torchvision":
        return TorchvisionBatches(arrays, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                                  workers=workers)
    raise ValueError(f"unknown loader {loader!r}; use one of {', '.join(LOADERS)}")


def eval_tensors(arrays: MnistArrays) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole eval split as ``([N, 1, 28, 28] float32, [N] int64)`` tensors."""
    return torch.from_numpy(normalize_nchw(arrays.images)), torch.from_numpy(np.asarray(arrays.labels))
