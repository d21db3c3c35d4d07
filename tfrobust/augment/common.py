"""Helpers shared by the augmentation layers: input checks, seeds, per-example permutations, Beta draws.

Every layer of `tfrobust.augment` follows these conventions (`BatchAugmentation`, batch_augmentation.py,
implements them for all but `Compose`):
  * inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`;
  * integer labels are refused with a ValueError (docs/method.md, "Keras pitfalls": Keras's own MixUp and
    CutMix silently corrupt integer labels);
  * `call(inputs, training=None, seed=None)`: only `training=True` augments; `seed` is an integer
    tensor of shape [2] for the stateless Philox generator, so one seed gives one result eagerly,
    inside `tf.function` and inside a `tf.data` map.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Philox on every device, so one seed gives the same draws on CPU, GPU and inside tf.data; the default
# "auto_select" may pick a different algorithm per device. data/pipeline.py shuffles with it too.
RNG_ALG = "philox"

__all__ = [
    "RNG_ALG",
    "as_seed",
    "check_batch",
    "resolve_seed",
    "split_seed",
    "permutation",
    "sample_beta",
    "uniform",
    "exact_ratio",
    "check_blocks",
    "block_partners",
    "per_block",
]


def check_batch(inputs, layer_name: str) -> None:
    """Raises a ValueError unless `inputs` is `{"images": ..., "labels": float [B, K]}`.

    Done before looking at `training`, so a pipeline that feeds integer labels fails on its first batch
    whether or not it augments, instead of corrupting labels later.
    """
    if not isinstance(inputs, dict) or "images" not in inputs or "labels" not in inputs:
        raise ValueError(f'{layer_name} expects a dict {{"images": [B,H,W,C] floats, "labels": [B,K] floats}}')
    labels = inputs["labels"]
    if not tf.as_dtype(labels.dtype).is_floating:
        raise ValueError(
            f"{layer_name} needs one-hot or soft float labels of shape [B, K], got dtype {labels.dtype}: "
            "one-hot encode integer labels before augmentation"
        )
    if tf.TensorShape(labels.shape).rank not in (None, 2):
        raise ValueError(f"{layer_name} needs labels of shape [B, K], got shape {labels.shape}")
    images = inputs["images"]
    if tf.TensorShape(images.shape).rank not in (None, 4):
        raise ValueError(f"{layer_name} needs images of shape [B, H, W, C], got shape {images.shape}")
    if not tf.as_dtype(images.dtype).is_floating:
        raise ValueError(f"{layer_name} needs float images in [0, 1], got dtype {images.dtype}")


def as_seed(seed) -> tf.Tensor:
    """A shape-[2] int64 seed tensor from any integer tensor/sequence (SeedGenerator state, tf.data ints)."""
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise ValueError(f"seed must be an integer tensor of shape [2], got dtype {seed.dtype}")
    seed = tf.cast(seed, tf.int64)
    seed.shape.assert_is_compatible_with([2])
    return seed


def resolve_seed(seed, generator: keras.random.SeedGenerator) -> tf.Tensor:
    """The int64 [2] seed to use: the caller's, else the layer generator's next one (not inside tf.data)."""
    if seed is None:
        seed = generator.next()
    return as_seed(seed)


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent [2] seeds from one, with Philox (so every device splits alike)."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num, alg=RNG_ALG))


def uniform(shape, seed: tf.Tensor, minval=0.0, maxval=1.0, dtype=tf.float32) -> tf.Tensor:
    """`tf.random.stateless_uniform` with Philox; integer dtypes draw from [minval, maxval)."""
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval, dtype=dtype, alg=RNG_ALG)


def permutation(batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A uniformly random permutation of 0..batch-1 (int32): the mixing partners of a batch.

    As `torch.randperm` in the reference CutMix/MixUp/RICAP code, an example may be its own partner
    (about one per batch on average); mixing it with itself leaves it unchanged, labels included.
    """
    return tf.random.experimental.stateless_shuffle(tf.range(batch), seed=seed, alg=RNG_ALG)


def sample_beta(shape, seed: tf.Tensor, concentration1: float, concentration0: float) -> tf.Tensor:
    """Beta(concentration1, concentration0) samples as float32, via two Gamma draws: X / (X + Y).

    X ~ Gamma(a), Y ~ Gamma(b) independent gives X / (X + Y) ~ Beta(a, b) (e.g. Devroye 1986, IX.4).
    Drawn in float64: `tf.random.stateless_gamma` clamps draws to the dtype's smallest normal number,
    and for small concentrations (MixUp alpha 0.1-0.4) float32 Gammas underflow often enough to bias
    lambda; float64 moves that to probabilities below 1e-60. The clamp also keeps X + Y > 0.
    `tf.random.stateless_gamma` has no `alg` argument: it picks Philox on CPU and GPU (the same
    numbers on both, per its documentation), which is where tf.data and training run.
    """
    seed_x, seed_y = split_seed(seed, 2)
    x = tf.random.stateless_gamma(shape, seed=seed_x, alpha=tf.constant(concentration1, tf.float64), dtype=tf.float64)
    y = tf.random.stateless_gamma(shape, seed=seed_y, alpha=tf.constant(concentration0, tf.float64), dtype=tf.float64)
    return tf.cast(x / (x + y), tf.float32)


def exact_ratio(count: tf.Tensor, total) -> tf.Tensor:
    """count / total for integers, correctly rounded to float32 in eager, tf.function and tf.data alike.

    A float32 division by a constant (the pixel count of a static image shape) is rewritten in graph mode
    into a multiplication by the reciprocal, which is an ulp off for some counts; divided in float64,
    either form rounds to the same float32 (a ratio of integers below 2^24 never lies within 1e-16 of
    a float32 rounding boundary), which is also numpy's float32(count) / float32(total).
    """
    return tf.cast(tf.cast(count, tf.float64) / tf.cast(total, tf.float64), tf.float32)


def check_blocks(images: tf.Tensor, devices: int, sub_batches: int, layer_name: str) -> None:
    """Raises a ValueError unless the batch splits into `devices` blocks of `sub_batches` sub-batches.

    Checked on the static batch size (tf.data batches of the training pipelines have one); a batch
    whose size is only known at run time is checked by `block_partners`' run-time assertion instead.
    """
    batch = tf.TensorShape(images.shape)[0]
    if batch is not None and batch % (devices * sub_batches):
        raise ValueError(
            f"{layer_name} draws per device batch: a batch of {batch} does not split into {devices} device "
            f"batches of {sub_batches} sub-batches"
        )


def block_partners(seed: tf.Tensor, batch, devices: int, sub_batches: int) -> tf.Tensor:
    """Mixing partners (int32 [B]) drawn per device batch and shared by its sub-batches.

    The reference (DeepMind `adversarial_robustness/jax/utils.py`, `cutmix(..., split)`) mixes each
    device batch of n rows as `split` sub-batches, sub-batch s holding rows s, s + S, s + 2S, ...
    (`einops.rearrange('(b1 b2) ... -> b1 b2 ...', b2=split)`, which undoes the consecutive repeats of
    its datasets.py `_repeat_batch`), and draws one permutation `idx` of 0..n/S-1 for the whole device
    batch, applied to every sub-batch (`jax.vmap` over the sub-batches closes over `idx`). So row
    S i + s of a block is paired with row S idx[i] + s of the same block. Here the batch is `devices`
    consecutive blocks of n = B / devices rows (block k is replica k's slice under tf.distribute), each
    with its own permutation.
    """
    devices, sub_batches = int(devices), int(sub_batches)
    n = batch // devices
    m = n // sub_batches
    seeds = split_seed(seed, devices) if devices > 1 else [seed]
    parts = []
    for k, block_seed in enumerate(seeds):
        idx = permutation(m, block_seed)  # [m]
        rows = idx[:, None] * sub_batches + tf.range(sub_batches, dtype=idx.dtype)[None, :]  # [m, S]
        parts.append(tf.reshape(rows, [-1]) + tf.cast(k * n, idx.dtype))
    partner = tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    # A batch that does not split evenly would leave rows without partners: refuse it at run time too.
    tf.debugging.assert_equal(
        tf.size(partner), tf.cast(batch, tf.int32), message="batch does not split into device batches"
    )
    return partner


def per_block(values: tf.Tensor, batch, devices: int) -> tf.Tensor:
    """Repeats one value per device block (`values` [devices, ...]) over the block's B / devices rows."""
    return tf.repeat(values, batch // int(devices), axis=0)
