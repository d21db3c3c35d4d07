"""Registry, `--aug` parsing, canonical order, `build_augmentation` and `Compose` seed handling."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.augment.autoaugment import AutoAugment
from tfrobust.augment.common import split_seed
from tfrobust.augment.compose import Compose
from tfrobust.augment.cutmix import CutMix
from tfrobust.augment.cutout import Cutout
from tfrobust.augment.pad_crop import PadCrop
from tfrobust.augment.registry import (
    AUGMENTATIONS,
    MIXING,
    ORDER,
    build_augmentation,
    format_aug,
    mixing_options,
    parse_aug,
    produces_soft_labels,
)
from tfrobust.errors import UserError

SEED = tf.constant([1, 99], tf.int64)


def _batch(b=8, h=8, w=8, c=3, k=4):
    rng = np.random.default_rng(0)
    return {
        "images": tf.constant(rng.uniform(size=(b, h, w, c)).astype(np.float32)),
        "labels": tf.constant(np.eye(k, dtype=np.float32)[np.arange(b) % k]),
    }


def test_registry_contents():
    assert (
        set(AUGMENTATIONS)
        == set(ORDER)
        == {"padcrop", "autoaugment", "randaugment", "cutout", "cutmix", "mixup", "ricap"}
    )
    assert MIXING == {"cutmix", "mixup", "ricap"}
    for name, cls in AUGMENTATIONS.items():
        assert issubclass(cls, keras.layers.Layer), name
    # Mixing operations come last in the canonical order.
    assert all(ORDER.index(m) > ORDER.index(o) for m in MIXING for o in set(ORDER) - MIXING)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("padcrop+cutmix", ["padcrop", "cutmix"]),
        ("cutmix+padcrop", ["padcrop", "cutmix"]),
        (" CutMix + PadCrop ", ["padcrop", "cutmix"]),
        ("cutout+autoaugment+padcrop", ["padcrop", "autoaugment", "cutout"]),
        ("mixup", ["mixup"]),
        ("none", []),
        ("None", []),
    ],
)
def test_parse_aug(text, expected):
    assert parse_aug(text) == expected
    assert parse_aug(format_aug(expected)) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("padcrop+cutmixx", "unknown augmentation 'cutmixx'; valid names: padcrop, autoaugment"),
        ("padcrop+padcrop", "given twice"),
        ("cutmix+mixup", "at most one mixing augmentation"),
        ("padcrop+ricap+cutmix", "cutmix and ricap"),
        ("", "--aug is empty"),
        ("padcrop++cutmix", "empty name"),
        ("none+padcrop", "'none' cannot be combined"),
    ],
)
def test_parse_aug_errors(text, message):
    with pytest.raises(UserError, match=message.replace("+", r"\+")):
        parse_aug(text)


def test_produces_soft_labels():
    assert produces_soft_labels(["padcrop", "cutmix"])
    assert not produces_soft_labels(["padcrop", "cutout", "autoaugment"])
    assert not produces_soft_labels([])


def test_build_augmentation_order_and_defaults():
    aug = build_augmentation(["cutmix", "cutout", "padcrop"], image_shape=(32, 32, 3), allow_flip=True)
    assert isinstance(aug, Compose)
    assert [type(layer) for layer in aug.layers] == [PadCrop, Cutout, CutMix]
    pad, cut, _ = aug.layers
    assert pad.padding == 4 and pad.flip is True
    assert cut.window == 18
    small = build_augmentation(["padcrop", "cutout", "autoaugment"], image_shape=(8, 8, 1), allow_flip=False)
    pad, auto, cut = small.layers
    assert pad.padding == 1 and pad.flip is False
    assert cut.window == round(18 * 8 / 32)
    assert isinstance(auto, AutoAugment) and auto.policy == "svhn"
    assert build_augmentation(["autoaugment"], image_shape=(32, 32, 3), allow_flip=True).layers[0].policy == "cifar10"


def test_build_augmentation_options_and_errors():
    aug = build_augmentation(
        ["padcrop", "mixup"], image_shape=(32, 32, 3), allow_flip=True, options={"mixup": {"alpha": 0.2}}
    )
    assert aug.layers[1].alpha == 0.2
    with pytest.raises(UserError, match="cutmix"):
        build_augmentation(["padcrop"], image_shape=(32, 32, 3), allow_flip=True, options={"cutmix": {}})
    with pytest.raises(UserError, match="bad options for augmentation 'mixup'"):
        build_augmentation(["mixup"], image_shape=(32, 32, 3), allow_flip=True, options={"mixup": {"alpha": -1}})
    with pytest.raises(UserError, match="at most one mixing"):
        build_augmentation(["mixup", "ricap"], image_shape=(32, 32, 3), allow_flip=True)
    with pytest.raises(UserError, match="unknown augmentation"):
        build_augmentation(["flip"], image_shape=(32, 32, 3), allow_flip=True)
    with pytest.raises(ValueError, match="image_shape"):
        build_augmentation(["padcrop"], image_shape=(32, 32), allow_flip=True)


def test_compose_splits_the_seed_one_row_per_layer():
    batch = _batch()
    aug = build_augmentation(["padcrop", "cutout", "cutmix"], image_shape=(8, 8, 3), allow_flip=True)
    out = aug(batch, training=True, seed=SEED)
    seeds = split_seed(SEED, 3)
    manual = batch
    for layer, seed in zip(aug.layers, seeds):
        manual = layer(manual, training=True, seed=seed)
    for key in ("images", "labels"):
        np.testing.assert_array_equal(out[key].numpy(), manual[key].numpy())


def test_single_layer_chain_is_that_layer():
    # A Pad & Crop-only chain draws the crops PadCrop itself draws from the batch seed.
    batch = _batch()
    aug = build_augmentation(["padcrop"], image_shape=(8, 8, 3), allow_flip=True)
    direct = PadCrop(padding=1, flip=True)(batch, training=True, seed=SEED)
    np.testing.assert_array_equal(aug(batch, training=True, seed=SEED)["images"].numpy(), direct["images"].numpy())


def test_empty_chain_is_identity_but_still_checks_labels():
    batch = _batch()
    aug = build_augmentation(parse_aug("none"), image_shape=(8, 8, 3), allow_flip=True)
    out = aug(batch, training=True, seed=SEED)
    np.testing.assert_array_equal(out["images"].numpy(), batch["images"].numpy())
    batch["labels"] = tf.zeros([8], tf.int64)
    with pytest.raises(ValueError, match="one-hot or soft float labels"):
        aug(batch, training=True, seed=SEED)


def test_chain_in_the_training_pipeline_is_deterministic():
    from tfrobust.data.datasets import Split
    from tfrobust.data.pipeline import train_dataset

    rng = np.random.default_rng(0)
    split = Split(images=rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8), labels=rng.integers(0, 4, size=40))
    aug = build_augmentation(parse_aug("padcrop+cutout+cutmix"), image_shape=(8, 8, 3), allow_flip=True)

    ds = train_dataset(
        split,
        num_classes=4,
        batch_size=8,
        seed=3,
        first_epoch=0,
        steps_per_epoch=5,
        augment=lambda batch, seed: aug(batch, training=True, seed=seed),
    ).take(6)
    # Two passes over the same (traced once) dataset, with parallel, prefetched maps.
    first = [(x.numpy(), y.numpy()) for x, y in ds]
    second = [(x.numpy(), y.numpy()) for x, y in ds]
    assert len(first) == 6
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
        assert x1.dtype == np.float32 and y1.dtype == np.float32
        np.testing.assert_allclose(y1.sum(axis=1), 1.0, atol=1e-6)
    assert any(np.any((y > 0) & (y < 1)) for _, y in first)  # CutMix produced soft labels


def test_chain_stays_float32_under_a_mixed_precision_policy():
    # run.py sets the global policy (e.g. mixed_bfloat16) before building the pipeline; augmentation math
    # and label weights must stay float32.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        aug = build_augmentation(["padcrop", "cutmix"], image_shape=(8, 8, 3), allow_flip=True)
        out = aug(_batch(), training=True, seed=SEED)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert out["images"].dtype == tf.float32 and out["labels"].dtype == tf.float32


def test_mixing_options_set_the_draws_of_the_mixing_operation_only():
    names = parse_aug("padcrop+cutmix")
    options = mixing_options(names, draws="batch", devices=2, sub_batches=4)
    assert options == {"cutmix": {"draws": "batch", "devices": 2, "sub_batches": 4}}
    assert mixing_options(parse_aug("padcrop+cutout"), draws="example") == {}
    aug = build_augmentation(names, image_shape=(8, 8, 3), allow_flip=True, options=options)
    cutmix = aug.layers[-1]
    assert (cutmix.draws, cutmix.devices, cutmix.sub_batches) == ("batch", 2, 4)
    # Defaults: the reference's per-device-batch draws on one device batch.
    plain = build_augmentation(names, image_shape=(8, 8, 3), allow_flip=True).layers[-1]
    assert (plain.draws, plain.devices, plain.sub_batches) == ("batch", 1, 1)
