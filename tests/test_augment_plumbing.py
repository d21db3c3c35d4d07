"""The plumbing every augmentation layer shares: pinned outputs for a fixed batch and seed, Keras
serialization round trips, one table of image-operation names, one RNG algorithm for augment/ and data/.

The pinned fingerprints are regression values measured on this code (not an independent known answer):
they keep a rearrangement of the layers (base classes, seed handling, op tables) from changing what any
layer draws or computes. Each is (sum of the images, sum of the images times fixed random weights in
[-1, 1], sum of the labels times fixed random weights in [-1, 1]), in float64 over the float32 outputs, compared
within 1e-4: a different draw, operation, partner or pixel order moves them by orders of magnitude more
(one pixel changed by 0.01 moves the weighted sum by 0.01 times its weight), while ulp-level differences
of float kernels between CPUs (oneDNN picks its code per instruction set) stay near 1e-6.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.augment import common, image_ops
from tfrobust.augment.autoaugment import POLICIES, AutoAugment
from tfrobust.augment.compose import Compose
from tfrobust.augment.cutmix import CutMix
from tfrobust.augment.cutout import Cutout
from tfrobust.augment.mixup import MixUp
from tfrobust.augment.pad_crop import PadCrop
from tfrobust.augment.randaugment import RandAugment
from tfrobust.augment.registry import AUGMENTATIONS, build_augmentation
from tfrobust.augment.ricap import Ricap
from tfrobust.data.pipeline import batch_seed, epoch_permutation

B, H, W, C, K = 16, 12, 12, 3, 5
SEED = tf.constant([3, 7], tf.int64)


def _batch() -> dict:
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, (B, H, W, C)).astype(np.float32)
    labels = np.eye(K, dtype=np.float32)[rng.integers(0, K, B)]
    return {"images": tf.constant(images), "labels": tf.constant(labels)}


FINGERPRINT_LAYERS = {
    "padcrop": lambda: PadCrop(padding=2),
    "cutout": lambda: Cutout(window=5),
    "cutmix": lambda: CutMix(devices=2, sub_batches=2),
    "cutmix-example": lambda: CutMix(draws="example"),
    "mixup": lambda: MixUp(alpha=0.5, devices=2, sub_batches=2),
    "mixup-example": lambda: MixUp(alpha=0.5, draws="example"),
    "ricap": lambda: Ricap(devices=2, sub_batches=2),
    "ricap-example": lambda: Ricap(draws="example"),
    "autoaugment": lambda: AutoAugment(),
    "autoaugment-svhn": lambda: AutoAugment(policy="svhn"),
    "randaugment": lambda: RandAugment(),
    "randaugment-2-9": lambda: RandAugment(num_ops=2, magnitude=9),
    "compose": lambda: build_augmentation(
        ["padcrop", "autoaugment", "cutout", "cutmix"], image_shape=(H, W, C), allow_flip=True
    ),
}


def _fingerprint(name: str) -> tuple[float, float, float]:
    out = FINGERPRINT_LAYERS[name]()(_batch(), training=True, seed=SEED)
    images = out["images"].numpy().astype(np.float64)
    labels = out["labels"].numpy().astype(np.float64)
    weights = np.random.default_rng(1)
    image_weights = weights.uniform(-1.0, 1.0, images.shape)
    label_weights = weights.uniform(-1.0, 1.0, labels.shape)
    return (
        float(images.sum()),
        float((images * image_weights).sum()),
        float((labels * label_weights).sum()),
    )


FINGERPRINTS = {
    "padcrop": (2829.635937746294, 12.008911772950416, 2.002208397672497),
    "cutout": (3438.8708341319434, 22.326641706676263, 2.002208397672497),
    "cutmix": (3432.7518733578327, 21.398259275757933, 1.8086619814157756),
    "cutmix-example": (3425.7564929150685, 36.838496826222844, 1.1705870609066205),
    "mixup": (3432.751874779875, 20.177158912902193, 1.7296807595722812),
    "mixup-example": (3442.426315222867, 27.896231466531077, 0.4339649149735049),
    "ricap": (3443.223989586666, 33.97808315131309, 0.8765609881771199),
    "ricap-example": (3476.249881078562, 32.954189810019976, 1.21615056625351),
    "autoaugment": (3562.966908392438, 35.63632258349624, 2.002208397672497),
    "autoaugment-svhn": (3436.5510607552424, 24.53834244194572, 2.002208397672497),
    "randaugment": (3203.346836106386, 11.211412316493071, 2.002208397672497),
    "randaugment-2-9": (3745.332848276419, 18.776773362099085, 2.002208397672497),
    "compose": (2868.654561229676, 40.89176958309269, 1.1664027964560235),
}


@pytest.mark.parametrize("name", list(FINGERPRINT_LAYERS))
def test_outputs_for_a_fixed_seed_are_pinned(name):
    np.testing.assert_allclose(_fingerprint(name), FINGERPRINTS[name], rtol=0.0, atol=1e-4, err_msg=name)


def test_pipeline_draws_are_pinned():
    """The shuffling order and the batch seeds of data/pipeline.py (Philox, exact integers)."""
    assert epoch_permutation(20, 5, 2).numpy().tolist() == [
        3, 2, 9, 13, 15, 0, 7, 6, 11, 8, 16, 18, 12, 5, 14, 19, 10, 4, 17, 1
    ]
    assert batch_seed(5, 2, 3).numpy().tolist() == [1980244712444345427, 3]


# Every registered augmentation with parameters other than its defaults, and a chain of them.
SERIALIZED_LAYERS = {
    "padcrop": lambda: PadCrop(padding=3, flip=False, seed=4),
    "autoaugment": lambda: AutoAugment(policy="svhn", fill=0.25, seed=4),
    "randaugment": lambda: RandAugment(num_ops=2, magnitude=7.5, fill=0.0, seed=4),
    "cutout": lambda: Cutout(window=4, fill=[0.1, 0.2, 0.3], seed=4),
    "cutmix": lambda: CutMix(alpha=0.5, devices=2, sub_batches=2, seed=4),
    "mixup": lambda: MixUp(alpha=0.3, draws="example", seed=4),
    "ricap": lambda: Ricap(beta=0.5, devices=4, seed=4),
    "compose": lambda: Compose([PadCrop(padding=1), RandAugment(num_ops=1), CutMix(draws="example")], seed=4),
}


def test_serialized_layers_cover_the_registry():
    assert set(SERIALIZED_LAYERS) == set(AUGMENTATIONS) | {"compose"}
    for name, cls in AUGMENTATIONS.items():
        assert type(SERIALIZED_LAYERS[name]()) is cls


@pytest.mark.parametrize("name", list(SERIALIZED_LAYERS))
def test_keras_layers_serialize_round_trip(name):
    """`keras.layers.deserialize(keras.layers.serialize(layer))`: the same class, config and output."""
    layer = SERIALIZED_LAYERS[name]()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
    batch = _batch()
    expected = layer(batch, training=True, seed=SEED)
    out = restored(batch, training=True, seed=SEED)
    for key in ("images", "labels"):
        np.testing.assert_array_equal(out[key].numpy(), expected[key].numpy(), err_msg=f"{name} {key}")
    # Without a call seed both draw from generators built from the same constructor seed.
    np.testing.assert_array_equal(
        layer(batch, training=True)["images"].numpy(), restored(batch, training=True)["images"].numpy()
    )
