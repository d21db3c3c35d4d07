"""tf.data pipelines over uint8 `Split`s: a resumable, deterministic training stream and an in-order eval stream.

Images stay uint8 in memory (one tensor on the host); each batch is gathered by index, converted to
float32 in [0, 1] (x / 255) and its labels to one-hot float32, only when it is produced.

Determinism, so that a run resumed at epoch e sees exactly the batches an uninterrupted run would:
  * epoch e's order is a permutation of the training set drawn from the stateless seed (seed, e);
  * the augmentation seed of a batch is derived from (seed, e, step) only.
Nothing depends on iterator state, on how many batches were consumed before, or on thread timing
(`deterministic=True`).

Limit: the uint8 arrays are captured by the tf.data graph; tf.data can serialise its graph with the
captured tensor as a constant, which fails above 2 GB (about 700K 32x32x3 images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfrobust.augment.common import RNG_ALG
from tfrobust.data.datasets import Split
from tfrobust.errors import UserError

Batch = tuple[tf.Tensor, tf.Tensor]
AugmentFn = Callable[[dict, tf.Tensor], dict]

# Separates the augmentation seed stream from the shuffling seed [seed, epoch].
_AUGMENT_STREAM = 0x5EED_A06


def to_float_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 [..., H, W, C] -> float32 in [0, 1], as x / 255 (what numpy users and the evaluator compute)."""
    return tf.cast(images, tf.float32) / 255.0


def epoch_permutation(num_examples: int, seed: int, epoch) -> tf.Tensor:
    """The order of epoch `epoch`: a permutation of 0..N-1 that depends only on (seed, epoch).

    Drawn with Philox (`RNG_ALG`, the augmentations' algorithm), so it is the same on every device.
    """
    shuffle_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=shuffle_seed, alg=RNG_ALG
    )


def batch_seed(seed: int, epoch, step) -> tf.Tensor:
    """The int64 [2] augmentation seed of batch `step` of epoch `epoch`: depends only on (seed, epoch, step)."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(_AUGMENT_STREAM, tf.int64)])
    base = tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64), alg=RNG_ALG)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64), alg=RNG_ALG)


def check_device_batches(batch_size: int, devices: int, repeats: int) -> None:
    """The global batch must cut into `devices` device batches, each holding whole augmentation repeats."""
    if devices < 1 or batch_size % devices:
        raise UserError(
            f"--batch-size {batch_size} is not divisible by the {devices} replicas of the strategy: "
            f"use a multiple of {devices}"
        )
    if repeats < 1 or (batch_size // devices) % repeats:
        raise UserError(
            f"--aug-repeats {repeats} must be >= 1 and divide the batch of each of the {devices} replicas "
            f"({batch_size // devices} of --batch-size {batch_size}): use a multiple of {devices * repeats}"
        )


def train_dataset(
    split: Split,
    *,
    num_classes: int,
    batch_size: int,
    seed: int,
    first_epoch: int,
    steps_per_epoch: int,
    augment: AugmentFn | None,
    repeats: int = 1,
    devices: int = 1,
    first_step: int = 0,
) -> tf.data.Dataset:
    """An endless stream of `(images float32 [B,H,W,C] in [0,1], labels float32 one-hot [B,K])` batches.

    Epochs `first_epoch`, `first_epoch + 1`, ... each yield `steps_per_epoch` batches of exactly
    `batch_size` examples: the first `steps_per_epoch * batch_size` indices of the epoch's permutation,
    so no image repeats within an epoch and the remainder is dropped. `augment(batch, seed)` runs on
    each batch (dict with "images" and one-hot "labels") with the seed `batch_seed(seed, epoch, step)`.

    Augmentation repeats (`repeats` = R, the reference's "emulated workers", 4 in DeepMind's
    `adversarial_robustness/jax/experiment.py`; its datasets.py `_repeat_batch`): each batch holds
    B / R distinct images, each in R consecutive rows (a a a a b b b b ...), augmented independently.
    The reference lays out every device batch this way; cutting this batch into `devices` consecutive
    blocks (one per replica, as tf.distribute does) gives exactly that, so `devices` only checks that
    R divides each block. Every row is filled: the reference's experiment.py also sends this stream
    through `_dataset`'s `ratio` clamp min(round(d * 1.0), d - 1) when there is no extra data, which
    leaves each device batch one image (R rows) short (1020 rows for a batch of 1024 on one device);
    the paper states the full batch (512 without added data).
    The stream starts at batch `first_step` of epoch `first_epoch` (training resumes mid-epoch this way:
    its epochs need not coincide with these data epochs); the skipped batches cost no gather or augment.
    """
    n = len(split.labels)
    _check_batch_size(batch_size)
    if batch_size > n:
        raise UserError(f"batch size {batch_size} is larger than the training set ({n} images): lower --batch-size")
    if steps_per_epoch < 1 or steps_per_epoch * batch_size > n:
        raise UserError(
            f"{steps_per_epoch} steps of {batch_size} images do not fit in one epoch of {n} images: "
            f"use at most {n // batch_size} steps per epoch"
        )
    if first_epoch < 0:
        raise UserError(f"first epoch must be >= 0, got {first_epoch}")
    if not 0 <= first_step < steps_per_epoch:
        raise UserError(f"first step must be in 0..{steps_per_epoch - 1}, got {first_step}")
    _check_labels(split, num_classes)

    check_device_batches(batch_size, devices, repeats)
    images, labels = _host_tensors(split)
    distinct = batch_size // repeats
    per_epoch = steps_per_epoch * distinct

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order = epoch_permutation(n, seed, epoch)[:per_epoch]
        order = tf.reshape(order, [steps_per_epoch, distinct])  # static shape -> static batch size
        return tf.data.Dataset.from_tensor_slices(
            (order, tf.fill([steps_per_epoch], epoch), tf.range(steps_per_epoch, dtype=tf.int64))
        )

    def make_batch(index: tf.Tensor, epoch: tf.Tensor, step: tf.Tensor) -> Batch:
        if repeats > 1:
            index = tf.repeat(index, repeats)
        x = to_float_images(tf.gather(images, index))
        y = tf.one_hot(tf.gather(labels, index), num_classes, dtype=tf.float32)
        if augment is not None:
            out = augment({"images": x, "labels": y}, batch_seed(seed, epoch, step))
            x, y = out["images"], out["labels"]
        return x, y

    # flat_map keeps epochs strictly in order; `counter` makes the stream endless.
    ds = tf.data.Dataset.counter(start=first_epoch, dtype=tf.int64).flat_map(epoch_batches).skip(first_step)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: Split, *, num_classes: int, batch_size: int, limit: int | None = None) -> tf.data.Dataset:
    """`(images float32 [B,H,W,C] in [0,1], labels float32 one-hot [B,K])` in file order, once.

    The last batch may be smaller. With `limit`, only the first `limit` examples.
    """
    n = len(split.labels)
    if limit is not None:
        if limit < 0:
            raise UserError(f"example limit must be >= 0, got {limit}: fix --limit")
        n = min(n, int(limit))
    _check_batch_size(batch_size)
    _check_labels(split, num_classes)
    images, labels = _host_tensors(split)

    def make_batch(index: tf.Tensor) -> Batch:
        x = to_float_images(tf.gather(images, index))
        y = tf.one_hot(tf.gather(labels, index), num_classes, dtype=tf.float32)
        return x, y

    ds = tf.data.Dataset.range(n).batch(batch_size)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _host_tensors(split: Split) -> tuple[tf.Tensor, tf.Tensor]:
    # On the host (as the reference does for its npz data): tf.data runs on the CPU, and a 150 MB
    # dataset has no business in accelerator memory.
    with tf.device("/CPU:0"):
        images = tf.constant(np.ascontiguousarray(split.images, dtype=np.uint8))
        labels = tf.constant(np.asarray(split.labels, dtype=np.int64))
    return images, labels


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"batch size must be a positive integer, got {batch_size!r}: fix --batch-size")


def _check_labels(split: Split, num_classes: int) -> None:
    if split.images.shape[0] != split.labels.shape[0]:
        raise UserError(f"{split.images.shape[0]} images but {split.labels.shape[0]} labels")
    if num_classes < 1:
        raise UserError(f"number of classes must be positive, got {num_classes}")
    if split.labels.size and (split.labels.min() < 0 or split.labels.max() >= num_classes):
        # tf.one_hot silently turns out-of-range labels into all-zero rows: refuse them here.
        raise UserError(
            f"labels range over {int(split.labels.min())}..{int(split.labels.max())} but there are "
            f"{num_classes} classes: labels must be in 0..{num_classes - 1}"
        )
