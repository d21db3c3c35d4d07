"""BatchNormalization whose moving statistics can be frozen while it still normalises with batch statistics.

METHOD.md ("BatchNorm during a step"): in the reference TRADES step the attack and the clean forward pass
use the current batch's statistics *without* updating the moving averages; only the adversarial forward
pass of the training loss updates them. Keras's `BatchNormalization(training=True)` always assigns the
moving statistics, so tfrobust uses this subclass and the `frozen_batch_statistics` context manager.

The flag is a Python attribute read while a `tf.function` is traced, so each call site in a traced
`train_step` bakes in the behaviour of the context it was traced in; no graph-level condition is needed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfrobust")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` plus `update_moving_statistics` (default True, not serialised).

    With `training=True` and `update_moving_statistics=False` the layer normalises with the batch's
    mean and variance (synchronised across replicas when `synchronized=True`) and leaves
    `moving_mean` / `moving_variance` untouched. Everything else is the parent's behaviour.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.update_moving_statistics = True

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or self.update_moving_statistics or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        # Same arithmetic as the parent's training branch, minus the two `assign`s. BN statistics are
        # computed in float32 even under mixed precision (as the parent does) to avoid overflow.
        x = ops.cast(inputs, "float32")
        mean, variance = self._moments(x, mask)
        outputs = ops.batch_normalization(
            x=x,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=ops.cast(self.beta, "float32") if self.center else None,
            scale=ops.cast(self.gamma, "float32") if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


def batch_norm_layers(model: keras.layers.Layer) -> list[BatchNorm]:
    """Every `BatchNorm` inside `model`, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=True) if isinstance(layer, BatchNorm)]


@contextlib.contextmanager
def frozen_batch_statistics(model: keras.layers.Layer) -> Iterator[None]:
    """Within the block, `model(x, training=True)` uses batch statistics but updates no moving statistics."""
    layers = batch_norm_layers(model)
    previous = [layer.update_moving_statistics for layer in layers]
    for layer in layers:
        layer.update_moving_statistics = False
    try:
        yield
    finally:
        for layer, value in zip(layers, previous):
            layer.update_moving_statistics = value
