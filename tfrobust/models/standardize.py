"""Per-channel (x - mean) / std inside the model, so every model takes float images in [0, 1].

docs/method.md, "Model": normalisation lives inside the model; attacks, the evaluator and TF Serving clients all
speak [0, 1] pixels, and the eps ball is defined in that space.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfrobust")
class Standardize(keras.layers.Layer):
    """Subtracts a fixed per-channel mean and divides by a fixed per-channel std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {list(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def build(self, input_shape):
        if input_shape[-1] != len(self.mean):
            raise ValueError(
                f"Standardize has {len(self.mean)} channel statistics but the input has {input_shape[-1]} channels"
            )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.cast(ops.convert_to_tensor(self.mean), self.compute_dtype)
        std = ops.cast(ops.convert_to_tensor(self.std), self.compute_dtype)
        return (x - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}
