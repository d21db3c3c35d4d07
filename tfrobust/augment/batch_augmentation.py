"""`BatchAugmentation`: the Keras-layer plumbing shared by the augmentations built on a pure function.

A subclass sets its own parameters in `__init__`, implements `augment(images, labels, seed)` (a pure
function of tensors: the seeded transform) and adds its parameters to `get_config`. This class does the
rest the way `PadCrop` does (common.py): checks the batch (integer labels refused, also when not
training), `training` other than True is a no-op, the seed is the caller's int [2] tensor or else the
layer's `keras.random.SeedGenerator` (never inside tf.data), and the output keeps any extra dict keys.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfrobust.augment import common


class BatchAugmentation(keras.layers.Layer):
    """Base of the batch augmentations whose work is one seeded function of (images, labels)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def call(self, inputs: dict, training=None, seed=None) -> dict:
        common.check_batch(inputs, type(self).__name__)
        if not training:
            return inputs
        seed = common.resolve_seed(seed, self.seed_generator)
        out = dict(inputs)
        out["images"], out["labels"] = self.augment(
            tf.convert_to_tensor(inputs["images"]), tf.convert_to_tensor(inputs["labels"]), seed
        )
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}
