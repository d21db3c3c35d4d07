"""tfrobust.data.pipeline: exact batches, per-epoch permutations, resumption, one-hot labels, eval order."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrobust.augment.pad_crop import PadCrop
from tfrobust.data.datasets import Split
from tfrobust.data.pipeline import eval_dataset, train_dataset
from tfrobust.errors import UserError

N, K = 50, 5


def _split(n=N, h=2, w=2, c=1) -> Split:
    # Each image encodes its index in the first pixel (index < 256), so a batch tells us which
    # examples it holds; labels are index % K.
    images = np.zeros((n, h, w, c), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    images[:, -1, -1, -1] = 255
    return Split(images=images, labels=(np.arange(n) % K).astype(np.int64))


def _indices(x: tf.Tensor) -> np.ndarray:
    return np.round(x.numpy()[:, 0, 0, 0] * 255).astype(np.int64)


def _take(ds, count):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(count)]


def test_batches_have_exact_size_types_and_one_hot_labels():
    ds = train_dataset(_split(), num_classes=K, batch_size=8, seed=0, first_epoch=0, steps_per_epoch=6, augment=None)
    assert ds.element_spec[0].shape == (8, 2, 2, 1) and ds.element_spec[1].shape == (8, K)
    for x, y in ds.take(14):  # more than two epochs: the stream never ends
        assert x.shape == (8, 2, 2, 1) and x.dtype == tf.float32
        assert y.shape == (8, K) and y.dtype == tf.float32
        idx = _indices(x)
        np.testing.assert_array_equal(y.numpy(), np.eye(K, dtype=np.float32)[idx % K])
        assert float(tf.reduce_max(x)) == 1.0 and float(tf.reduce_min(x)) >= 0.0


def test_uint8_to_float_is_x_over_255():
    split = _split()
    ds = eval_dataset(split, num_classes=K, batch_size=N)
    x, _ = next(iter(ds))
    np.testing.assert_array_equal(x.numpy(), split.images.astype(np.float32) / np.float32(255))


def test_each_epoch_is_a_permutation_without_repeats():
    steps, batch = 6, 8  # 48 of the 50 images per epoch
    ds = train_dataset(
        _split(), num_classes=K, batch_size=batch, seed=1, first_epoch=0, steps_per_epoch=steps, augment=None
    )
    batches = [_indices(x) for x, _ in ds.take(3 * steps)]
    epochs = [np.concatenate(batches[e * steps : (e + 1) * steps]) for e in range(3)]
    for order in epochs:
        assert len(order) == steps * batch
        assert len(set(order.tolist())) == steps * batch  # no repeats within the epoch
        assert order.min() >= 0 and order.max() < N
    # Different epochs, different orders.
    assert not np.array_equal(epochs[0], epochs[1])
    # Not the identity order (it is shuffled).
    assert not np.array_equal(np.sort(epochs[0]), epochs[0])


def test_restart_at_epoch_matches_uninterrupted_run():
    pad = PadCrop(padding=1, flip=True)

    def augment(batch, seed):
        return pad(batch, training=True, seed=seed)

    split = _split(h=4, w=4, c=3)
    kwargs = dict(num_classes=K, batch_size=8, seed=7, steps_per_epoch=5, augment=augment)
    continuous = _take(train_dataset(split, first_epoch=0, **kwargs), 15)  # epochs 0, 1, 2
    resumed = _take(train_dataset(split, first_epoch=2, **kwargs), 5)  # epoch 2 only
    for (xa, ya), (xb, yb) in zip(continuous[10:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # And the whole stream is reproducible.
    again = _take(train_dataset(split, first_epoch=0, **kwargs), 15)
    for (xa, _), (xb, _) in zip(continuous, again):
        np.testing.assert_array_equal(xa, xb)


def test_stream_starting_mid_epoch_matches_uninterrupted_run():
    # Training epochs need not end where these epochs do (run.py): the stream can start at any batch.
    pad = PadCrop(padding=1, flip=True)

    def augment(batch, seed):
        return pad(batch, training=True, seed=seed)

    split = _split(h=4, w=4, c=3)
    kwargs = dict(num_classes=K, batch_size=8, seed=7, steps_per_epoch=5, augment=augment)
    continuous = _take(train_dataset(split, first_epoch=0, **kwargs), 15)
    resumed = _take(train_dataset(split, first_epoch=1, first_step=3, **kwargs), 7)
    for (xa, ya), (xb, yb) in zip(continuous[8:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(UserError, match="first step"):
        train_dataset(split, first_epoch=0, first_step=5, **kwargs)


def test_seed_changes_the_order():
    kwargs = dict(num_classes=K, batch_size=10, first_epoch=0, steps_per_epoch=5, augment=None)
    a = _indices(next(iter(train_dataset(_split(), seed=0, **kwargs)))[0])
    b = _indices(next(iter(train_dataset(_split(), seed=1, **kwargs)))[0])
    assert not np.array_equal(a, b)


def test_augment_gets_dict_and_per_batch_seeds():
    seen_seeds = []

    def augment(batch, seed):
        assert set(batch) == {"images", "labels"}
        assert batch["labels"].dtype == tf.float32
        seen_seeds.append(seed)
        # Put a number drawn from the seed in the images so we can read it back.
        marker = tf.random.stateless_uniform([], seed=seed)
        return {"images": batch["images"] * 0.0 + marker, "labels": batch["labels"]}

    ds = train_dataset(
        _split(), num_classes=K, batch_size=10, seed=3, first_epoch=4, steps_per_epoch=5, augment=augment
    )
    markers = [float(x[0, 0, 0, 0]) for x, _ in ds.take(10)]
    assert len(set(markers)) == 10  # every (epoch, step) has its own seed
    assert seen_seeds and seen_seeds[0].shape == (2,)


def test_batch_larger_than_training_set_rejected():
    with pytest.raises(UserError, match="lower --batch-size"):
        train_dataset(_split(), num_classes=K, batch_size=N + 1, seed=0, first_epoch=0, steps_per_epoch=1, augment=None)


def test_too_many_steps_rejected():
    with pytest.raises(UserError, match="at most 6 steps"):
        train_dataset(_split(), num_classes=K, batch_size=8, seed=0, first_epoch=0, steps_per_epoch=7, augment=None)


def test_bad_batch_size_rejected():
    with pytest.raises(UserError, match="--batch-size"):
        eval_dataset(_split(), num_classes=K, batch_size=0)


def test_labels_outside_num_classes_rejected():
    with pytest.raises(UserError, match="labels must be in 0..3"):
        train_dataset(_split(), num_classes=4, batch_size=8, seed=0, first_epoch=0, steps_per_epoch=6, augment=None)


def test_eval_in_order_with_smaller_last_batch():
    split = _split()
    batches = list(eval_dataset(split, num_classes=K, batch_size=16))
    assert [x.shape[0] for x, _ in batches] == [16, 16, 16, 2]
    order = np.concatenate([_indices(x) for x, _ in batches])
    np.testing.assert_array_equal(order, np.arange(N))
    labels = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(labels, np.eye(K, dtype=np.float32)[split.labels])


def test_eval_limit():
    batches = list(eval_dataset(_split(), num_classes=K, batch_size=16, limit=20))
    assert [x.shape[0] for x, _ in batches] == [16, 4]
    assert list(eval_dataset(_split(), num_classes=K, batch_size=16, limit=0)) == []
    assert sum(x.shape[0] for x, _ in eval_dataset(_split(), num_classes=K, batch_size=16, limit=999)) == N


def test_eval_of_empty_split():
    empty = Split(images=np.zeros((0, 2, 2, 1), np.uint8), labels=np.zeros((0,), np.int64))
    assert list(eval_dataset(empty, num_classes=K, batch_size=4)) == []


def test_augmentation_repeats_hold_each_image_n_times_with_different_augmentations():
    rng = np.random.default_rng(0)
    split = Split(images=rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8), labels=rng.integers(0, 10, 64))
    layer = PadCrop(padding=2, flip=False)
    ds = train_dataset(
        split,
        num_classes=10,
        batch_size=16,
        seed=0,
        first_epoch=0,
        steps_per_epoch=4,
        augment=lambda b, s: layer(b, training=True, seed=s),
        repeats=4,
    )
    plain = train_dataset(
        split, num_classes=10, batch_size=16, seed=0, first_epoch=0, steps_per_epoch=4, augment=None, repeats=4
    )
    for (x, _y), (x0, y0) in zip(ds.take(4), plain.take(4)):
        x0, y0 = x0.numpy(), y0.numpy()
        groups = x0.reshape(4, 4, 8, 8, 1)
        assert all(np.array_equal(g[0], g[k]) for g in groups for k in range(4))  # 4 distinct images x 4
        assert all(np.array_equal(l[0], l[k]) for l in y0.reshape(4, 4, 10) for k in range(4))
        augmented = x.numpy().reshape(4, 4, 8, 8, 1)
        assert any(not np.array_equal(g[0], g[1]) for g in augmented)  # copies augmented differently
    # 16 distinct images per epoch of 4 steps: none repeats across batches of the epoch
    first = [g.tobytes() for (x0, _) in plain.take(4) for g in x0.numpy().reshape(4, 4, 8, 8, 1)[:, 0]]
    assert len(set(first)) == 16


def test_augmentation_repeats_must_divide_the_batch():
    split = Split(images=np.zeros((64, 8, 8, 1), np.uint8), labels=np.zeros(64, np.int64))
    with pytest.raises(UserError, match="aug-repeats"):
        train_dataset(
            split, num_classes=10, batch_size=16, seed=0, first_epoch=0, steps_per_epoch=2, augment=None, repeats=3
        )


def test_device_batches_each_hold_whole_repeats():
    # Two replicas of 8 rows each: replica k's consecutive block holds 2 distinct images x 4, as the
    # reference lays out every device batch.
    rng = np.random.default_rng(0)
    split = Split(images=rng.integers(0, 256, (64, 4, 4, 1), dtype=np.uint8), labels=rng.integers(0, 10, 64))
    ds = train_dataset(
        split,
        num_classes=10,
        batch_size=16,
        seed=0,
        first_epoch=0,
        steps_per_epoch=2,
        augment=None,
        repeats=4,
        devices=2,
    )
    for x, _ in ds.take(2):
        blocks = x.numpy().reshape(2, 2, 4, 4, 4, 1)  # [device, image, copy, H, W, C]
        assert (blocks == blocks[:, :, :1]).all()
    with pytest.raises(UserError, match="replicas"):
        train_dataset(
            split,
            num_classes=10,
            batch_size=16,
            seed=0,
            first_epoch=0,
            steps_per_epoch=2,
            augment=None,
            repeats=2,
            devices=3,
        )
    with pytest.raises(UserError, match="aug-repeats 4 must be >= 1 and divide the batch of each of the 4 replicas"):
        train_dataset(
            split,
            num_classes=10,
            batch_size=8,
            seed=0,
            first_epoch=0,
            steps_per_epoch=2,
            augment=None,
            repeats=4,
            devices=4,
        )
