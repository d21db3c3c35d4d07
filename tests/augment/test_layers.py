"""Properties every augmentation layer of tfrobust.augment must have (issue 4): determinism under one seed
eagerly / in tf.function / in tf.data, per-example randomness, no-op outside training, [0, 1] range, labels
that sum to 1, refusal of integer labels, get_config round trips."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.augment.autoaugment import AutoAugment
from tfrobust.augment.compose import Compose
from tfrobust.augment.cutmix import CutMix
from tfrobust.augment.cutout import Cutout
from tfrobust.augment.mixup import MixUp
from tfrobust.augment.randaugment import RandAugment
from tfrobust.augment.registry import build_augmentation
from tfrobust.augment.ricap import Ricap

B, H, W, C, K = 16, 12, 12, 3, 5
SEED = tf.constant([11, 23], tf.int64)


def _batch(b=B, h=H, w=W, c=C, k=K, seed=0, soft=False):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, size=(b, h, w, c)).astype(np.float32)
    # Exact extremes too: the range checks must see 0 and 1 survive every operation.
    images[0, 0, 0] = 0.0
    images[0, 0, 1] = 1.0
    if b > 1:
        images[1] = 1.0  # a whole white image
    if soft:
        labels = rng.dirichlet(np.ones(k), size=b).astype(np.float32)
    else:
        labels = np.eye(k, dtype=np.float32)[rng.integers(0, k, size=b)]
    return {"images": tf.constant(images), "labels": tf.constant(labels)}


def _layers():
    return {
        "cutout": Cutout(window=5),
        "cutmix": CutMix(draws="example"),
        "mixup": MixUp(alpha=0.5, draws="example"),
        "ricap": Ricap(draws="example"),
        # Per-device-batch draws (the default): 2 device batches of 2 sub-batches each.
        "cutmix-batch": CutMix(devices=2, sub_batches=2),
        "mixup-batch": MixUp(alpha=0.5, devices=2, sub_batches=2),
        "ricap-batch": Ricap(devices=2, sub_batches=2),
        "autoaugment": AutoAugment(),
        "autoaugment-svhn": AutoAugment(policy="svhn"),
        "randaugment": RandAugment(num_ops=2, magnitude=9),
        "compose": build_augmentation(["padcrop", "cutout", "cutmix"], image_shape=(H, W, C), allow_flip=True),
    }


NAMES = list(_layers())
MIXING_NAMES = {"cutmix", "mixup", "ricap", "cutmix-batch", "mixup-batch", "ricap-batch"}
# The SVHN policy runs the same code as the CIFAR-10 one; tracing it twice more (tf.function, tf.data)
# would only add seconds.
TRACED_NAMES = [name for name in NAMES if name != "autoaugment-svhn"]


@pytest.fixture(scope="module")
def layers():
    return _layers()


@pytest.mark.parametrize("name", TRACED_NAMES)
def test_same_seed_same_result_eager_function_and_tf_data(layers, name):
    layer = layers[name]
    batch = _batch()
    eager = layer(batch, training=True, seed=SEED)

    @tf.function
    def fn(b, s):
        return layer(b, training=True, seed=s)

    graph = fn(batch, SEED)
    ds = tf.data.Dataset.from_tensors(batch).map(lambda b: layer(b, training=True, seed=SEED), num_parallel_calls=2)
    data = next(iter(ds))
    for key in ("images", "labels"):
        np.testing.assert_array_equal(eager[key].numpy(), graph[key].numpy(), err_msg=f"{name} {key} tf.function")
        np.testing.assert_array_equal(eager[key].numpy(), data[key].numpy(), err_msg=f"{name} {key} tf.data")
    # int32 seeds mean the same thing; another seed gives another batch.
    again = layer(batch, training=True, seed=tf.constant([11, 23], tf.int32))
    np.testing.assert_array_equal(eager["images"].numpy(), again["images"].numpy())
    other = layer(batch, training=True, seed=tf.constant([11, 24], tf.int64))
    assert not np.array_equal(eager["images"].numpy(), other["images"].numpy())


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range_and_labels(layers, name):
    batch = _batch(soft=True)
    out = layers[name](batch, training=True, seed=SEED)
    images, labels = out["images"].numpy(), out["labels"].numpy()
    assert images.shape == (B, H, W, C) and images.dtype == np.float32
    assert labels.shape == (B, K) and labels.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.min() >= 0.0
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    assert not np.array_equal(images, batch["images"].numpy()), f"{name} changed nothing"


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_augmented_differently(layers, name):
    if name in MIXING_NAMES and name.endswith("-batch"):
        # Per-device-batch draws share lambda/box/boundary within a device batch, but every example
        # still gets its own partners: with labels eye(32), the partner indices differ per row.
        batch = {"images": _batch(b=32)["images"], "labels": tf.eye(32)}
        labels = layers[name](batch, training=True, seed=SEED)["labels"].numpy()
        distinct = {tuple(np.flatnonzero(row)) for row in labels}
    elif name in MIXING_NAMES:
        # Labels eye(32): the weights in each output row are that example's own draw (lambda, area).
        batch = {"images": _batch(b=32)["images"], "labels": tf.eye(32)}
        labels = layers[name](batch, training=True, seed=SEED)["labels"].numpy()
        distinct = {tuple(np.sort(np.round(row[row > 0], 6))) for row in labels}
    else:
        # The same image 32 times: any difference between outputs comes from per-example draws.
        image = _batch(b=1)["images"]
        batch = {"images": tf.repeat(image, 32, axis=0), "labels": tf.one_hot(tf.zeros([32], tf.int32), K)}
        out = layers[name](batch, training=True, seed=SEED)["images"].numpy()
        distinct = {out[b].tobytes() for b in range(32)}
    assert len(distinct) > 8, f"{name}: only {len(distinct)} different augmentations for 32 examples"


@pytest.mark.parametrize("name", NAMES)
def test_training_false_and_none_are_no_ops(layers, name):
    batch = _batch()
    for training in (False, None):
        out = layers[name](batch, training=training, seed=SEED)
        np.testing.assert_array_equal(out["images"].numpy(), batch["images"].numpy())
        np.testing.assert_array_equal(out["labels"].numpy(), batch["labels"].numpy())


@pytest.mark.parametrize("name", NAMES)
def test_integer_labels_rejected(layers, name):
    batch = _batch()
    batch["labels"] = tf.constant(np.arange(B) % K, tf.int32)
    for training in (True, False):
        with pytest.raises(ValueError, match="one-hot or soft float labels"):
            layers[name](batch, training=training, seed=SEED)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(layers, name):
    layer = layers[name]
    batch = _batch()
    expected = layer(batch, training=True, seed=SEED)
    clone = type(layer).from_config(layer.get_config())
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    for copy in (clone, restored):
        assert copy.get_config() == layer.get_config()
        out = copy(batch, training=True, seed=SEED)
        np.testing.assert_array_equal(out["images"].numpy(), expected["images"].numpy())
        np.testing.assert_array_equal(out["labels"].numpy(), expected["labels"].numpy())


@pytest.mark.parametrize("cls", [Cutout, CutMix, MixUp, Ricap, AutoAugment, RandAugment, Compose])
def test_without_seed_uses_the_layer_generator(cls):
    layer = cls(layers=[Cutout(window=5)], seed=1) if cls is Compose else cls(seed=1)
    batch = _batch()
    first = layer(batch, training=True)["images"].numpy()
    second = layer(batch, training=True)["images"].numpy()
    assert not np.array_equal(first, second)  # the generator advances
    fresh = cls(layers=[Cutout(window=5)], seed=1) if cls is Compose else cls(seed=1)
    np.testing.assert_array_equal(first, fresh(batch, training=True)["images"].numpy())


def test_extra_keys_pass_through():
    batch = _batch()
    batch["weights"] = tf.ones([B])
    for layer in _layers().values():
        out = layer(batch, training=True, seed=SEED)
        assert set(out) == {"images", "labels", "weights"}


@pytest.mark.parametrize("bad", [-1, 0, 2.5])
def test_bad_window_rejected(bad):
    with pytest.raises(ValueError, match="window"):
        Cutout(window=bad)


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: CutMix(alpha=0.0), "alpha"),
        (lambda: MixUp(alpha=-1.0), "alpha"),
        (lambda: Ricap(beta=0.0), "beta"),
        (lambda: AutoAugment(policy="imagenet"), "policy"),
        (lambda: RandAugment(magnitude=11), "magnitude"),
        (lambda: RandAugment(num_ops=-1), "num_ops"),
        (lambda: Cutout(fill=1.5), "fill"),
        (lambda: Cutout(fill=(0.5, -0.1, 0.5)), "fill"),
    ],
)
def test_bad_parameters_rejected(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
