"""RICAP (Takahashi et al. 2018): random image cropping and patching of four images.

Takahashi et al. (Sec. 3 and their reference code): a boundary point (w, h) with
w = round(W Beta(beta, beta)) and h = round(H Beta(beta, beta)) splits the output into four regions of
sizes (w, h), (W - w, h), (w, H - h), (W - w, H - h) (top-left, top-right, bottom-left, bottom-right).
Region k is filled with a crop of that size, at a uniformly random position, from an image taken from
its own random permutation of the batch, and the label is sum_k (area_k / (W H)) y_k. beta = 0.3, their
CIFAR setting. Rebuffi, Gowal et al. 2021 evaluate RICAP among the patching methods (Sec. 6.2, Fig. 6)
without giving other settings.

Draws (`draws`, the CLI's `--mix-draws`): "batch" (default) draws one boundary, one crop position per
region and one partner permutation per region for each device batch, as Takahashi et al.'s code draws
them once per batch, with the permutations structured as DeepMind's reference structures CutMix's
(`adversarial_robustness/jax/utils.py` `cutmix` with `split`: one permutation per device batch shared by
its emulated-worker sub-batches; the reference has no RICAP; see `MixingAugmentation`); "example" draws
them per example (the same marginals, more diversity per batch).
The four label weights are integer pixel counts over H W, so they sum to 1 up to one float rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from tfrobust.augment import common
from tfrobust.augment.batch_augmentation import MixingAugmentation


class RicapDraws(NamedTuple):
    """What one call draws, per row (all int32 [B], region k = 0..3 in the last axis where [B, 4]; with
    per-batch draws the rows of a device batch share the boundary and offsets).

    `sources[:, k]`: the example region k is cut from; `offset_y/offset_x[:, k]`: where the crop starts
    in that source; `h`, `w`: the boundary (rows 0..h-1 and columns 0..w-1 are region 0).
    """

    sources: tf.Tensor  # [B, 4]
    h: tf.Tensor  # [B]
    w: tf.Tensor  # [B]
    offset_y: tf.Tensor  # [B, 4]
    offset_x: tf.Tensor  # [B, 4]


@keras.saving.register_keras_serializable(package="tfrobust")
class Ricap(MixingAugmentation):
    """Patches four random crops of four random examples into each example; labels by area.

    Inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`
    (one-hot or soft labels; integer labels are rejected). Output labels are the four source labels
    weighted by their regions' areas (Takahashi et al. 2018, Sec. 3), which sum to 1.
    `draws`, `devices`, `sub_batches`: see `MixingAugmentation` and the module docstring.

    `call(inputs, training=None, seed=None)`: as `PadCrop` (only `training=True` augments; integer
    [2] `seed`, else the layer's generator, never inside tf.data).

    Example::

        ricap = tfrobust.layers.Ricap(beta=0.3)
        batch = ricap({"images": images, "labels": one_hot}, training=True, seed=tf.stack([4, step]))
    """

    def __init__(
        self,
        beta: float = 0.3,
        draws: str = "batch",
        devices: int = 1,
        sub_batches: int = 1,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(draws=draws, devices=devices, sub_batches=sub_batches, seed=seed, **kwargs)
        if isinstance(beta, bool) or not float(beta) > 0.0:
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        self.beta = float(beta)

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return ricap(
            images, labels, seed, beta=self.beta, draws=self.draws, devices=self.devices, sub_batches=self.sub_batches
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "beta": self.beta}


def region_sizes(h: tf.Tensor, w: tf.Tensor, height, width) -> tuple[tf.Tensor, tf.Tensor]:
    """Heights and widths [B, 4] of the regions: top-left, top-right, bottom-left, bottom-right."""
    heights = tf.stack([h, h, height - h, height - h], axis=1)
    widths = tf.stack([w, width - w, w, width - w], axis=1)
    return heights, widths


def _boundaries_and_offsets(
    seeds: list[tf.Tensor], units, height, width, beta: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """h, w [units] and offset_y, offset_x [units, 4] for `units` independent draws (examples or blocks)."""
    seed_bound_y, seed_bound_x, seed_off_y, seed_off_x = seeds
    fh = tf.cast(height, tf.float32)
    fw = tf.cast(width, tf.float32)
    # round(size * Beta(beta, beta)) as Takahashi et al.'s code (np.round), in 0..size.
    h = tf.cast(tf.round(fh * common.sample_beta([units], seed_bound_y, beta, beta)), tf.int32)
    w = tf.cast(tf.round(fw * common.sample_beta([units], seed_bound_x, beta, beta)), tf.int32)
    heights, widths = region_sizes(h, w, height, width)
    # Crop start uniform in 0..size-region (inclusive): floor(u * (size - region + 1)), u in [0, 1).
    u_y = common.uniform([units, 4], seed_off_y)
    u_x = common.uniform([units, 4], seed_off_x)
    offset_y = tf.cast(tf.floor(u_y * tf.cast(height - heights + 1, tf.float32)), tf.int32)
    offset_x = tf.cast(tf.floor(u_x * tf.cast(width - widths + 1, tf.float32)), tf.int32)
    # Guard against u * n rounding up to n in float32.
    offset_y = tf.minimum(offset_y, height - heights)
    offset_x = tf.minimum(offset_x, width - widths)
    return h, w, offset_y, offset_x


def ricap_draws(seed: tf.Tensor, batch, height, width, beta: float) -> RicapDraws:
    """Per-example draws: the boundary, the four sources and the four crop offsets of every example."""
    seed_bound_y, seed_bound_x, seed_perm, seed_off_y, seed_off_x = common.split_seed(seed, 5)
    # One permutation of the batch per region.
    sources = tf.stack([common.permutation(batch, s) for s in common.split_seed(seed_perm, 4)], axis=1)
    h, w, offset_y, offset_x = _boundaries_and_offsets(
        [seed_bound_y, seed_bound_x, seed_off_y, seed_off_x], batch, height, width, beta
    )
    return RicapDraws(sources, h, w, offset_y, offset_x)


def ricap_block_draws(
    seed: tf.Tensor, batch, height, width, beta: float, devices: int = 1, sub_batches: int = 1
) -> RicapDraws:
    """Per-device-batch draws: one boundary and one crop offset per region for each of the `devices`
    blocks of B / devices rows (Takahashi et al.'s once-per-batch draws), and per region one
    `common.block_partners` permutation (shared by the block's sub-batches). Returned per row."""
    seed_bound_y, seed_bound_x, seed_perm, seed_off_y, seed_off_x = common.split_seed(seed, 5)
    sources = tf.stack(
        [common.block_partners(s, batch, devices, sub_batches) for s in common.split_seed(seed_perm, 4)], axis=1
    )
    h, w, offset_y, offset_x = _boundaries_and_offsets(
        [seed_bound_y, seed_bound_x, seed_off_y, seed_off_x], devices, height, width, beta
    )
    rows = lambda values: common.per_block(values, batch, devices)  # noqa: E731
    return RicapDraws(sources, rows(h), rows(w), rows(offset_y), rows(offset_x))


def ricap_weights(draws: RicapDraws, height, width) -> tf.Tensor:
    """Label weights [B, 4]: region areas over H W (integer counts, one correctly rounded division each)."""
    heights, widths = region_sizes(draws.h, draws.w, height, width)
    return common.exact_ratio(heights * widths, height * width)


def ricap(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    *,
    beta: float,
    draws: str = "batch",
    devices: int = 1,
    sub_batches: int = 1,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The batched transform behind `Ricap`; returns (images, labels). Pixel-exact copies, no resampling.

    `draws="batch"`: `ricap_block_draws`; `"example"`: `ricap_draws`.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    if draws == "batch":
        drawn = ricap_block_draws(seed, batch, height, width, beta, devices, sub_batches)
    else:
        drawn = ricap_draws(seed, batch, height, width, beta)
    rows = tf.range(height)[None, :]  # [1, H]
    cols = tf.range(width)[None, :]
    bottom = rows >= drawn.h[:, None]  # [B, H]: in the lower regions (2, 3)
    right = cols >= drawn.w[:, None]  # [B, W]: in the right regions (1, 3)
    # Position inside the region: rows below the boundary count from h, columns right of it from w.
    local_rows = tf.where(bottom, rows - drawn.h[:, None], rows)  # [B, H]
    local_cols = tf.where(right, cols - drawn.w[:, None], cols)  # [B, W]
    out = tf.zeros_like(images)
    for k, (is_bottom, is_right) in enumerate(((False, False), (False, True), (True, False), (True, True))):
        source = tf.gather(images, drawn.sources[:, k])
        src_rows = tf.clip_by_value(drawn.offset_y[:, k : k + 1] + local_rows, 0, height - 1)
        src_cols = tf.clip_by_value(drawn.offset_x[:, k : k + 1] + local_cols, 0, width - 1)
        patch = tf.gather(source, src_rows, axis=1, batch_dims=1)
        patch = tf.gather(patch, src_cols, axis=2, batch_dims=1)
        in_rows = bottom if is_bottom else ~bottom
        in_cols = right if is_right else ~right
        region = in_rows[:, :, None, None] & in_cols[:, None, :, None]
        out = tf.where(region, patch, out)
    weights = tf.cast(ricap_weights(drawn, height, width), labels.dtype)  # [B, 4]
    source_labels = tf.gather(labels, drawn.sources)  # [B, 4, K]
    mixed_labels = tf.reduce_sum(weights[:, :, None] * source_labels, axis=1)
    return out, mixed_labels
