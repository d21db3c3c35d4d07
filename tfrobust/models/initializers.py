"""Haiku's default convolution initializer, as a Keras initializer.

`hk.Conv2D` without `w_init` (DeepMind's `adversarial_robustness/jax` model_zoo.py builds every convolution
so) draws its kernel from `hk.initializers.TruncatedNormal(stddev=1 / sqrt(fan_in))`: a normal truncated at
two standard deviations, scaled by stddev without correcting for the truncation (the values' standard
deviation is 0.88 / sqrt(fan_in)); fan_in = kh * kw * in_channels (all axes but the last of the HWIO kernel).
Keras's `VarianceScaling(1.0, "fan_in", "truncated_normal")` divides by 0.8796 to undo the truncation, and
`he_normal` uses sqrt(2 / fan_in) with that correction: about 1.6x the reference's spread.
"""

from __future__ import annotations

import math

import keras


@keras.saving.register_keras_serializable(package="tfrobust")
class FanInTruncatedNormal(keras.initializers.TruncatedNormal):
    """Truncated normal (cut at +-2 stddev, not rescaled) with stddev 1 / sqrt(fan_in): Haiku's conv default.

    Create one instance per layer: like every seeded Keras initializer, an instance returns the same
    values for the same shape on every call.
    """

    def __init__(self, seed=None):
        super().__init__(mean=0.0, stddev=1.0, seed=seed)

    def __call__(self, shape, dtype=None):
        fan_in = math.prod(int(d) for d in shape[:-1]) if len(shape) > 1 else int(shape[0])
        return keras.random.truncated_normal(
            shape=shape, mean=0.0, stddev=1.0 / math.sqrt(max(fan_in, 1)), seed=self.seed, dtype=dtype
        )

    def get_config(self):
        return {"seed": super().get_config()["seed"]}
