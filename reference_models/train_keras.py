"""The guide's six Keras steps: data, model, compile, fit (with callbacks), evaluate, export.

``compile(Adam(lr), SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])`` and ``fit`` with
callbacks: the guide's custom early stop (``--stop-below-loss``, off by default), ``ModelCheckpoint``, an
optional learning-rate schedule, and a timer for samples/s. Options: XLA (``jit_compile``), mixed
precision (``mixed_bfloat16`` on CPU, ``mixed_float16`` on GPU), eager debugging, and the distribution
strategies ``mirrored`` (one machine, all local devices) and ``multi-worker`` (``TF_CONFIG``; runs on
legacy Keras, ``tf_keras``, because Keras 3's ``fit`` fails on ``PerReplica`` inputs under
``MultiWorkerMirroredStrategy``).

Artifacts: ``saved_model/`` (``serving_default`` signature, input ``[B, 28, 28, 1]`` float32 in [-1, 1]),
``model.keras``, ``checkpoint/last.weights.h5`` and ``metrics.json``. Under multi-worker every worker
writes into its own ``out_dir``; the chief's (task 0) is the result.
"""

from __future__ import annotations

import json
import os

import time
from pathlib import Path
from types import ModuleType

import numpy as np

from reference_models.config import TrainConfig, lr_factor
from reference_models.data import MnistArrays, normalize_nhwc
from reference_models.keras_data import train_dataset
from reference_models.metrics import EpochLog, RunMetrics, accuracy, weights_checksum
from reference_models.mnist_keras import build_keras_model
from reference_models.quiet import import_tensorflow

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
CHECKPOINT_FILE = "checkpoint/last.weights.h5"


def keras_module(legacy: bool) -> ModuleType:
    """``tf_keras`` (Keras 2) for the multi-worker route, ``keras`` (Keras 3) otherwise."""
    if legacy:
        import tf_keras

        return tf_keras
    import keras

    return keras


def train(config: TrainConfig, train_data: MnistArrays, eval_data: MnistArrays, out_dir: Path | None) -> RunMetrics:
    """Train, evaluate on ``eval_data`` and, if ``out_dir``, export the artifacts and ``metrics.json``."""
    legacy = config.strategy == "multi-worker"
    tf = import_tensorflow(config.verbose, legacy_keras=legacy)
    keras = keras_module(legacy)
    keras.utils.set_random_seed(config.seed)  # Python, NumPy and TF seeds at once
    restore = _apply_runtime_options(tf, keras, config)
    try:
        strategy = _strategy(tf, config.strategy)
        with strategy.scope():
            model = build_keras_model(keras)
            model.compile(optimizer=keras.optimizers.Adam(config.lr),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"], jit_compile=config.jit_compile)
        dataset = train_dataset(tf, train_data, batch_size=config.batch_size, seed=config.seed,
                                shard_by_data=legacy)
        log = EpochLog()
        callbacks = _callbacks(keras, config, log, len(train_data), out_dir)
        model.fit(dataset, epochs=config.epochs, verbose=2 if config.verbose else 0, callbacks=callbacks)
        plain = model if config.strategy == "none" else _plain_copy(keras, model)
        metrics = _metrics(tf, config, plain, train_data, eval_data, log)
        if out_dir is not None:
            export(tf, keras, plain, out_dir, legacy=legacy)
            metrics.write(out_dir)
        return metrics
    finally:
        restore()


def _apply_runtime_options(tf: ModuleType, keras: ModuleType, config: TrainConfig):
    """Set op determinism, eager and mixed-precision globals for this run; return what undoes them."""
    if config.eager_debug:
        tf.config.run_functions_eagerly(True)
    if config.mixed_precision:
        gpu = bool(tf.config.list_physical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")

    determinism = _determinism_switch()
    was_deterministic = determinism is not None and determinism[0]()
    tf.config.experimental.enable_op_determinism()

    def restore() -> None:  # leave the process as we found it (tests train in-process)
        tf.config.run_functions_eagerly(False)
        keras.mixed_precision.set_global_policy("float32")
        if determinism is not None and not was_deterministic:
            determinism[1]()

    return restore


def _determinism_switch():
    """(is_enabled, disable) from TF's private config module, or None where this TF lacks them."""
    try:
        from tensorflow.python.framework import config as tf_config

        return tf_config.is_op_determinism_enabled, tf_config.disable_op_determinism
    except (ImportError, AttributeError):
        return None


def _strategy(tf: ModuleType, name: str):
    if name == "none":
        return tf.distribute.get_strategy()  # the default, no-op strategy
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            from reference_models.errors import UsageError

            raise UsageError("--strategy multi-worker needs TF_CONFIG describing the cluster and this task")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}")


def _callbacks(keras: ModuleType, config: TrainConfig, log: EpochLog, samples: int, out_dir: Path | None) -> list:
    callbacks = [_epoch_timer(keras, log, config.epochs, samples)]
    if config.stop_below_loss is not None:
        callbacks.append(_stop_below_loss(keras, config.stop_below_loss))
    if config.lr_schedule != "none":
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: config.lr * lr_factor(config.lr_schedule, epoch, config.epochs)))
    if out_dir is not None:
        (Path(out_dir) / CHECKPOINT_FILE).parent.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(str(Path(out_dir) / CHECKPOINT_FILE),
                                                         save_weights_only=True, verbose=0))
    return callbacks


def _stop_below_loss(keras: ModuleType, threshold: float):
    """The guide's custom callback: stop training once the epoch's loss falls below ``threshold``."""

    class StopBelowLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs and logs.get("loss", float("inf")) < threshold:
                self.model.stop_training = True

    return StopBelowLoss()


def _epoch_timer(keras: ModuleType, log: EpochLog, epochs: int, samples: int):
    """Times each epoch and records its loss and samples/s in ``log`` (and prints one line)."""

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            log.add(epoch, epochs, float(logs["loss"]), samples, time.perf_counter() - self.start, echo=True)

    return EpochTimer()


def _plain_copy(keras: ModuleType, model):
    """A strategy-free copy with the trained weights, so evaluation and export run no collectives."""
    copy = build_keras_model(keras)
    copy.set_weights(model.get_weights())
    return copy


def predict_logits(model, images_nhwc: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Float32 logits for ``[N, 28, 28, 1]`` normalised images."""
    outs = [np.asarray(model(images_nhwc[i:i + batch_size], training=False), dtype=np.float32)
            for i in range(0, len(images_nhwc), batch_size)]
    return np.concatenate(outs)


def _metrics(tf, config: TrainConfig, model, train_data: MnistArrays, eval_data: MnistArrays,
             log: EpochLog) -> RunMetrics:
    acc = accuracy(predict_logits(model, normalize_nhwc(eval_data.images)), eval_data.labels)
    seconds = sum(log.seconds)
    return RunMetrics(
        framework="keras", epochs=len(log.losses), batch_size=config.batch_size, lr=config.lr, seed=config.seed,
        train_samples=len(train_data), eval_samples=len(eval_data), train_source=train_data.source,
        eval_source=eval_data.source, test_accuracy=acc, final_loss=log.losses[-1], train_seconds=seconds,
        samples_per_second=sum(log.samples) / seconds if seconds else float("nan"),
        epoch_losses=log.losses, epoch_samples_per_second=log.samples_per_second,
        extra={"strategy": config.strategy, "task": _task(), "jit_compile": config.jit_compile,
               "mixed_precision": config.mixed_precision, "eager_debug": config.eager_debug,
               "lr_schedule": config.lr_schedule, "weights_sha256": weights_checksum(model.get_weights()),
               "tensorflow": tf.__version__},
    )


def _task() -> dict:
    """This process's TF_CONFIG task (``{}`` outside multi-worker)."""
    try:
        return json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except json.JSONDecodeError:
        return {}


def export(tf: ModuleType, keras: ModuleType, model, out_dir: Path, *, legacy: bool) -> None:
    """Write ``saved_model/`` (with ``serving_default``) and ``model.keras``."""
    saved = Path(out_dir) / SAVED_MODEL_DIR
    if legacy:
        tf.saved_model.save(model, str(saved))  # tf_keras: serving_default from the functional input
    else:
        model.export(str(saved), format="tf_saved_model", verbose=False)
    model.save(str(Path(out_dir) / KERAS_FILE))


def load_serving(saved_model_dir: Path):
    """The ``serving_default`` function of an exported SavedModel (returns a dict of outputs)."""
    tf = import_tensorflow()
    return tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]


