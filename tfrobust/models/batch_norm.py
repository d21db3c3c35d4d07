"""BatchNormalization whose moving statistics can be frozen while it still normalises with batch statistics.

docs/method.md ("BatchNorm during a step"): in the reference TRADES step the attack and the clean forward pass
use the current batch's statistics *without* updating the moving averages; only the adversarial forward
pass of the training loss updates them. Keras's `BatchNormalization(training=True)` always assigns the
moving statistics. `AdversarialTrainer` runs those passes in a `keras.StatelessScope` (training/trainer.py),
which holds for any layer; `frozen_batch_statistics` is the same rule for this layer alone, for code that
calls a tfrobust model directly (a training-mode forward pass that changes no statistics).

The switch is read while a `tf.function` is traced, so each call site in a traced `train_step` bakes
in the behaviour of the context it was traced in; no graph-level condition is needed. The context is
*thread-local*: `MirroredStrategy` traces each replica's step in its own Python thread, and a shared
flag raced between them (one replica's exit re-enabled, or never re-enabled, the other's updates).

Moving averages: the reference's BatchNorm (`hk.BatchNorm`, DeepMind's `adversarial_robustness/jax`
model_zoo.py) keeps them with `hk.ExponentialMovingAverage(decay, zero_debias=True)`: hidden <- d * hidden +
(1 - d) * value from hidden = 0, and average = hidden / (1 - d^n) after n updates, so the first update
sets the average to the batch statistic. Keras starts from mean 0 / variance 1 and never debiases. This
layer keeps the *debiased* average in `moving_mean` / `moving_variance` (what inference, the exported
model and the PyTorch importer read and write, used as they are) and counts the updates in
`moving_updates`; since hidden = average * (1 - d^(n-1)), update n is

    average <- average + (value - average) * (1 - d) / (1 - d^n),

which is 1 at n = 1 and tends to Keras's (1 - d) as d^n vanishes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import keras
from keras import ops

_local = threading.local()


def _frozen_counts() -> dict[int, int]:
    """This thread's {id(layer): depth of frozen_batch_statistics blocks around it}."""
    if not hasattr(_local, "frozen"):
        _local.frozen = {}
    return _local.frozen


@keras.saving.register_keras_serializable(package="tfrobust")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` plus `update_moving_statistics` (default True, not serialised).

    With `training=True` and `update_moving_statistics=False` the layer normalises with the batch's
    mean and variance (synchronised across replicas when `synchronized=True`) and leaves
    `moving_mean` / `moving_variance` untouched.

    Under tf.distribute, `synchronized=False` (tfrobust's default, `--sync-batch-norm` off) gives the
    reference's per-device BatchNorm: each replica normalises with its own slice's moments and updates
    its own copy of the moving statistics (mirrored variables with aggregation NONE are assigned per
    replica; training/distribute.py).

    Speed: for NHWC images on the TensorFlow backend (no mask, not synchronised) the layer runs TF's
    fused batch-norm kernel, forward and backward, instead of Keras 3's composite of moments and
    elementwise ops; on CPU this is the difference between matching PyTorch's throughput or not
    (benchmarks/README.md). The moving averages are the reference's zero-debiased EMA (module
    docstring) of the batch mean and the *biased* batch variance (the fused kernel reports the
    Bessel-corrected one, which is scaled back).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._updates_enabled = True

    def build(self, input_shape):
        super().build(input_shape)
        # Zero-debiasing counter (hk.ExponentialMovingAverage's "counter"): moving-statistics updates so far.
        self.moving_updates = self.add_weight(
            shape=(), name="moving_updates", initializer="zeros", dtype="int64", trainable=False, autocast=False
        )

    def _update_moving_statistics(self, mean, variance) -> None:
        """One zero-debiased EMA update of the moving statistics with batch `mean` and biased `variance`."""
        count = self.moving_updates.value + 1
        decay = ops.cast(self.momentum, "float32")
        # (1 - d) / (1 - d^n), all in float32 so that it is exactly 1 at n = 1; d^n underflows harmlessly to
        # 0 for large n.
        rate = (1.0 - decay) / (1.0 - ops.power(decay, ops.cast(count, "float32")))
        mean = ops.stop_gradient(ops.cast(mean, "float32"))
        variance = ops.stop_gradient(ops.cast(variance, "float32"))
        self.moving_mean.assign(self.moving_mean + (mean - self.moving_mean) * rate)
        self.moving_variance.assign(self.moving_variance + (variance - self.moving_variance) * rate)
        self.moving_updates.assign(count)

    @property
    def update_moving_statistics(self) -> bool:
        """False inside `frozen_batch_statistics` (in this thread) or when switched off explicitly."""
        return self._updates_enabled and not _frozen_counts().get(id(self), 0)

    @update_moving_statistics.setter
    def update_moving_statistics(self, value: bool) -> None:
        self._updates_enabled = bool(value)

    def _fused(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and not self.synchronized
            and not self.renorm
            and self.center
            and self.scale
        )

    def call(self, inputs, training=None, mask=None):
        training = bool(training) and self.trainable
        if self._fused(inputs, mask):
            return self._fused_call(inputs, training)
        if not training or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        # The parent's training arithmetic with the debiased update (or none, when frozen). BN statistics
        # are computed in float32 even under mixed precision (as the parent does) to avoid overflow.
        x = ops.cast(inputs, "float32")
        mean, variance = self._moments(x, mask)
        if self.update_moving_statistics:
            self._update_moving_statistics(mean, variance)
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

    def _fused_call(self, inputs, training: bool):
        import tensorflow as tf  # only reached on the TensorFlow backend

        x = tf.convert_to_tensor(inputs)
        if x.dtype not in (tf.float16, tf.bfloat16, tf.float32):
            x = tf.cast(x, tf.float32)
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if not training:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                is_training=False,
                data_format="NHWC",
            )
            return tf.cast(outputs, self.compute_dtype)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, is_training=True, data_format="NHWC"
        )
        if self.update_moving_statistics:
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
            biased = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self._update_moving_statistics(mean, biased)
        return tf.cast(outputs, self.compute_dtype)


def batch_norm_layers(model: keras.layers.Layer) -> list[BatchNorm]:
    """Every `BatchNorm` inside `model`, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=True) if isinstance(layer, BatchNorm)]


@contextlib.contextmanager
def frozen_batch_statistics(model: keras.layers.Layer) -> Iterator[None]:
    """Within the block (in this thread), `model(x, training=True)` uses batch statistics but updates
    no moving statistics. Nests; the state is restored on exit, exceptions included."""
    layers = batch_norm_layers(model)
    counts = _frozen_counts()
    for layer in layers:
        counts[id(layer)] = counts.get(id(layer), 0) + 1
    try:
        yield
    finally:
        for layer in layers:
            counts[id(layer)] -= 1
            if not counts[id(layer)]:
                del counts[id(layer)]
