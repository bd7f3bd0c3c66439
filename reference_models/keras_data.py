"""MNIST for Keras: a ``tf.data`` pipeline with the same normalisation as the torch side.

``from_tensor_slices`` over the uint8 arrays -> ``shuffle`` (seeded, reshuffled each epoch) -> ``batch``
-> ``map(normalize)`` (vectorised per batch) -> ``prefetch(AUTOTUNE)``. The map computes
``(x / 255 - 0.5) / 0.5`` in float32, bit-identical to ``reference_models.data.normalize_nhwc``.
"""

from __future__ import annotations

from types import ModuleType

from reference_models.data import MnistArrays


def normalize(tf: ModuleType, images, labels):
    """``[B, 28, 28]`` uint8 -> ``[B, 28, 28, 1]`` float32 in [-1, 1]; labels pass through."""
    x = tf.cast(images, tf.float32) / 255.0
    x = (x - 0.5) / 0.5
    return x[..., None], labels


def train_dataset(tf: ModuleType, arrays: MnistArrays, *, batch_size: int, seed: int, shard_by_data: bool = False):
    """The shuffled, batched, normalised, prefetched training set.

    ``shard_by_data`` sets the auto-shard policy to DATA, which multi-worker training needs for an
    in-memory dataset (there are no files to shard by).
    """
    ds = tf.data.Dataset.from_tensor_slices((arrays.images, arrays.labels))
    ds = ds.shuffle(len(arrays), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: normalize(tf, x, y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if shard_by_data:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds


def eval_dataset(tf: ModuleType, arrays: MnistArrays, *, batch_size: int = 1000):
    """The eval split, in order, batched and normalised."""
    ds = tf.data.Dataset.from_tensor_slices((arrays.images, arrays.labels)).batch(batch_size)
    return ds.map(lambda x, y: normalize(tf, x, y)).prefetch(tf.data.AUTOTUNE)
