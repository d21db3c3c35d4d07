"""Cutout (DeVries & Taylor 2017): one square occlusion per image, anywhere in it.

Rebuffi, Gowal et al. 2021 (Sec. 4 and App. B, Fig. 9(b)) use a single square of fixed "window length"
whose position is random "anywhere in the original image", and find 18 pixels best on 32x32 CIFAR-10
images with and without weight averaging. The square's centre is uniform over the pixels of the image
and the parts of the square outside the image are dropped, as in the reference code of DeVries &
Taylor (`util/cutout.py`: centre `randint(h)`, corners clipped to the image).

Fill colour. DeVries & Taylor apply Cutout after per-channel normalisation, so their "zeros" are the
dataset's mean colour (about 0.47 grey on CIFAR-10) in pixel space; Cubuk et al.'s AutoAugment code,
which applies Cutout to CIFAR images too, also fills with the mean colour. The paper says only "inserts
empty image patches". Here the model normalises inside itself and augmentations see pixels in [0, 1],
so the default `fill=0.5` is that mid-grey (the centre of the pixel range, within 0.05 of the CIFAR-10
and SVHN channel means). `fill=0.0` gives black patches in pixel space, as Rice et al. 2020 used in
adversarial training; a per-channel sequence (e.g. the dataset mean) is accepted too.

Differences from the reference: DeVries & Taylor's box is [c - L//2, c + L//2), which is L-1 pixels wide
for odd L; here it is [c - L//2, c - L//2 + L), exactly L wide for every L (the same for even L such
as 18).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tfrobust.augment import common
from tfrobust.augment.batch_augmentation import BatchAugmentation


@keras.saving.register_keras_serializable(package="tfrobust")
class Cutout(BatchAugmentation):
    """Fills one `window` x `window` square per image (clipped to the image) with `fill`.

    Inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`;
    labels pass through untouched. Integer labels are rejected (see `PadCrop`).

    The square's top-left corner is (cy - window // 2, cx - window // 2) with the centre (cy, cx)
    uniform over the H x W pixel grid, independently for every example; pixels of the square that fall
    outside the image are simply not there (DeVries & Taylor 2017 let the patch lie partly outside the
    image; their code clips it). The paper's best window is 18 on 32x32 images; `build_augmentation`
    scales it to round(18 H / 32) for other sizes.

    `call(inputs, training=None, seed=None)`: only `training=True` augments (`None` means no, as in
    `PadCrop`); `seed` is an integer tensor of shape [2]; without it the layer's
    `keras.random.SeedGenerator` (from the constructor's `seed`) is used, which must not happen inside
    tf.data.

    Example::

        cutout = tfrobust.layers.Cutout(window=18)   # 18 x 18 grey squares on 32 x 32 images
        batch = cutout({"images": images, "labels": one_hot}, training=True, seed=tf.stack([3, step]))
    """

    def __init__(self, window: int = 18, fill: float | Sequence[float] = 0.5, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(window, bool) or int(window) != window or window < 1:
            raise ValueError(f"window must be a positive integer number of pixels, got {window!r}")
        self.window = int(window)
        self.fill = _check_fill(fill)

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return cutout(images, seed, window=self.window, fill=self.fill), labels

    def get_config(self) -> dict:
        fill = list(self.fill) if isinstance(self.fill, tuple) else self.fill
        return {**super().get_config(), "window": self.window, "fill": fill}


def cutout_boxes(seed: tf.Tensor, batch, height, width, window: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example top-left corners (top, left), int32 [B] each, of the unclipped `window` squares.

    The centres are uniform over the pixel grid (0..H-1, 0..W-1), so a corner ranges over
    -window//2 .. H-1-window//2 and the square can stick out of any side.
    """
    seed_y, seed_x = common.split_seed(seed, 2)
    centre_y = common.uniform([batch], seed_y, 0, height, tf.int32)
    centre_x = common.uniform([batch], seed_x, 0, width, tf.int32)
    return centre_y - window // 2, centre_x - window // 2


def cutout(images: tf.Tensor, seed: tf.Tensor, *, window: int, fill: float | tuple[float, ...] = 0.5) -> tf.Tensor:
    """The batched transform behind `Cutout`: pixel (b, i, j) becomes `fill` when it lies in b's square."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    top, left = cutout_boxes(seed, batch, height, width, window)
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + window)  # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + window)  # [B, W]
    inside = in_rows[:, :, None, None] & in_cols[:, None, :, None]  # [B, H, W, 1]
    fill_value = tf.cast(tf.constant(fill, tf.float32), images.dtype)  # scalar or [C]: broadcasts over channels
    return tf.where(inside, tf.broadcast_to(fill_value, tf.shape(images)), images)


def _check_fill(fill) -> float | tuple[float, ...]:
    # Fill colours outside [0, 1] would break the pixel range every later stage (and the attack's
    # projection onto [0, 1]) relies on.
    values = [fill] if isinstance(fill, (int, float)) else list(fill)
    if not values or any(isinstance(v, bool) or not 0.0 <= float(v) <= 1.0 for v in values):
        raise ValueError(f"fill must be a number or per-channel sequence in [0, 1], got {fill!r}")
    return float(fill) if isinstance(fill, (int, float)) else tuple(float(v) for v in values)
