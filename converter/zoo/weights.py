"""Honest weights for the zoo: seeded init, calibrated BatchNorm, brief seeded training, cached.

Random-init nets are degenerate references (torchvision MobileNetV3 / EfficientNet with ``weights=None`` give
logits of 1e-9…1e-14, where any tolerance passes), so ``honest_weights`` calibrates BatchNorm statistics on data
(the architecture's own init, drawn under a seed, is kept) and the image classifiers are then trained on a
labelled task (``train_briefly``); ``honest_build`` does both, with the trained weights cached on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from converter.zoo.data import MakeInputs, Task

#: The image classifiers are trained briefly on a labelled synthetic task (see ``train_briefly``): seeded Adam
#: steps of batch TRAIN_BATCH until the held-out accuracy reaches TRAIN_TARGET (checked every TRAIN_CHECK_EVERY
#: steps on TRAIN_HELDOUT images no step trains on), at most TRAIN_MAX_STEPS.
TRAIN_BATCH = 16
TRAIN_TARGET = 0.8
TRAIN_CHECK_EVERY = 50
TRAIN_MAX_STEPS = 400
TRAIN_HELDOUT = 128
#: Part of the cache key: weights trained on another task, init or schedule are never reused.
TRAINING_TAG = f"tinted-owninit-to{round(TRAIN_TARGET * 100)}-every{TRAIN_CHECK_EVERY}-max{TRAIN_MAX_STEPS}"
#: Trained zoo weights are cached here (deterministic: same seed, schedule and data give the same weights).
TRAINED_CACHE = Path(os.environ.get("TORCH2TF_ZOO_CACHE", Path.home() / ".cache" / "torch2tf-zoo"))

MIN_OUTPUT_STD = 1e-2  # below this a reference output is too flat for a relative error to mean anything


def flat_outputs(out: object) -> list[torch.Tensor]:
    """A forward's result as a flat list of tensors: a tensor, a tuple/list, or a dict (a Hugging Face
    ``ModelOutput`` is one: its values in key order, ``None`` fields already left out), nested in any way."""
    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, dict) else out
    return [t for item in items for t in flat_outputs(item)]


def _jitter_constant_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Parameters filled with one value (norm gains 1, biases 0, ConvNeXt layer scales 1e-6) get 0.1·N(0,1) noise,
    scaled by max(1, |value|), so that no branch of the network is a trivial identity or a dead zero."""
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() > 1 and bool((param == param.flatten()[0]).all()):
                scale = max(1.0, abs(float(param.flatten()[0])))
                param.add_(0.1 * scale * torch.randn(param.shape, generator=generator))


def _calibrate_batchnorm(model: nn.Module, batches: list[list[np.ndarray]]) -> None:
    """Running statistics of every BatchNorm = the cumulative average over ``batches`` (momentum=None).

    Only the BatchNorm layers are in train mode: dropout and stochastic depth stay off, so the statistics are
    those of the network that will be exported.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.eval()
    for m in norms:
        m.train()
    with torch.no_grad():
        for batch in batches:
            model(*(torch.from_numpy(x) for x in batch))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def honest_weights(model: nn.Module, make_inputs: MakeInputs, seed: int = 0, batches: int = 4) -> nn.Module:
    """Calibrate ``model``'s BatchNorm statistics and de-constant its parameters; returns it in eval mode.

    The architecture's own initialisation is kept (build the model under a seed for determinism, as
    ``honest_build`` does): it is part of the design. SqueezeNet has no BatchNorm; re-drawn with PyTorch's generic layer default
    (kaiming_uniform, a=sqrt(5)) its signal shrinks conv after conv to logits of std 0.02, and its ReLU-capped
    classifier then died in training (0 of 3 seeds learned the zoo task in 200 steps); with torchvision's own init
    (kaiming_uniform gain sqrt(2), final conv N(0, 0.01)) 3 of 3 seeds did. Constant-filled parameters get small
    noise (seeded by ``seed``); BatchNorm running mean/var are measured on ``batches`` batches of 8 from
    ``make_inputs``. Raises ``ValueError`` when the outputs are still too flat to compare (``output_scale_ok``).
    """
    generator = torch.Generator().manual_seed(seed)
    _jitter_constant_parameters(model, generator)
    _calibrate_batchnorm(model, [make_inputs(8, seed + 1000 + k) for k in range(batches)])
    model.eval()
    with torch.no_grad():
        outputs = flat_outputs(model(*(torch.from_numpy(x) for x in make_inputs(8, seed + 2000))))
    if not output_scale_ok([o.numpy() for o in outputs]):
        stds = [float(o.std()) for o in outputs]
        raise ValueError(f"{type(model).__name__}: outputs too flat after honest_weights (std {stds})")
    return model



class Trained(NamedTuple):
    """What ``train_briefly`` did: the model (eval mode), the steps it took and its held-out accuracy then."""

    model: nn.Module
    steps: int
    heldout_accuracy: float


def _accuracy(model: nn.Module, inputs: list[np.ndarray], labels: np.ndarray) -> float:
    from converter.parity.judge import accuracy_of

    model.eval()
    with torch.no_grad():
        logits = model(*(torch.from_numpy(x) for x in inputs)).numpy()
    accuracy = accuracy_of(logits, labels)
    if accuracy is None:
        raise ValueError(f"train_briefly needs [N, classes] logits, got shape {logits.shape}")
    return accuracy


def train_briefly(model: nn.Module, make_inputs: MakeInputs, task: Task, target: float = TRAIN_TARGET,
                  max_steps: int = TRAIN_MAX_STEPS, check_every: int = TRAIN_CHECK_EVERY, seed: int = 0) -> Trained:
    """Seeded Adam (lr 1e-3, batch ``TRAIN_BATCH``, cross-entropy) on ``task`` until the accuracy on
    ``TRAIN_HELDOUT`` held-out inputs reaches ``target`` (checked every ``check_every`` steps) or ``max_steps``.

    Why: random-weight classifiers have near-tied logits and a backbone that amplifies rounding noise evenly, so
    their int8 rows measure the weights, not the conversion. A trained net has decisive predictions and labelled
    data, so int8 is judged as for a real model: by its accuracy drop. A fixed step count either wasted minutes on
    nets that learn fast or left slow ones (squeezenet1_1: 66 % after 100 steps, 86 % after 150) barely above
    chance; a net that never reaches ``target`` is returned as it is, and a constant classifier fails its parity
    report (``parity.reference_warnings``). Same seed and data, same weights.
    """
    heldout = make_inputs(TRAIN_HELDOUT, seed + 9000)
    heldout_labels = task(heldout)
    accuracy = 0.0
    step = 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        while step < max_steps:
            model.train()
            batch = make_inputs(TRAIN_BATCH, seed + 5000 + step)
            logits = model(*(torch.from_numpy(x) for x in batch))
            loss = F.cross_entropy(logits, torch.from_numpy(task(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % check_every == 0 or step == max_steps:
                accuracy = _accuracy(model, heldout, heldout_labels)
                if accuracy >= target:
                    break
    return Trained(model.eval(), step, accuracy)


#: How far ``plant_channel_outlier`` scales one channel (the function stays the same).
OUTLIER_FACTOR = 1000.0


def plant_channel_outlier(model: nn.Module, producer: str, consumers: list[str], channel: int = 0,
                          factor: float = OUTLIER_FACTOR) -> nn.Module:
    """Scale output channel ``channel`` of conv ``producer`` by ``factor`` and the weights of every conv in
    ``consumers`` that read it by ``1 / factor``; returns ``model`` (changed in place).

    Only positively homogeneous ops (ReLU, max-pool) may lie between them: then the network computes the same
    function, but one channel's activations are ``factor`` times larger than its neighbours'. That is the
    range disparity between channels that folding a large BatchNorm gain into a conv leaves in real networks
    (Nagel et al. 2019, "Data-free quantization through weight equalization and bias correction"): per-tensor
    int8 activations spend their 256 levels on that one channel and the consumer's per-channel weight scales
    round its tiny compensating weights to zero. The model full int8 should lose on, and selective int8 repair.
    """
    modules = dict(model.named_modules())
    with torch.no_grad():
        conv = modules[producer]
        conv.weight[channel] *= factor
        if conv.bias is not None:
            conv.bias[channel] *= factor
        for name in consumers:
            modules[name].weight[:, channel] /= factor
    return model


def output_scale_ok(ref_outputs: list[np.ndarray], min_std: float = MIN_OUTPUT_STD) -> bool:
    """True when every floating reference output varies enough (std ≥ ``min_std``) and is finite everywhere.

    Against outputs of 1e-9 (torchvision MobileNetV3 with ``weights=None``) any absolute tolerance passes and the
    relative error measures rounding noise: the comparison proves nothing. Integer / bool outputs are exempt.
    """
    for out in ref_outputs:
        out = np.asarray(out)
        if not np.issubdtype(out.dtype, np.floating):
            continue
        if not np.all(np.isfinite(out)) or float(out.std()) < min_std:
            return False
    return True



def _cache_path(name: str) -> Path:
    return TRAINED_CACHE / f"{name}-{TRAINING_TAG}-seed0.pt"


def training_record(name: str) -> dict | None:
    """How the cached weights of zoo model ``name`` were trained (``steps``, ``heldout_accuracy``), if they were."""
    record = _cache_path(name).with_suffix(".json")
    return json.loads(record.read_text()) if record.is_file() else None


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` to a temp name beside ``path``, then rename: concurrent zoo processes never read half a file."""
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    write(partial)
    os.replace(partial, path)


def honest_build(factory: Callable[[], nn.Module], make_inputs: MakeInputs, task: Task | None = None,
                 name: str = "") -> Callable[[], nn.Module]:
    """A zoo ``build``: ``factory()`` under ``torch.manual_seed(0)`` (the caller's RNG state is restored), then
    ``honest_weights``; with a ``task``, trained by ``train_briefly`` once and cached as ``name``."""

    def build() -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = factory()
        model = honest_weights(model, make_inputs)
        if task is None:
            return model
        cached = _cache_path(name)
        if cached.is_file():  # the same seeded training, done before: minutes saved per zoo run
            model.load_state_dict(torch.load(cached, weights_only=True))
            return model.eval()
        trained = train_briefly(model, make_inputs, task)
        cached.parent.mkdir(parents=True, exist_ok=True)
        record = {"steps": trained.steps, "heldout_accuracy": trained.heldout_accuracy, "tag": TRAINING_TAG}
        _write_atomically(cached.with_suffix(".json"), lambda p: p.write_text(json.dumps(record)))
        _write_atomically(cached, lambda p: torch.save(trained.model.state_dict(), p))  # weights last: the key
        return trained.model

    return build
