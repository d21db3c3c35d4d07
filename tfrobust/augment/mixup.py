"""MixUp (Zhang et al. 2018): convex combinations of example pairs and of their labels.

x~ = lambda x_i + (1 - lambda) x_j, y~ = lambda y_i + (1 - lambda) y_j, lambda ~ Beta(alpha, alpha)
(Zhang et al. 2018, Eq. 1; Rebuffi, Gowal et al. 2021, App. B "Mixing rate of MixUp").

alpha. The paper's ablation (Fig. 9(a)) finds that "smaller values of alpha are preferential" with and
without weight averaging, in line with Zhang et al.'s recommendations and against Rice et al. 2020's
alpha = 1.4, but its text gives no single value (the figure's axis is not in the text), so the default
here is alpha = 1.0, the value Zhang et al. use for CIFAR-10. Pass a smaller alpha (e.g. 0.2-0.4) to
follow the ablation's trend.

Draws (`draws`, the CLI's `--mix-draws`): "batch" (default) draws one lambda and one partner permutation
per device batch, shared by its emulated-worker sub-batches, as Zhang et al.'s code draws one lambda per
batch and as DeepMind's reference draws CutMix (`adversarial_robustness/jax/utils.py` `cutmix` with
`split`; the reference has no MixUp, so this follows its CutMix; see `MixingAugmentation`); "example"
draws a lambda and a partner per example (same marginal distribution, more diversity per batch). lambda
is sampled as G1 / (G1 + G2) with G1, G2 ~ Gamma(alpha) from the stateless generator (see
`common.sample_beta`).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from tfrobust.augment import common
from tfrobust.augment.batch_augmentation import MixingAugmentation


class MixUpDraws(NamedTuple):
    """What one call draws, per row: partner index (int32 [B]) and lambda (float32 [B]).

    With per-batch draws, the rows of a device batch share one lambda."""

    partner: tf.Tensor
    lam: tf.Tensor


@keras.saving.register_keras_serializable(package="tfrobust")
class MixUp(MixingAugmentation):
    """Mixes every example with a partner (a random permutation) by lambda ~ Beta(alpha, alpha).

    Inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`
    (one-hot or soft labels; integer labels are rejected). Example b becomes
    lambda_b x_b + (1 - lambda_b) x_partner[b], its labels likewise, lambda_b the weight of itself.
    Pixels stay within [min, max] of the two mixed pixels, so [0, 1] images stay in [0, 1].
    `draws`, `devices`, `sub_batches`: see `MixingAugmentation` ("batch", the default, as the
    reference's CutMix; "example": per example).

    `call(inputs, training=None, seed=None)`: as `PadCrop` (only `training=True` augments; integer
    [2] `seed`, else the layer's generator, never inside tf.data).

    Example::

        mixup = tfrobust.layers.MixUp(alpha=1.0)
        batch = mixup({"images": images, "labels": one_hot}, training=True, seed=tf.stack([2, step]))
    """

    def __init__(
        self,
        alpha: float = 1.0,
        draws: str = "batch",
        devices: int = 1,
        sub_batches: int = 1,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(draws=draws, devices=devices, sub_batches=sub_batches, seed=seed, **kwargs)
        if isinstance(alpha, bool) or not float(alpha) > 0.0:
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        self.alpha = float(alpha)

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return mixup(
            images, labels, seed, alpha=self.alpha, draws=self.draws, devices=self.devices, sub_batches=self.sub_batches
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha}


def mixup_draws(seed: tf.Tensor, batch, alpha: float) -> MixUpDraws:
    """Per-example draws: partners (a random permutation) and lambda ~ Beta(alpha, alpha) for each example."""
    seed_perm, seed_lam = common.split_seed(seed, 2)
    return MixUpDraws(common.permutation(batch, seed_perm), common.sample_beta([batch], seed_lam, alpha, alpha))


def mixup_block_draws(seed: tf.Tensor, batch, alpha: float, devices: int = 1, sub_batches: int = 1) -> MixUpDraws:
    """Per-device-batch draws: one lambda ~ Beta(alpha, alpha) per device batch of B / devices rows, and
    partners from `common.block_partners` (one permutation per device batch, shared by its sub-batches)."""
    seed_perm, seed_lam = common.split_seed(seed, 2)
    lam = common.per_block(common.sample_beta([devices], seed_lam, alpha, alpha), batch, devices)
    return MixUpDraws(common.block_partners(seed_perm, batch, devices, sub_batches), lam)


def mixup(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    *,
    alpha: float,
    draws: str = "batch",
    devices: int = 1,
    sub_batches: int = 1,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The batched transform behind `MixUp`; returns (images, labels).

    `draws="batch"`: `mixup_block_draws`; `"example"`: `mixup_draws`.
    """
    batch = tf.shape(images)[0]
    if draws == "batch":
        drawn = mixup_block_draws(seed, batch, alpha, devices, sub_batches)
    else:
        drawn = mixup_draws(seed, batch, alpha)
    return _mix(images, tf.gather(images, drawn.partner), drawn.lam), _mix(
        labels, tf.gather(labels, drawn.partner), drawn.lam
    )


def _mix(x: tf.Tensor, partner: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """lam x + (1 - lam) partner, per example, kept inside [min, max] of the two values.

    Written partner + lam (x - partner) so equal values mix to themselves exactly; the final clip
    removes float rounding that could step a pixel 1 ulp outside [0, 1].
    """
    lam = tf.reshape(tf.cast(lam, x.dtype), tf.concat([tf.shape(lam), tf.ones([tf.rank(x) - 1], tf.int32)], 0))
    mixed = partner + lam * (x - partner)
    return tf.clip_by_value(mixed, tf.minimum(x, partner), tf.maximum(x, partner))
