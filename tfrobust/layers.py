"""Augmentation layers for a `tf.data` pipeline (each class lives in `tfrobust.augment`).

Every layer takes and returns a dict {"images": float [B, H, W, C] in [0, 1], "labels": float [B, K]}
(one-hot or soft labels), augments only with `training=True`, and inside `tf.data` takes an explicit
stateless `seed` (int [2]); the same seed gives the same batch. The paper's augmentations (Rebuffi,
Gowal et al. 2021, Sec. 4): `PadCrop` (the baseline), `CutMix` (its best), `MixUp`, `Cutout`, `Ricap`,
`AutoAugment`, `RandAugment`.

Example::

    import tensorflow as tf
    import tfrobust

    cutmix = tfrobust.layers.CutMix()
    pad_crop = tfrobust.layers.PadCrop(padding=4)

    def augment(step, batch):                                  # step: the batch's index (int64)
        images, labels = batch                                 # labels one-hot float [B, K]
        out = pad_crop({"images": images, "labels": labels}, training=True, seed=tf.stack([0, step]))
        out = cutmix(out, training=True, seed=tf.stack([1, step]))   # another stream per layer
        return out["images"], out["labels"]

    dataset = dataset.batch(128, drop_remainder=True).enumerate().map(augment)
"""

from tfrobust.augment.autoaugment import AutoAugment
from tfrobust.augment.cutmix import CutMix
from tfrobust.augment.cutout import Cutout
from tfrobust.augment.mixup import MixUp
from tfrobust.augment.pad_crop import PadCrop
from tfrobust.augment.randaugment import RandAugment
from tfrobust.augment.ricap import Ricap

__all__ = ["AutoAugment", "CutMix", "Cutout", "MixUp", "PadCrop", "RandAugment", "Ricap"]
