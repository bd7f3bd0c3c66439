"""Third-party architectures in the zoo: Hugging Face transformers, an Ultralytics YOLO detector and timm classifiers.

Each is built from a small config (``BertConfig(...)``, ``yolov8n.yaml``, ``timm.create_model(pretrained=False)``)
under a seed: nothing is downloaded. They are what a PyTorch user brings: the model's own ``forward`` and return
type (a Hugging Face ``ModelOutput`` is a dict, which the converter flattens to outputs named by its keys), token
ids and attention masks as int64, a float waveform, raw detector output. Two exceptions, each for a stated reason:
GPT-2 is called through :func:`converter._convert.live.keyword_call` (its second positional parameter is the
KV cache, not the mask), and
YOLO's head is put in Ultralytics' own export mode (it then returns the decoded ``[B, 4 + classes, anchors]``
tensor alone, as ``yolo export`` does, instead of a tuple with the training-time feature maps).

The timm classifiers get the torchvision entries' treatment: BatchNorm calibrated and a brief seeded training on
the dominant-channel task (cached), so their predictions are decisive and int8 is judged by accuracy drop. The
transformers and YOLO keep their seeded init (constant-filled parameters jittered, BatchNorm calibrated:
``honest_weights``). The libraries are the ``zoo`` extra (``pip install -e ".[zoo]"``, pinned in constraints.txt)
and are imported only when an entry is built — never in a process that has loaded TensorFlow: building a
transformers or timm model there segfaults (both pull in torchvision / triton, which bundle their own LLVM, as TF
does), so ``scripts/zoo`` and the tests build each in a child process first (``run_isolated``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from converter._convert.live import keyword_call
from converter.zoo.data import TINT, MakeInputs, dominant_channel, smooth_images, smooth_pixels, text_batch, waveforms
from converter.zoo.entry import ZooEntry
from converter.zoo.weights import TRAINED_CACHE, honest_build

#: The text models' vocabulary and padded sequence length (ids are drawn in [0, VOCAB), see ``text_batch``).
VOCAB, STEPS = 1000, 16
#: The speech model's clip: 0.25 s at 16 kHz (Wav2Vec2's conv stack turns it into 199 frames).
AUDIO_SAMPLES = 4000
#: The detector's square input (YOLOv8n at 160 px: 20x20 + 10x10 + 5x5 = 525 anchors).
YOLO_SIZE = 160


# ------------------------------------------------------------------------------------------ transformers


def _bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=64, pad_token_id=0))


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    return keyword_call(GPT2LMHeadModel(config), ("input_ids", "attention_mask"))


def _t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4))


def _wav2vec2() -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    return Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4))


def _text(steps: int, vocab: int) -> MakeInputs:
    return lambda n, seed: text_batch(n, seed, steps, vocab)


def _transformers_text(name: str, factory, outputs: list[str], fast: bool) -> ZooEntry:
    make = _text(STEPS, VOCAB)
    return ZooEntry(name, honest_build(factory, make), [(1, STEPS), (1, STEPS)], ["input_ids", "attention_mask"],
                    outputs, make, fast, input_dtypes=("int64", "int64"), input_ranges=((0, VOCAB), (0, 2)))


# ------------------------------------------------------------------------------------------------ YOLO


@contextlib.contextmanager
def _offline_ultralytics() -> Iterator[None]:
    """Import Ultralytics offline and quiet, its settings file in the zoo cache, not ``~/.config``; the process
    environment is restored afterwards (the import also sets thread and log variables of its own)."""
    saved = dict(os.environ)
    os.environ.update(YOLO_OFFLINE="1", YOLO_VERBOSE="False", YOLO_CONFIG_DIR=str(TRAINED_CACHE / "ultralytics"))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _yolov8n() -> nn.Module:
    with _offline_ultralytics():
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel("yolov8n.yaml", verbose=False)
    model.model[-1].export = True  # Ultralytics' export mode: the decoded [B, 84, anchors] tensor alone
    return model


def _pixels(size: int) -> MakeInputs:
    return lambda n, seed: [smooth_pixels(n, seed, 3, size)]


def _audio(samples: int) -> MakeInputs:
    return lambda n, seed: [waveforms(n, seed, samples)]


# ------------------------------------------------------------------------------------------------ timm


def _timm(name: str, size: int, fast: bool = False, **kwargs) -> ZooEntry:
    """A timm classifier with 3 classes (the dominant-channel task), trained briefly like the torchvision ones."""

    def factory() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=3, **kwargs)

    def make(n: int, seed: int) -> list[np.ndarray]:
        return [smooth_images(n, seed, 3, size, TINT)]

    return ZooEntry(name, honest_build(factory, make, dominant_channel, name), [(1, 3, size, size)], ["image"],
                    ["logits"], make, fast, task=dominant_channel)


ENTRIES: list[ZooEntry] = [
    _transformers_text("bert_tiny", _bert, ["last_hidden_state", "pooler_output"], fast=True),
    _transformers_text("gpt2_tiny_lm", _gpt2, ["logits"], fast=True),
    _transformers_text("t5_tiny_encoder", _t5_encoder, ["last_hidden_state"], fast=True),
    ZooEntry("wav2vec2_tiny", honest_build(_wav2vec2, _audio(AUDIO_SAMPLES)), [(1, AUDIO_SAMPLES)], ["input_values"],
             ["last_hidden_state", "extract_features"], _audio(AUDIO_SAMPLES), fast=True),
    ZooEntry("yolov8n", honest_build(_yolov8n, _pixels(YOLO_SIZE)), [(1, 3, YOLO_SIZE, YOLO_SIZE)], ["images"],
             ["output0"], _pixels(YOLO_SIZE), fast=True),
    _timm("vit_tiny_patch16_224", 64, img_size=64),
    _timm("mobilevit_xxs", 128),
    _timm("edgenext_xx_small", 128),
    _timm("levit_128s", 128, img_size=128),
    _timm("mobilenetv3_small_100", 128),
]
