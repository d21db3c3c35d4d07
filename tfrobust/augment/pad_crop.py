"""Pad & Crop: the paper's baseline augmentation (random padding-and-cropping plus a random horizontal flip).

Rebuffi, Gowal et al. 2021 call it "Pad & Crop" and use it as the baseline of every comparison. The
reference JAX code (`_random_jitter` in deepmind-research `adversarial_robustness/jax/datasets.py`)
pads 4 pixels with `tf.pad` (constant zeros: the default mode), takes a random 32x32 crop and then
`tf.image.random_flip_left_right`. This layer does exactly that, with zero padding, for a whole batch
at once. (Zero padding is also the default of torchvision's `RandomCrop(32, padding=4)`.)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfrobust.augment import common
from tfrobust.augment.batch_augmentation import BatchAugmentation


@keras.saving.register_keras_serializable(package="tfrobust")
class PadCrop(BatchAugmentation):
    """Zero-pads each image by `padding` pixels, crops back to H x W at a random offset, flips at random.

    Inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`;
    labels pass through untouched (they must be one-hot or soft: integer labels are rejected so they
    cannot be silently corrupted further down the augmentation chain, see docs/method.md, "Keras pitfalls").

    Every example gets its own crop offset (uniform in 0..2*padding along each axis, as
    `tf.image.random_crop` on the padded image) and its own flip decision (probability 1/2). The batch
    is processed with two batched gathers (rows, then columns) and a mask for the padded border: no
    Python or `tf.map_fn` loop over examples, and the result is pixel-exact.

    `call(inputs, training=None, seed=None)`:
      * `training`: only `True` augments. `None` is treated as `False` (unlike Keras's own
        preprocessing layers) so evaluation code that forgets the flag never sees augmented images.
      * `seed`: int32/int64 tensor of shape [2] for the stateless RNG; the same seed gives the same
        output eagerly, inside `tf.function` and inside a `tf.data` map. When `None`, a seed is drawn
        from the layer's `keras.random.SeedGenerator` (initialised from the constructor's `seed`).
        Inside `tf.data`, always pass a seed: the generator's state is a variable.

    Example::

        layer = tfrobust.layers.PadCrop(padding=4)   # the paper's baseline: 4-pixel pad, crop, flip
        batch = layer({"images": images, "labels": one_hot}, training=True, seed=tf.stack([0, step]))
    """

    def __init__(self, padding: int = 4, flip: bool = True, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if int(padding) != padding or padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
        self.padding = int(padding)
        self.flip = bool(flip)

    def is_identity(self) -> bool:
        return self.padding == 0 and not self.flip

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return pad_crop_flip(images, seed, padding=self.padding, flip=self.flip), labels

    def get_config(self) -> dict:
        return {**super().get_config(), "padding": self.padding, "flip": self.flip}


def pad_crop_flip(images: tf.Tensor, seed: tf.Tensor, *, padding: int, flip: bool) -> tf.Tensor:
    """The batched transform behind `PadCrop`: per-example zero-pad + random crop (+ random flip).

    Output pixel (b, i, j) is the padded image's pixel (oy_b + i, ox_b + j'), where j' = W-1-j when
    example b is flipped (flipping the crop), read from the unpadded image at (oy_b + i - padding,
    ox_b + j' - padding) and zero where that lies outside it. `seed`: int64 [2].
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    crop_seed_y, crop_seed_x, flip_seed = common.split_seed(seed, 3)
    # Offsets into the padded image, 0..2*padding inclusive (maxval is exclusive).
    offset_y = common.uniform([batch], crop_seed_y, 0, 2 * padding + 1, tf.int32)
    offset_x = common.uniform([batch], crop_seed_x, 0, 2 * padding + 1, tf.int32)
    rows = offset_y[:, None] - padding + tf.range(height)[None, :]  # [B, H] rows of the unpadded image
    cols_out = tf.range(width)[None, :]
    if flip:
        do_flip = common.uniform([batch], flip_seed) < 0.5
        cols_out = tf.where(do_flip[:, None], width - 1 - cols_out, cols_out)  # [B, W]
    cols = offset_x[:, None] - padding + cols_out  # [B, W] columns of the unpadded image
    rows_ok = (rows >= 0) & (rows < height)
    cols_ok = (cols >= 0) & (cols < width)
    # Gather with clamped indices, then zero the pixels that came from the padding.
    gathered = tf.gather(images, tf.clip_by_value(rows, 0, height - 1), axis=1, batch_dims=1)
    gathered = tf.gather(gathered, tf.clip_by_value(cols, 0, width - 1), axis=2, batch_dims=1)
    inside = rows_ok[:, :, None, None] & cols_ok[:, None, :, None]  # [B, H, W, 1]
    return tf.where(inside, gathered, tf.zeros_like(gathered))
