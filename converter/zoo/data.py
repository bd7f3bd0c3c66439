"""Seeded, realistic inputs for the zoo: images, embedded tokens, token ids with padding, waveforms.

Every generator is ``make(n, seed) -> [one array per model input]`` (:data:`MakeInputs`): deterministic in
``seed``, batch axis first, PyTorch layout. Nothing here imports TensorFlow or a third-party model library.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

MakeInputs = Callable[[int, int], list[np.ndarray]]
Task = Callable[[list[np.ndarray]], np.ndarray]  # inputs -> integer class labels

#: ImageNet normalisation (per channel; channels past the third use 0.45 / 0.225)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Pixel brightness added to one channel (chosen uniformly per image) of the labelled classifiers' images
TINT = 0.15
#: Token id of padding in :func:`text_batch` (BERT's [PAD]); real tokens are drawn from 1..vocab-1.
PAD_ID = 0
#: Sample rate of :func:`waveforms` (what Wav2Vec2 / Whisper feature extractors expect).
SAMPLE_RATE = 16_000


def _normalisation(channels: int) -> tuple[np.ndarray, np.ndarray]:
    mean = np.array(IMAGENET_MEAN[:channels] + (0.45,) * max(0, channels - 3), np.float32)
    std = np.array(IMAGENET_STD[:channels] + (0.225,) * max(0, channels - 3), np.float32)
    return mean, std


def smooth_pixels(n: int, seed: int, channels: int = 3, size: int = 64, tint: float = 0.0) -> np.ndarray:
    """``n`` images (N, C, size, size) in [0, 1]: smooth random fields + one straight edge + grain.

    ``tint`` > 0 brightens one channel per image, chosen uniformly (a colour cast): the labelled classifiers'
    task (:func:`dominant_channel`) then has balanced, learnable classes. What a detector (YOLO) takes as is."""
    return _pixels(n, seed, channels, size, tint).astype(np.float32)


def _pixels(n: int, seed: int, channels: int, size: int, tint: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.standard_normal((n, channels, 6, 6)).astype(np.float32))
    fields = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).numpy()
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, np.pi, size=(n, 1, 1, 1))
    edges = np.sign(np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5))  # one straight edge per image
    pixels = 0.5 + 0.2 * fields + 0.15 * edges + 0.03 * rng.standard_normal((n, channels, size, size))
    if tint:
        pixels[np.arange(n), rng.integers(0, channels, size=n)] += tint
    return np.clip(pixels, 0.0, 1.0)  # float64: smooth_images normalises before rounding, as it always did


def smooth_images(n: int, seed: int, channels: int = 3, size: int = 64, tint: float = 0.0) -> np.ndarray:
    """:func:`smooth_pixels`, ImageNet-normalised (about N(0, 1)): what the image classifiers take."""
    mean, std = _normalisation(channels)
    pixels = _pixels(n, seed, channels, size, tint)
    return ((pixels - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def token_embeddings(n: int, seed: int, steps: int, dim: int, vocab: int = 64) -> np.ndarray:
    """``n`` sequences (N, steps, dim) of embedded tokens: a fixed random table (seed 0) indexed by Zipf tokens."""
    table = np.random.default_rng(0).standard_normal((vocab, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    tokens = np.minimum(rng.zipf(1.3, size=(n, steps)) - 1, vocab - 1)
    return table[tokens]


def padding_mask(n: int, seed: int, steps: int) -> np.ndarray:
    """(N, steps) float mask, 1 for real tokens then 0 for padding; every row keeps at least half its tokens."""
    lengths = np.random.default_rng(seed).integers(steps // 2, steps + 1, size=n)
    return (np.arange(steps)[None, :] < lengths[:, None]).astype(np.float32)


def text_batch(n: int, seed: int, steps: int, vocab: int) -> list[np.ndarray]:
    """``[input_ids, attention_mask]``, both int64 (N, steps), as a tokenizer pads a batch to ``steps``.

    The mask is :func:`padding_mask` (ones, then zeros; at least half of each row real). Real tokens follow a
    Zipf-Mandelbrot law over ids 1..vocab-1 in a fixed shuffled order (seed 0), as word frequencies do: a few
    ids are common, most rare, and every part of the embedding table is read. Padded positions hold ``PAD_ID``.
    """
    ranks = np.arange(vocab - 1)
    weights = 1.0 / (ranks + 2.7) ** 1.1
    order = np.random.default_rng(0).permutation(np.arange(1, vocab))
    tokens = order[np.random.default_rng(seed).choice(vocab - 1, size=(n, steps), p=weights / weights.sum())]
    mask = padding_mask(n, seed, steps).astype(np.int64)
    return [np.where(mask == 1, tokens, PAD_ID).astype(np.int64), mask]


def waveforms(n: int, seed: int, samples: int) -> np.ndarray:
    """``n`` clips (N, samples) of speech-like audio at ``SAMPLE_RATE``, zero mean and unit variance per clip
    (what Wav2Vec2's feature extractor hands the model): a voiced tone (80-250 Hz) with 3 harmonics whose
    loudness rises and falls a few times per second (syllables), plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    pitch = rng.uniform(80.0, 250.0, size=(n, 1))
    voiced = sum(rng.uniform(0.2, 1.0, size=(n, 1)) * np.sin(2 * np.pi * k * pitch * t + rng.uniform(0, 2 * np.pi, (n, 1)))
                 for k in range(1, 4))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2.0, 6.0, size=(n, 1)) * t) ** 2
    audio = voiced * syllables + 0.05 * rng.standard_normal((n, samples))
    audio = (audio - audio.mean(axis=1, keepdims=True)) / audio.std(axis=1, keepdims=True)
    return audio.astype(np.float32)


def dominant_channel(inputs: list[np.ndarray]) -> np.ndarray:
    """Label of an image: which colour channel is brightest on average *in pixel space* (3 classes).

    On tinted images (``smooth_images(tint=TINT)``) the classes are balanced and a CNN learns them in ~100 steps.
    Measured on the normalised values instead, the blue channel won 83 % of untinted images (ImageNet's blue
    mean is the lowest) and briefly trained nets answered "blue" for everything: a constant classifier, whose
    int8 accuracy proved nothing (the parity report now fails such a reference, see ``reference_warnings``)."""
    mean, std = _normalisation(inputs[0].shape[1])
    pixel_means = inputs[0].mean(axis=(2, 3)) * std + mean
    return pixel_means.argmax(axis=1).astype(np.int64)
