"""RandAugment (Cubuk et al. 2020): N operations drawn uniformly at random, all at magnitude M, per image.

Cubuk et al. 2020 (Sec. 3): K = 14 operations (identity, autoContrast, equalize, rotate, solarize, color,
posterize, contrast, brightness, sharpness, shear-x, shear-y, translate-x, translate-y); each image gets
N of them, each drawn uniformly with replacement and applied in sequence, all at the same magnitude M on
the 0..10 scale (10 is each operation's maximum). The defaults N = 3, M = 5 are the paper's setting for
Wide-ResNet-28-10 on CIFAR-10. Operations and magnitude mappings: image_ops.py (the AutoAugment table);
signed operations draw their sign at random. With that table's unsigned blend factor 0.1 + 0.18 M,
Color/Contrast/Brightness/Sharpness are the identity at exactly M = 5 (factor 1.0) and weaken images
below it; this follows the AutoAugment code the official RandAugment code reuses, and some
re-implementations (torchvision) use 1 +- 0.09 M instead.

Here the operations are drawn for every image separately, as the paper's per-image procedure does.
`keras.layers.RandAugment` draws its `num_ops` operation indices once per call, so every image of a
batch gets the same operations; that is a different augmentation when it runs on batches.

Rebuffi, Gowal et al. 2021 (Sec. 6.2, Fig. 6) find RandAugment, like AutoAugment, improves clean but
lowers robust accuracy under TRADES.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfrobust.augment import common, image_ops
from tfrobust.augment.batch_augmentation import BatchAugmentation

# Cubuk et al. 2020, Sec. 3: the K = 14 operations, in the paper's order (an image's draw is an index
# into this list): the operations of `image_ops.OPS` marked `randaugment`.
RANDAUGMENT_OPS = image_ops.RANDAUGMENT_OPS


@keras.saving.register_keras_serializable(package="tfrobust")
class RandAugment(BatchAugmentation):
    """Applies `num_ops` operations, drawn uniformly per image, at magnitude `magnitude` (0..10).

    Inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`;
    labels pass through untouched (integer labels are rejected). `fill` is the value of pixels that
    geometric operations bring in from outside the image.

    `call(inputs, training=None, seed=None)`: as every `BatchAugmentation` (only `training=True`
    augments; integer [2] `seed`, else the layer's generator, never inside tf.data).

    Example::

        randaugment = tfrobust.layers.RandAugment(num_ops=3, magnitude=5)
        batch = randaugment({"images": images, "labels": one_hot}, training=True, seed=tf.stack([6, step]))
    """

    def __init__(self, num_ops: int = 3, magnitude: float = 5.0, fill: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(num_ops, bool) or int(num_ops) != num_ops or num_ops < 0:
            raise ValueError(f"num_ops must be a non-negative integer, got {num_ops!r}")
        if isinstance(magnitude, bool) or not 0.0 <= float(magnitude) <= image_ops.MAX_LEVEL:
            raise ValueError(f"magnitude must be in [0, {image_ops.MAX_LEVEL:g}], got {magnitude!r}")
        if isinstance(fill, bool) or not 0.0 <= float(fill) <= 1.0:
            raise ValueError(f"fill must be a number in [0, 1], got {fill!r}")
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.fill = float(fill)

    def is_identity(self) -> bool:
        return self.num_ops == 0

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.augment_images(images, seed), labels

    def draw(self, seed: tf.Tensor, batch) -> tuple[tf.Tensor, tf.Tensor]:
        """Per image: operation indices into `image_ops.OP_NAMES` [B, num_ops] and signs [B, num_ops]."""
        seed_op, seed_sign = common.split_seed(seed, 2)
        choice = common.uniform([batch, self.num_ops], seed_op, 0, len(RANDAUGMENT_OPS), tf.int32)
        ops = tf.gather(tf.constant([image_ops.OP_INDEX[name] for name in RANDAUGMENT_OPS], tf.int32), choice)
        signs = tf.where(common.uniform([batch, self.num_ops], seed_sign) < 0.5, -1.0, 1.0)
        return ops, signs

    def augment_images(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(images)[0]
        ops, signs = self.draw(seed, batch)
        level = tf.fill([batch], tf.constant(self.magnitude, tf.float32))
        for stage in range(self.num_ops):
            images = image_ops.apply_ops(
                images, ops[:, stage], level, signs[:, stage], fill=self.fill, ops_in_use=RANDAUGMENT_OPS
            )
        return images

    def get_config(self) -> dict:
        return {**super().get_config(), "num_ops": self.num_ops, "magnitude": self.magnitude, "fill": self.fill}
