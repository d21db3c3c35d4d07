"""MixUp (Zhang et al. 2018): convex combinations of example pairs and of their labels.

x~ = lambda x_i + (1 - lambda) x_j, y~ = lambda y_i + (1 - lambda) y_j, lambda ~ Beta(alpha, alpha)
(Zhang et al. 2018, Eq. 1; Rebuffi, Gowal et al. 2021, App. B "Mixing rate of MixUp").

alpha. The paper's ablation (Fig. 9(a)) finds that "smaller values of alpha are preferential" with and
without weight averaging, in line with Zhang et al.'s recommendations and against Rice et al. 2020's
alpha = 1.4, but its text gives no single value (the figure's axis is not in the text), so the default
here is alpha = 1.0, the value Zhang et al. use for CIFAR-10. Pass a smaller alpha (e.g. 0.2-0.4) to
follow the ablation's trend.

Each example draws its own lambda and partner (Zhang et al.'s code draws one lambda per batch; per-example
draws have the same marginal distribution). lambda is sampled as G1 / (G1 + G2) with G1, G2 ~ Gamma(alpha)
from the stateless generator (see `common.sample_beta`).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from tfrobust.augment import common
from tfrobust.augment.batch_augmentation import BatchAugmentation


class MixUpDraws(NamedTuple):
    """What one call draws, per example: partner index (int32 [B]) and lambda (float32 [B])."""

    partner: tf.Tensor
    lam: tf.Tensor


@keras.saving.register_keras_serializable(package="tfrobust")
class MixUp(BatchAugmentation):
    """Mixes every example with a partner (a random permutation of the batch) by lambda ~ Beta(alpha, alpha).

    Inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`
    (one-hot or soft labels; integer labels are rejected). Example b becomes
    lambda_b x_b + (1 - lambda_b) x_partner[b], its labels likewise, lambda_b the weight of itself.
    Pixels stay within [min, max] of the two mixed pixels, so [0, 1] images stay in [0, 1].

    `call(inputs, training=None, seed=None)`: as `PadCrop` (only `training=True` augments; integer
    [2] `seed`, else the layer's generator, never inside tf.data).
    """

    def __init__(self, alpha: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(alpha, bool) or not float(alpha) > 0.0:
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        self.alpha = float(alpha)

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return mixup(images, labels, seed, alpha=self.alpha)

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha}


def mixup_draws(seed: tf.Tensor, batch, alpha: float) -> MixUpDraws:
    """Partners (a random permutation) and lambda ~ Beta(alpha, alpha) for each example."""
    seed_perm, seed_lam = common.split_seed(seed, 2)
    return MixUpDraws(common.permutation(batch, seed_perm), common.sample_beta([batch], seed_lam, alpha, alpha))


def mixup(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, *, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """The batched transform behind `MixUp`; returns (images, labels)."""
    draws = mixup_draws(seed, tf.shape(images)[0], alpha)
    return _mix(images, tf.gather(images, draws.partner), draws.lam), _mix(
        labels, tf.gather(labels, draws.partner), draws.lam
    )


def _mix(x: tf.Tensor, partner: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """lam x + (1 - lam) partner, per example, kept inside [min, max] of the two values.

    Written partner + lam (x - partner) so equal values mix to themselves exactly; the final clip
    removes float rounding that could step a pixel 1 ulp outside [0, 1].
    """
    lam = tf.reshape(tf.cast(lam, x.dtype), tf.concat([tf.shape(lam), tf.ones([tf.rank(x) - 1], tf.int32)], 0))
    mixed = partner + lam * (x - partner)
    return tf.clip_by_value(mixed, tf.minimum(x, partner), tf.maximum(x, partner))
