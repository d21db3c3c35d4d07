"""Learning-rate and weight-averaging schedules of the reference recipe (METHOD.md "optimiser", "WA").

- peak learning rate max(0.1 * batch / 256, 0.1): the paper's linear scaling rule (batch 512 -> 0.2,
  1024 -> 0.4, smaller batches keep 0.1);
- `WarmupSchedule`: linear warm-up from 0 over `warmup_steps`, then either cosine decay to 0 at
  `total_steps` (recipes with generated data) or piecewise constant x0.1 at 2/3 of training (without);
- `ema_decay(step, tau)`: min(tau, (1 + t) / (10 + t)), the reference's EMA warm-up.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

SCHEDULES = ("cosine", "piecewise")


def peak_learning_rate(batch_size: int, base: float = 0.1) -> float:
    """max(base * batch / 256, base): linear scaling above 256, never below `base` (METHOD.md)."""
    return max(base * batch_size / 256.0, base)


@keras.saving.register_keras_serializable(package="tfrobust")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine to 0 or x0.1 at two thirds of `total_steps`."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, kind: str = "cosine"):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
        if total_steps <= 0 or warmup_steps < 0:
            raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
        self.peak = float(peak)
        self.warmup_steps = int(min(warmup_steps, total_steps))
        self.total_steps = int(total_steps)
        self.kind = kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        total = tf.cast(self.total_steps, tf.float32)
        # Step counts from 0; the first update uses lr = peak / warmup_steps (never exactly 0).
        warm = self.peak * (step + 1.0) / tf.maximum(warmup, 1.0)
        if self.kind == "cosine":
            progress = tf.clip_by_value((step - warmup) / tf.maximum(total - warmup, 1.0), 0.0, 1.0)
            after = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        else:
            after = tf.where(step < tf.math.floor(2.0 * total / 3.0), self.peak, 0.1 * self.peak)
        return tf.where(step < warmup, warm, after)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "kind": self.kind,
        }


def ema_decay(step, tau: float):
    """The reference's warmed-up EMA decay min(tau, (1 + t) / (10 + t)) at update t = 0, 1, ..."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.cast(tau, tf.float32), (1.0 + step) / (10.0 + step))
