"""The zoo: data generators and honest weights (fast, no TF), then conversions through ``converter.api.convert``.

The fast subset (``ZooEntry.fast``) converts fp32 only and runs in CI; the whole zoo at every precision is
``@pytest.mark.slow`` (``scripts/zoo`` prints the same as a scoreboard). Third-party entries (transformers, timm,
Ultralytics) convert in a child process (``run_isolated``): building them beside TensorFlow, which the other tests
have loaded, segfaults (they import torchvision / triton, which bundle their own LLVM, as TF does).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from converter.zoo import thirdparty
from converter.zoo.data import PAD_ID, text_batch, waveforms
from converter.zoo.entry import ZooEntry
from converter.zoo.models import ZOO, ZOO_SAMPLES, run_entry, run_isolated
from converter.zoo.weights import flat_outputs, honest_weights, output_scale_ok

ENTRIES = list(ZOO.values())
FAST = [e for e in ENTRIES if e.fast]
THIRD_PARTY = {e.name for e in thirdparty.ENTRIES}


def _convert(entry: ZooEntry, out, precisions: tuple[str, ...], samples: int, dynamic_batch: bool = False) -> dict:
    """``run_entry`` in this process, or in a child for the third-party entries (see the module docstring)."""
    if entry.name in THIRD_PARTY:
        return run_isolated(entry.name, out, precisions, samples, dynamic_batch)
    return run_entry(entry, out, precisions, samples=samples, dynamic_batch=dynamic_batch)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_inputs_match_contract_and_are_seeded(entry: ZooEntry) -> None:
    batch = entry.make_inputs(3, seed=7)
    assert len(batch) == len(entry.input_shapes) == len(entry.input_names) == len(entry.dtypes)
    for k, (x, shape, dtype) in enumerate(zip(batch, entry.input_shapes, entry.dtypes)):
        assert x.shape == (3, *shape[1:]) and x.dtype == dtype, (x.shape, x.dtype)
        if np.issubdtype(dtype, np.integer):  # drawn where the conversion's --input-range says
            low, high = entry.input_ranges[k]
            assert low <= x.min() and x.max() < high, (x.min(), x.max(), entry.input_ranges[k])
        else:
            assert np.all(np.isfinite(x))
    for a, b in zip(batch, entry.make_inputs(3, seed=7)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(batch, entry.make_inputs(3, seed=8)))


def test_zoo_entry_refuses_a_contract_of_mismatched_lengths() -> None:
    make = lambda n, seed: [np.zeros((n, 4), np.int64)]  # noqa: E731
    with pytest.raises(ValueError, match="one name"):
        ZooEntry("x", nn.Identity, [(1, 4)], ["ids"], ["y"], make, input_dtypes=("int64", "int64"))


def test_text_batches_are_padded_like_a_tokenizer_pads_them() -> None:
    """Ids in [0, vocab), masks of ones then zeros (every row at least half real, some padded, some not), the pad
    id exactly where the mask is 0, and a vocabulary used broadly (Zipf: many distinct ids, a few frequent)."""
    ids, mask = text_batch(200, seed=3, steps=16, vocab=1000)
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (200, 16)
    assert set(np.unique(mask)) == {0, 1} and np.all(np.diff(mask, axis=1) <= 0)  # ones, then zeros
    lengths = mask.sum(axis=1)
    assert lengths.min() >= 8 and (lengths < 16).mean() > 0.5 and (lengths == 16).any()
    assert np.all((ids == PAD_ID) == (mask == 0)) and ids.max() < 1000
    real = ids[mask == 1]
    counts = np.bincount(real, minlength=1000)
    assert len(np.unique(real)) > 500 and counts.max() > 10 * np.median(counts[counts > 0]), counts.max()


def test_waveforms_are_normalised_voiced_audio() -> None:
    """Zero mean and unit variance per clip (what Wav2Vec2's feature extractor hands the model), and voiced:
    most energy below 1 kHz (a tone with harmonics), not white noise."""
    audio = waveforms(4, seed=0, samples=4000)
    assert audio.dtype == np.float32 and audio.shape == (4, 4000)
    np.testing.assert_allclose(audio.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(audio.std(axis=1), 1.0, atol=1e-4)
    power = np.abs(np.fft.rfft(audio, axis=1)) ** 2
    low = power[:, : 1000 * 4000 // 16000].sum(axis=1) / power.sum(axis=1)
    assert np.all(low > 0.8), low


@pytest.mark.parametrize(("out", "count"), [
    (torch.ones(2), 1),
    ((torch.ones(2), torch.zeros(3)), 2),
    ({"logits": torch.ones(2), "hidden": (torch.ones(1), torch.ones(1))}, 3),  # a ModelOutput is a dict
])
def test_flat_outputs(out, count: int) -> None:
    assert len(flat_outputs(out)) == count and all(isinstance(t, torch.Tensor) for t in flat_outputs(out))


def test_images_have_spatial_structure() -> None:
    """Neighbouring pixels correlate strongly (unlike white noise), and values sit in ImageNet-normalised range."""
    (images,) = ZOO["small_unet"].make_inputs(4, seed=0)
    a, b = images[..., :, :-1].ravel(), images[..., :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8
    assert -3.0 < images.min() and images.max() < 3.0 and images.std() > 0.3


@pytest.mark.parametrize(
    ("outputs", "ok"),
    [
        ([np.linspace(-1, 1, 10)], True),
        ([np.full(10, 1e-9) + np.linspace(0, 1e-12, 10)], False),  # MobileNetV3 with weights=None
        ([np.linspace(-1, 1, 10), np.zeros(4)], False),  # one flat output is enough to flag it
        ([np.array([0.0, np.nan, 1.0])], False),
        ([np.arange(5, dtype=np.int64) * 0], True),  # integer outputs are exempt
    ],
    ids=["varied", "degenerate", "one_flat", "nan", "integer"],
)
def test_output_scale_ok(outputs: list[np.ndarray], ok: bool) -> None:
    assert output_scale_ok(outputs) is ok


_MOBILENET_CHECK = """
import torch, torchvision
from torch import nn
from converter.zoo.models import ZOO
from converter.zoo.weights import honest_weights, output_scale_ok
entry = ZOO["mobilenet_v3_small"]
x = torch.from_numpy(entry.make_inputs(4, seed=3)[0])
torch.manual_seed(0)
raw = torchvision.models.mobilenet_v3_small(weights=None).eval()
with torch.no_grad():
    assert not output_scale_ok([raw(x).numpy()]), "weights=None should be degenerate"
    honest = honest_weights(raw, entry.make_inputs)
    logits = honest(x).numpy()
assert output_scale_ok([logits]) and not honest.training, logits.std()
bn = next(m for m in honest.modules() if isinstance(m, nn.BatchNorm2d))
assert bn.momentum == 0.01 and bn.num_batches_tracked.item() == 4, (bn.momentum, bn.num_batches_tracked)
"""


def test_honest_weights_fix_degenerate_mobilenet() -> None:
    """In a child process: importing torchvision after TensorFlow (loaded by other tests) segfaults, since both
    bundle LLVM (triton's and TF's); the other order is fine."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _MOBILENET_CHECK], capture_output=True, text=True, cwd=root,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_honest_weights_are_deterministic() -> None:
    entry = ZOO["two_in_two_out"]
    a, b = entry.build(), entry.build()
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def _assert_converted(row: dict, entry: ZooEntry | None = None, precisions: tuple[str, ...] = ("fp32",)) -> None:
    """No error, a reference worth comparing, every row passed; with ``entry``: every ``precisions`` row is there,
    the artifacts' inputs keep the entry's dtypes (int64 ids stay int64) and their outputs its names (a
    ModelOutput's keys), and the translation took the fast route (strict mode costs minutes on deep models)."""
    detail = "; ".join(f"{r['runtime']}/{r['precision']} rel={r['max_rel_err']:.2e} {r['reason']}"
                       for r in row["runtimes"])
    assert not row["error"], row["error"]
    assert row["scale_ok"], f"reference output std {row['output_std']:.3g} is too flat to compare"
    assert row["passed"], detail
    if entry is not None:
        assert {p for p in precisions} <= {r["precision"] for r in row["runtimes"] if r["runtime"] == "tflite"}
        assert row["outputs"] == entry.output_names, row["outputs"]
        assert row["inputs"] == {n: str(d) for n, d in zip(entry.input_names, entry.dtypes)}, row["inputs"]
        assert row["strict_mode"] is False, "onnx2tf's strict mode was needed: the fast route failed on the sample"


@pytest.mark.parametrize("entry", FAST, ids=lambda e: e.name)
def test_fast_zoo_converts_fp32(entry: ZooEntry, tmp_path) -> None:
    _assert_converted(_convert(entry, tmp_path, ("fp32",), samples=8), entry)


#: CI's budget converts the third-party fast entries once (fp32); their symbolic batch is checked by the slow
#: whole-zoo test (``test_full_zoo_dynamic_batch``), like every other entry's.
@pytest.mark.parametrize("entry", [e for e in FAST if e.name not in THIRD_PARTY], ids=lambda e: e.name)
def test_fast_zoo_dynamic_batch(entry: ZooEntry, tmp_path) -> None:
    """--dynamic-batch: every runtime is fed at batch 1 and 3 and must match PyTorch at both."""
    row = _convert(entry, tmp_path, ("fp32",), samples=6, dynamic_batch=True)
    _assert_converted(row, entry)
    assert row["dynamic_batch"] and row["runtimes"]
    assert all(r["batch_sizes"] == [1, 3] for r in row["runtimes"]), [(r["runtime"], r["batch_sizes"]) for r in row["runtimes"]]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_full_zoo_dynamic_batch(entry: ZooEntry, tmp_path) -> None:
    _assert_converted(run_isolated(entry.name, tmp_path, ("fp32", "fp16"), samples=12, dynamic_batch=True), entry,
                      ("fp32", "fp16"))


#: transformers and YOLOv8, whose symbolic-batch graph onnx2tf builds (onnxruntime's symbolic shape inference
#: proves the static sizes behind ViT's patch flatten, so its class-token concat and every Reshape get static
#: targets; EdgeNeXt's positional encoding, computed from the batch size alone, becomes a constant; MobileViT's
#: square token maps are recorded in ONNX's layout; BERT's encoder output is declared with its proven sizes;
#: wav2vec2's attention is checked at a batch of 2, where its batch axis cannot be mistaken for another)
ROUTES = ["vit_tiny_patch16_224", "levit_128s", "t5_tiny_encoder", "yolov8n", "edgenext_xx_small", "mobilevit_xxs",
          "bert_tiny", "wav2vec2_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ROUTES)
def test_which_transformers_keep_a_symbolic_batch(name: str, tmp_path) -> None:
    """A symbolic-batch graph runs as one TFLite graph, where a batch-mapped one is a WHILE loop (10-15 % slower at
    batch 1); it must match PyTorch at batch 1 and 3."""
    row = run_isolated(name, tmp_path, ("fp32",), samples=6, dynamic_batch=True)
    _assert_converted(row, ZOO[name])
    assert row["dynamic_batch_route"] is None, row["dynamic_batch_route"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_full_zoo_converts(entry: ZooEntry, tmp_path) -> None:
    """Every precision, in a child process (TFLite's int8 calibrator can segfault), on the scoreboard's sample
    count (the 1 pp int8 bar must be more than one sample); every row must pass."""
    precisions = ("fp32", "fp16", "dynamic_int8", "int8")
    _assert_converted(run_isolated(entry.name, tmp_path, precisions, samples=ZOO_SAMPLES), entry, precisions)


def test_lstm_full_int8_is_built_unrolled_and_passes(tmp_path) -> None:
    """TFLite cannot calibrate onnx2tf's WHILE loop (segfault): the int8 file comes from an unrolled translation."""
    import json

    row = run_entry(ZOO["lstm_classifier"], tmp_path, ("fp32", "int8"), samples=16, int8_keep_float=())
    _assert_converted(row)
    manifest = json.loads((tmp_path / "lstm_classifier" / "manifest.json").read_text())
    int8 = manifest["artifacts"]["tflite_int8"]
    assert int8["rnn_unrolled"] and "WHILE" not in int8["op_histogram"], int8["op_histogram"]
    assert "WHILE" in manifest["artifacts"]["tflite_fp32"]["op_histogram"]  # the float file keeps the loop


@pytest.mark.parametrize("symbolic_fails", [True, False], ids=["mapped", "direct"])
def test_dynamic_batch_falls_back_to_a_mapped_batch_1_graph(tmp_path, monkeypatch, symbolic_fails: bool) -> None:
    """When onnx2tf cannot build a graph with a symbolic batch (no zoo entry now; simulated here on
    nn.MultiheadAttention, which the rewrites let onnx2tf build directly), the artifacts map a batch-1 graph over the
    batch instead, and still match PyTorch at batch 1 and 3."""
    import json

    from converter._convert import tensorflow
    from converter.errors import TensorFlowConversionError

    real = tensorflow.onnx_to_keras

    def symbolic_batch_fails(model, *args, **kwargs):
        graph = onnx.load(str(model)) if isinstance(model, Path) else model  # convert passes model.onnx's path
        batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
        if symbolic_fails and not batch.HasField("dim_value"):
            raise TensorFlowConversionError("onnx2tf failed on node x: simulated", "-")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(tensorflow, "onnx_to_keras", symbolic_batch_fails)
    row = run_entry(ZOO["transformer_classifier"], tmp_path, ("fp32",), samples=6, dynamic_batch=True)
    _assert_converted(row)
    manifest = json.loads((tmp_path / "transformer_classifier" / "manifest.json").read_text())
    route = manifest.get("dynamic_batch_route")
    assert (route is not None and route["batch_map"] and "onnx2tf" in route["why"]) if symbolic_fails else route is None
    assert manifest["inputs"][0]["shape"][0] is None
    # tf2onnx cannot write the mapped signature's WHILE loop for onnxruntime: the round trip checks the per-sample
    # function saved beside it
    parity = json.loads((tmp_path / "transformer_classifier" / "parity.json").read_text())
    trip = next(r for r in parity["runtimes"] if r["runtime"] == "tf2onnx_roundtrip")
    assert trip["passed"] and ("per-sample function" in trip["artifact"]) == symbolic_fails, trip


def _tinted32(n: int, seed: int) -> list[np.ndarray]:
    """The labelled classifiers' task at 32x32: tinted images (their labels: ``dominant_channel``)."""
    from converter.zoo.data import TINT, smooth_images

    return [smooth_images(n, seed, 3, 32, TINT)]


def _tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def test_train_briefly_is_deterministic_and_learns_the_task() -> None:
    """The image classifiers get seeded training on the dominant-channel task: same seed, same weights; the
    classes are balanced, and the net beats the constant classifier by far (it once only learned the majority)."""
    from converter.zoo.data import dominant_channel
    from converter.zoo.weights import train_briefly

    a, b = (train_briefly(_tiny_classifier(), _tinted32, dominant_channel, target=0.95, max_steps=120, check_every=20)
            for _ in "ab")
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert a.steps == b.steps and a.heldout_accuracy == b.heldout_accuracy
    (x,) = _tinted32(200, 99)
    labels = dominant_channel([x])
    majority = np.bincount(labels).max() / len(labels)
    assert majority < 0.45, np.bincount(labels)  # balanced: about 1/3 each
    with torch.no_grad():
        predicted = a.model(torch.from_numpy(x)).argmax(1).numpy()
    accuracy = float((predicted == labels).mean())
    assert len(np.unique(predicted)) == 3 and accuracy > 0.9, (accuracy, np.bincount(predicted))


@pytest.mark.parametrize(("target", "max_steps", "check_every", "stops_before_max"), [
    (0.5, 200, 10, True),     # an easy target: stops at the first check that reaches it
    (1.01, 40, 10, False),    # an unreachable target: trains max_steps, reports the last held-out accuracy
    (1.01, 35, 10, False),    # max_steps need not be a multiple of check_every: the last step is checked too
])
def test_train_briefly_stops_at_target_or_max(target: float, max_steps: int, check_every: int,
                                              stops_before_max: bool) -> None:
    from converter.zoo.data import dominant_channel
    from converter.zoo.weights import train_briefly

    trained = train_briefly(_tiny_classifier(), _tinted32, dominant_channel, target=target, max_steps=max_steps,
                            check_every=check_every)
    assert (trained.steps < max_steps) == stops_before_max, trained
    assert trained.steps % check_every == 0 or trained.steps == max_steps
    assert (trained.heldout_accuracy >= target) == stops_before_max and 0.0 < trained.heldout_accuracy <= 1.0
    assert not trained.model.training


def test_trained_weights_are_cached_with_their_training_record(tmp_path, monkeypatch) -> None:
    """The first build trains (seeded) and caches weights + how they were trained; the second build loads them."""
    from converter.zoo import weights as zoo
    from converter.zoo.data import dominant_channel

    monkeypatch.setattr(zoo, "TRAINED_CACHE", tmp_path)
    build = zoo.honest_build(_tiny_classifier, _tinted32, dominant_channel, name="tiny")
    assert zoo.training_record("tiny") is None
    first = build()
    record = zoo.training_record("tiny")
    assert record is not None and record["tag"] == zoo.TRAINING_TAG, record
    assert record["heldout_accuracy"] >= zoo.TRAIN_TARGET and record["steps"] % zoo.TRAIN_CHECK_EVERY == 0, record
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-{zoo.TRAINING_TAG}-seed0.{ext}" for ext in ("json", "pt")]
    second = build()  # from the cache
    for p, q in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(p, q)
    assert not second.training


def _conv_relu_pool_conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 4, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


class _TwoReaders(nn.Module):
    """One conv read by two convs (as a Fire module's expand1x1 / expand3x3 read its squeeze)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.left, self.right = nn.Conv2d(3, 5, 3), nn.Conv2d(5, 2, 1), nn.Conv2d(5, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.stem(x))
        return torch.cat([self.left(y), self.right(y)], 1)


@pytest.mark.parametrize(("build", "producer", "consumers", "channel"), [
    (_conv_relu_pool_conv, "0", ["3"], 0),
    (_conv_relu_pool_conv, "0", ["3"], 5),
    (_TwoReaders, "stem", ["left", "right"], 2),
])
def test_plant_channel_outlier_keeps_the_function(build, producer, consumers, channel) -> None:
    """The same outputs (ReLU and max-pool commute with a positive scale), one channel OUTLIER_FACTOR times
    larger than the others at the producer: what per-tensor int8 activations cannot represent."""
    from converter.zoo.weights import OUTLIER_FACTOR, plant_channel_outlier

    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        plant_channel_outlier(model, producer, consumers, channel)
        after = model(x)
        act = dict(model.named_modules())[producer](x).abs().amax(dim=(0, 2, 3))
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-5), (after - before).abs().max()
    others = torch.cat([act[:channel], act[channel + 1:]])
    assert act[channel] > OUTLIER_FACTOR / 10 * others.max(), act


@pytest.mark.slow  # ~50 s; the fast suite keeps keep-float recovery in tests/test_int8.py
def test_zoo_outlier_model_loses_full_int8_and_keep_float_recovers_it(tmp_path) -> None:
    """A zoo architecture (the trained squeezenet1_1) with one activation channel scaled x1000 and compensated
    (same float function): full int8 collapses (measured: 82.2 % -> 35.0 %, chance), and --int8-keep-float auto
    keeps the outlier's conv, pool and reader in float and is back within 1 pp (82.8 %), for +6 kB."""
    import json

    row = run_isolated("squeezenet1_1_outlier", tmp_path, ("fp32", "int8"), samples=ZOO_SAMPLES)  # a zoo demo
    _assert_converted(row)  # every row passes, the int8 one with the layers auto kept
    selection = json.loads((tmp_path / "squeezenet1_1_outlier" / "manifest.json").read_text()
                           )["artifacts"]["tflite_int8"]["int8_selection"]
    assert selection["float_accuracy"] > 0.7, selection  # a trained reference: the drop means something
    assert selection["full_int8"]["accuracy_drop_pp"] > 10.0, selection["full_int8"]
    assert selection["chosen"]["accuracy_drop_pp"] <= 1.0 and selection["met_target"], selection["chosen"]
    kept = {layer["module"] for layer in selection["kept"]}
    assert kept and kept <= {"features.0", "features.1", "features.2", "features.3.squeeze",
                             "features.3.squeeze_activation"}, kept
    assert selection["full_int8"]["size_bytes"] < selection["chosen"]["size_bytes"] < 1.1 * selection["full_int8"]["size_bytes"]
