"""CutMix (Yun et al. 2019): paste a random box of a partner image, mix labels by the pasted area.

The paper's best augmentation (Rebuffi, Gowal et al. 2021, Sec. 4 and 6.2). Per Yun et al. (Sec. 3.1 and
their `rand_bbox`): lambda ~ Beta(alpha, alpha) with alpha = 1, i.e. the box's area fraction 1 - lambda
is uniform on (0, 1), "the setting used throughout" the paper (App. B, "Window length of CutMix"); the
box is sqrt(1 - lambda) H high and sqrt(1 - lambda) W wide (the image's aspect ratio), its centre is
uniform over the image, it is clipped to the image, and the label weight of the partner is the fraction
of pixels actually pasted after clipping (Yun et al.'s "adjust lambda to exactly match pixel ratio";
docs/method.md, "Augmentations").

Two ways to draw (`draws`, the CLI's `--mix-draws`):
  * "batch" (default): DeepMind's `adversarial_robustness/jax/utils.py` `cutmix` and `_random_box`,
    which produced the paper's numbers: one lambda, one box and one partner permutation per device
    batch, shared by its emulated-worker sub-batches (`MixingAugmentation`, `common.block_partners`);
    the box's centre (i, j) is a uniform integer pixel, its sides are cut = int(sqrt(1 - lambda) H)
    (and W) truncated, and it spans rows i - cut // 2 .. i + cut // 2 - 1, so its unclipped sides are
    even integers (2 (cut // 2)); the partner's label weight is the clipped box's pixel fraction.
  * "example": every example draws its own lambda, box and partner (partners a permutation of the whole
    batch); same marginal distribution, more diversity per batch. Box edges are continuous and rounded
    to the pixel grid: top = round(cy - h/2), bottom = round(cy + h/2) with the centre cy uniform on
    [0, H). That makes the unclipped box round(...) differences whose mean is exactly h (and likewise
    for the width), so the pixel area before clipping is an unbiased draw of (1 - lambda) H W; the
    reference's int(W sqrt(1 - lambda)) truncated to even sides makes boxes about one pixel short per
    side on 32x32 images.

Why not `keras.layers.CutMix` (Keras 3.x, read from its source): it mixes whatever `labels` holds as
numbers, so they must already be one-hot (integer labels come out silently wrong, docs/method.md, "Keras
pitfalls"); it draws its Beta parameter itself, uniformly in [0, factor] per call (default factor 1: alpha
~ U(0, 1), not alpha = 1, so the area is not uniform); its box always lies entirely inside the image
(start uniform on [0, L - l]), so the centre is not uniform and borders are pasted less often; and it
weights the labels by the continuous box area while its mask counts grid pixels, so label weight and
pasted pixels differ. Hence this layer, written in TF ops.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from tfrobust.augment import common
from tfrobust.augment.batch_augmentation import MixingAugmentation


class CutMixBoxes(NamedTuple):
    """What one call draws, per row (all [B]; with per-batch draws, rows of a device batch share them):
    the partner index and the unclipped box.

    `area` is the sampled box area fraction 1 - lambda (continuous, uniform on (0, 1) for alpha = 1);
    the box covers rows top..bottom-1 and columns left..right-1 before clipping to the image.
    """

    partner: tf.Tensor  # int32
    area: tf.Tensor  # float32
    top: tf.Tensor  # int32
    bottom: tf.Tensor
    left: tf.Tensor
    right: tf.Tensor


@keras.saving.register_keras_serializable(package="tfrobust")
class CutMix(MixingAugmentation):
    """Pastes a random box of a partner example into every example and mixes the labels by pasted area.

    Inputs and outputs are dicts `{"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}`
    (one-hot or already soft labels; integer labels are rejected). Output example b is example b with
    the box of example `partner[b]` pasted in, and labels (1 - f_b) y_b + f_b y_partner[b], where f_b is
    the exact fraction of b's pixels that were pasted (Yun et al. 2019, Eq. 1, with their corrected
    lambda).

    `alpha` is the Beta(alpha, alpha) parameter of lambda: 1.0 (uniform area), as Yun et al. and the
    paper use. `draws`, `devices`, `sub_batches`: see `MixingAugmentation` and the module docstring
    ("batch": the reference's draws and boxes, what the paper's numbers used; "example": per example).

    `call(inputs, training=None, seed=None)`: as `PadCrop` (only `training=True` augments; integer
    [2] `seed`, else the layer's generator, never inside tf.data).

    Example::

        cutmix = tfrobust.layers.CutMix()            # the paper's best augmentation (alpha 1)
        batch = cutmix({"images": images, "labels": one_hot}, training=True, seed=tf.stack([1, step]))
        # with TRADES: AdversarialTrainer(model, labels_as_attack_target=True), as the reference
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
        return cutmix(
            images, labels, seed, alpha=self.alpha, draws=self.draws, devices=self.devices, sub_batches=self.sub_batches
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha}


def cutmix_boxes(seed: tf.Tensor, batch, height, width, alpha: float = 1.0) -> CutMixBoxes:
    """Per-example draws: partners, lambdas and boxes for a batch (Yun et al. 2019, Sec. 3.1 and Alg. A1).

    lambda ~ Beta(alpha, alpha); box height sqrt(1 - lambda) H, width sqrt(1 - lambda) W; centre
    (cy, cx) uniform on [0, H) x [0, W); edges round(cy -/+ h/2), round(cx -/+ w/2), unclipped.
    """
    seed_perm, seed_lam, seed_y, seed_x = common.split_seed(seed, 4)
    partner = common.permutation(batch, seed_perm)
    if alpha == 1.0:
        # Beta(1, 1) is U(0, 1): one uniform draw instead of two Gammas (same distribution).
        area = common.uniform([batch], seed_lam)
    else:
        area = 1.0 - common.sample_beta([batch], seed_lam, alpha, alpha)
    ratio = tf.sqrt(area)  # the side fraction: a box of ratio^2 = 1 - lambda of the image's area
    h = ratio * tf.cast(height, tf.float32)
    w = ratio * tf.cast(width, tf.float32)
    centre_y = common.uniform([batch], seed_y) * tf.cast(height, tf.float32)
    centre_x = common.uniform([batch], seed_x) * tf.cast(width, tf.float32)
    # tf.round is round-half-to-even; ties have probability ~0 with continuous centres.
    top = tf.cast(tf.round(centre_y - h / 2), tf.int32)
    bottom = tf.cast(tf.round(centre_y + h / 2), tf.int32)
    left = tf.cast(tf.round(centre_x - w / 2), tf.int32)
    right = tf.cast(tf.round(centre_x + w / 2), tf.int32)
    return CutMixBoxes(partner, area, top, bottom, left, right)


def cutmix_block_boxes(
    seed: tf.Tensor, batch, height, width, alpha: float = 1.0, devices: int = 1, sub_batches: int = 1
) -> CutMixBoxes:
    """Per-device-batch draws, as DeepMind's `adversarial_robustness/jax/utils.py` `cutmix`/`_random_box`.

    For each of the `devices` blocks of B / devices rows: lambda ~ Beta(alpha, alpha) (U(0, 1) for
    alpha = 1); cut_h = int(H sqrt(1 - lambda)), cut_w = int(W sqrt(1 - lambda)) (truncated); centre
    i ~ U{0..H-1}, j ~ U{0..W-1}; unclipped box rows i - cut_h // 2 .. i + cut_h // 2 - 1 and columns
    j - cut_w // 2 .. j + cut_w // 2 - 1; partners from `common.block_partners` (one permutation per
    block, shared by its `sub_batches` strided sub-batches). Returned per row, like `cutmix_boxes`.
    """
    seed_perm, seed_lam, seed_y, seed_x = common.split_seed(seed, 4)
    partner = common.block_partners(seed_perm, batch, devices, sub_batches)
    if alpha == 1.0:
        area = common.uniform([devices], seed_lam)  # 1 - lambda for lambda ~ Beta(1, 1) = U(0, 1)
    else:
        area = 1.0 - common.sample_beta([devices], seed_lam, alpha, alpha)
    ratio = tf.sqrt(area)  # the reference's cut_rat = sqrt(1 - lambda)
    cut_h = tf.cast(tf.floor(tf.cast(height, tf.float32) * ratio), tf.int32)
    cut_w = tf.cast(tf.floor(tf.cast(width, tf.float32) * ratio), tf.int32)
    centre_y = common.uniform([devices], seed_y, 0, height, dtype=tf.int32)
    centre_x = common.uniform([devices], seed_x, 0, width, dtype=tf.int32)
    rows = lambda values: common.per_block(values, batch, devices)  # noqa: E731
    return CutMixBoxes(
        partner,
        rows(area),
        rows(centre_y - cut_h // 2),
        rows(centre_y + cut_h // 2),
        rows(centre_x - cut_w // 2),
        rows(centre_x + cut_w // 2),
    )


def pasted_fraction(boxes: CutMixBoxes, height, width) -> tf.Tensor:
    """The fraction of pixels inside each box after clipping to the image: the partner's label weight."""
    rows = tf.clip_by_value(boxes.bottom, 0, height) - tf.clip_by_value(boxes.top, 0, height)
    cols = tf.clip_by_value(boxes.right, 0, width) - tf.clip_by_value(boxes.left, 0, width)
    count = tf.maximum(rows, 0) * tf.maximum(cols, 0)
    return common.exact_ratio(count, height * width)


def cutmix(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    *,
    alpha: float = 1.0,
    draws: str = "batch",
    devices: int = 1,
    sub_batches: int = 1,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The batched transform behind `CutMix`; returns (images, labels).

    `draws="batch"`: `cutmix_block_boxes` (the reference's); `"example"`: `cutmix_boxes`.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    if draws == "batch":
        boxes = cutmix_block_boxes(seed, batch, height, width, alpha, devices, sub_batches)
    else:
        boxes = cutmix_boxes(seed, batch, height, width, alpha)
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= boxes.top[:, None]) & (rows < boxes.bottom[:, None])  # [B, H]; clipping is implicit
    in_cols = (cols >= boxes.left[:, None]) & (cols < boxes.right[:, None])  # [B, W]
    inside = in_rows[:, :, None, None] & in_cols[:, None, :, None]  # [B, H, W, 1]
    mixed_images = tf.where(inside, tf.gather(images, boxes.partner), images)
    weight = tf.cast(pasted_fraction(boxes, height, width), labels.dtype)[:, None]  # [B, 1]
    partner_labels = tf.gather(labels, boxes.partner)
    # y + f (y_p - y) rather than (1 - f) y + f y_p: exact when y_p == y (self-partners, equal labels).
    mixed_labels = labels + weight * (partner_labels - labels)
    return mixed_images, mixed_labels
