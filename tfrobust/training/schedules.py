"""Learning-rate and weight-averaging schedules of the reference recipe (docs/method.md, "Optimizer and
schedule", "Weight averaging").

Reference: DeepMind's `adversarial_robustness/jax` (experiment.py `get_config`, utils.py
`get_cosine_schedule` / `get_step_schedule` / `ema_update`), built on optax:

- peak learning rate max(0.1 * batch / 256, 0.1): the paper's linear scaling rule (batch 512 -> 0.2,
  1024 -> 0.4, smaller batches keep 0.1): `peak_learning_rate`, defined in tfrobust.config, which resolves
  a run's default learning rate with it;
- an epoch is the *whole* training set (50,000 CIFAR-10 images, the validation hold-out included) over the
  batch size, which is rarely an integer: `steps_after_epochs(n)` = floor(n * examples / batch) optimizer
  steps (experiment.py `steps_from_epochs`), for the run's length, the warm-up and the epoch boundaries;
- `WarmupSchedule`: `optax.join_schedules` of a linear warm-up from 0 (`optax.linear_schedule(0, peak,
  warmup)`: lr(0) = 0, lr(t) = peak * t / warmup) and, from step `warmup` on and evaluated at t - warmup,
  either `optax.cosine_decay_schedule(peak, total - warmup)` (recipes with generated data) or
  `optax.piecewise_constant_schedule(peak, {total * 2 // 3: 0.1})` (without): the x0.1 drop comes at step
  warmup + floor(2 * total / 3), not at two thirds of the run;
- `ema_decay(step, tau)`: min(tau, (1 + t) / (10 + t)), the reference's EMA warm-up (utils.ema_update).

Keras evaluates a schedule at `optimizer.iterations` before incrementing it, as optax's
`scale_by_schedule` does with its count: update t (0-based) uses lr(t), so the first update uses lr(0) = 0.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfrobust.config import SCHEDULES, peak_learning_rate  # noqa: F401 (the names and the peak rule that config resolves)
from tfrobust.errors import UserError


def steps_after_epochs(epochs: int, epoch_examples: int, batch_size: int) -> int:
    """Optimizer steps done after `epochs` epochs of `epoch_examples` samples: floor(epochs * examples /
    batch), the reference's `steps_from_epochs` (experiment.py; exact integer arithmetic)."""
    if epoch_examples < batch_size or batch_size < 1:
        raise UserError(
            f"an epoch of {epoch_examples} examples needs a batch size of 1 to {epoch_examples}, "
            f"got {batch_size}: lower --batch-size"
        )
    return int(epochs) * int(epoch_examples) // int(batch_size)


@keras.saving.register_keras_serializable(package="tfrobust")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak`, then cosine to 0 or x0.1 at warm-up + 2/3 of `total_steps`
    (the reference's utils.get_cosine_schedule / get_step_schedule; see the module docstring)."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, kind: str = "cosine"):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
        self.peak = float(peak)
        # Not clipped to total_steps: with warmup > total the reference runs the linear ramp only, whose
        # slope is peak / warmup.
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.kind = kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(self.warmup_steps)
        warm = self.peak * step / max(warmup, 1.0)
        after = step - warmup  # join_schedules evaluates the second schedule at step - boundary
        if self.kind == "cosine":
            decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.minimum(after, decay_steps) / decay_steps
            decayed = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        else:
            boundary = float(self.total_steps * 2 // 3)
            decayed = tf.where(after < boundary, self.peak, 0.1 * self.peak)
        return tf.where(step < warmup, warm, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "kind": self.kind,
        }


def training_schedule(
    *, peak: float, warmup_epochs: int, epochs: int, epoch_examples: int, batch_size: int, kind: str
) -> WarmupSchedule:
    """The run's schedule: warm-up and length in optimizer steps by `steps_after_epochs` (experiment.py:
    `learning_rate_warmup = steps_from_epochs(10)`, `num_steps = steps_from_epochs(num_epochs)`)."""
    return WarmupSchedule(
        peak=peak,
        warmup_steps=steps_after_epochs(warmup_epochs, epoch_examples, batch_size),
        total_steps=steps_after_epochs(epochs, epoch_examples, batch_size),
        kind=kind,
    )


def ema_decay(step, tau: float):
    """The reference's warmed-up EMA decay min(tau, (1 + t) / (10 + t)) at update t = 0, 1, ..."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.cast(tau, tf.float32), (1.0 + step) / (10.0 + step))
