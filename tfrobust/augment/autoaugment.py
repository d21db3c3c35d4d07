"""AutoAugment (Cubuk et al. 2019) with the CIFAR-10 and SVHN policies, one sub-policy per image.

A policy is 25 sub-policies; each sub-policy is two operations, each with a probability and a magnitude
(0..10). Every image draws one sub-policy uniformly, then applies its first operation with its
probability and then its second operation with its probability (Cubuk et al. 2019, Sec. 3). The tables
below are the paper's "policy found on reduced CIFAR-10" and "policy found on reduced SVHN" (their
App. A tables; the same as torchvision's `AutoAugmentPolicy.CIFAR10/SVHN`); magnitudes of operations
that have none are written as 0. Operations and magnitude mappings: image_ops.py.

Rebuffi, Gowal et al. 2021 (Sec. 6.2, Fig. 6) find AutoAugment raises clean accuracy but lowers robust
accuracy with TRADES; it is here to reproduce that comparison. The paper's CIFAR pipeline in Cubuk et al.
also pads-and-crops, flips and applies Cutout (16 px) around the policy: compose those explicitly
(`--aug padcrop+autoaugment+cutout`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfrobust.augment import common, image_ops
from tfrobust.augment.batch_augmentation import BatchAugmentation

Op = tuple[str, float, int]
SubPolicy = tuple[Op, Op]

# Cubuk et al. 2019, App. A, policy found on reduced CIFAR-10: (operation, probability, magnitude).
CIFAR10_POLICY: tuple[SubPolicy, ...] = (
    (("Invert", 0.1, 0), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 0), ("Equalize", 0.9, 0)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 0), ("Equalize", 0.5, 0)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 0), ("AutoContrast", 0.4, 0)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 0)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 0), ("Equalize", 0.6, 0)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 0)),
    (("AutoContrast", 0.8, 0), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 0)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 0), ("Invert", 0.1, 0)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 0)),
)

# Cubuk et al. 2019, App. A, policy found on reduced SVHN.
SVHN_POLICY: tuple[SubPolicy, ...] = (
    (("ShearX", 0.9, 4), ("Invert", 0.2, 0)),
    (("ShearY", 0.9, 8), ("Invert", 0.7, 0)),
    (("Equalize", 0.6, 0), ("Solarize", 0.6, 6)),
    (("Invert", 0.9, 0), ("Equalize", 0.6, 0)),
    (("Equalize", 0.6, 0), ("Rotate", 0.9, 3)),
    (("ShearX", 0.9, 4), ("AutoContrast", 0.8, 0)),
    (("ShearY", 0.9, 8), ("Invert", 0.4, 0)),
    (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
    (("Invert", 0.9, 0), ("AutoContrast", 0.8, 0)),
    (("Equalize", 0.6, 0), ("Rotate", 0.9, 3)),
    (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
    (("ShearY", 0.8, 8), ("Invert", 0.7, 0)),
    (("Equalize", 0.9, 0), ("TranslateY", 0.6, 6)),
    (("Invert", 0.9, 0), ("Equalize", 0.6, 0)),
    (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
    (("Invert", 0.8, 0), ("TranslateY", 0.0, 2)),
    (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
    (("Invert", 0.6, 0), ("Rotate", 0.8, 4)),
    (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
    (("ShearX", 0.1, 6), ("Invert", 0.6, 0)),
    (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
    (("ShearY", 0.8, 4), ("Invert", 0.8, 0)),
    (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
    (("ShearY", 0.8, 5), ("AutoContrast", 0.7, 0)),
    (("ShearX", 0.7, 2), ("Invert", 0.1, 0)),
)

# The policies name operations of `image_ops.OPS`, the one table of operation names.
POLICIES: dict[str, tuple[SubPolicy, ...]] = {"cifar10": CIFAR10_POLICY, "svhn": SVHN_POLICY}


@keras.saving.register_keras_serializable(package="tfrobust")
class AutoAugment(BatchAugmentation):
    """Applies one randomly drawn sub-policy of `policy` ("cifar10" or "svhn") to every image.

    Inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`;
    labels pass through untouched (integer labels are rejected). Each image draws its own sub-policy,
    application coins and signs (Keras's `RandAugment`, by contrast, draws its operations once per
    batch). `fill` is the value of pixels that geometric operations bring in from outside the image.

    `call(inputs, training=None, seed=None)`: as every `BatchAugmentation` (only `training=True`
    augments; integer [2] `seed`, else the layer's generator, never inside tf.data).

    Example::

        autoaugment = tfrobust.layers.AutoAugment(policy="cifar10")
        batch = autoaugment({"images": images, "labels": one_hot}, training=True, seed=tf.stack([5, step]))
    """

    def __init__(self, policy: str = "cifar10", fill: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; choose from {', '.join(POLICIES)}")
        if isinstance(fill, bool) or not 0.0 <= float(fill) <= 1.0:
            raise ValueError(f"fill must be a number in [0, 1], got {fill!r}")
        self.policy = policy
        self.fill = float(fill)
        table = POLICIES[policy]
        self._ops_in_use = tuple(sorted({name for sub in table for name, _, _ in sub}, key=image_ops.OP_INDEX.get))
        # [S, 2] tables of operation indices, probabilities and magnitudes.
        self._op_table = tuple(tuple(image_ops.OP_INDEX[name] for name, _, _ in sub) for sub in table)
        self._prob_table = tuple(tuple(float(p) for _, p, _ in sub) for sub in table)
        self._level_table = tuple(tuple(float(m) for _, _, m in sub) for sub in table)

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.augment_images(images, seed), labels

    def draw(self, seed: tf.Tensor, batch) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Per image: sub-policy [B], operations [B, 2] (Identity where the coin said no), levels and signs [B, 2]."""
        seed_sub, seed_coin, seed_sign = common.split_seed(seed, 3)
        sub = common.uniform([batch], seed_sub, 0, len(self._op_table), tf.int32)
        ops = tf.gather(tf.constant(self._op_table, tf.int32), sub)
        probs = tf.gather(tf.constant(self._prob_table, tf.float32), sub)
        levels = tf.gather(tf.constant(self._level_table, tf.float32), sub)
        # u < p applies the operation with probability p (p = 0: never, p = 1: always).
        applied = common.uniform([batch, 2], seed_coin) < probs
        ops = tf.where(applied, ops, image_ops.OP_INDEX["Identity"])
        signs = tf.where(common.uniform([batch, 2], seed_sign) < 0.5, -1.0, 1.0)
        return sub, ops, levels, signs

    def augment_images(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        _, ops, levels, signs = self.draw(seed, tf.shape(images)[0])
        for stage in range(2):  # the sub-policy's two operations, in order
            images = image_ops.apply_ops(
                images, ops[:, stage], levels[:, stage], signs[:, stage], fill=self.fill, ops_in_use=self._ops_in_use
            )
        return images

    def get_config(self) -> dict:
        return {**super().get_config(), "policy": self.policy, "fill": self.fill}
