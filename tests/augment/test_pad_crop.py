"""tfrobust.augment.pad_crop.PadCrop: exact pixels, per-example randomness, determinism, config."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.augment.pad_crop import PadCrop

B, H, W, C, K = 16, 8, 8, 3, 5


def _batch(b=B, h=H, w=W, c=C, seed=0):
    rng = np.random.default_rng(seed)
    # Strictly positive pixels so a zero in the output can only come from the padding.
    images = rng.uniform(0.01, 1.0, size=(b, h, w, c)).astype(np.float32)
    labels = np.eye(K, dtype=np.float32)[rng.integers(0, K, size=b)]
    return {"images": tf.constant(images), "labels": tf.constant(labels)}


def _matching(out: np.ndarray, image: np.ndarray, pad: int, flip: bool) -> list[tuple[int, int, bool]]:
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    found = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + h, dx : dx + w]
            if np.array_equal(out, crop):
                found.append((dy, dx, False))
            if flip and np.array_equal(out, crop[:, ::-1]):
                found.append((dy, dx, True))
    return found


SEED = tf.constant([3, 7], tf.int64)


def test_output_is_an_exact_crop_of_the_zero_padded_image():
    batch = _batch()
    out = PadCrop(padding=4, flip=False)(batch, training=True, seed=SEED)
    images, result = batch["images"].numpy(), out["images"].numpy()
    assert result.shape == images.shape and result.dtype == np.float32
    for b in range(B):
        assert _matching(result[b], images[b], 4, flip=False), f"example {b} is not an exact padded crop"


def test_crop_equals_shifted_image_with_zeros():
    # One example, checked by hand: the crop at offset (dy, dx) is the image shifted by (4-dy, 4-dx).
    batch = _batch(b=1)
    out = PadCrop(padding=4, flip=False)(batch, training=True, seed=SEED)["images"].numpy()[0]
    image = batch["images"].numpy()[0]
    ((dy, dx, _),) = _matching(out, image, 4, flip=False)
    sy, sx = 4 - dy, 4 - dx
    expected = np.zeros_like(image)
    src = image[max(0, -sy) : H - max(0, sy), max(0, -sx) : W - max(0, sx)]
    expected[max(0, sy) : max(0, sy) + src.shape[0], max(0, sx) : max(0, sx) + src.shape[1]] = src
    np.testing.assert_array_equal(out, expected)


def test_flip_happens_for_some_examples_and_is_exact():
    batch = _batch(b=64)
    out = PadCrop(padding=0, flip=True)(batch, training=True, seed=SEED)["images"].numpy()
    images = batch["images"].numpy()
    flipped = [np.array_equal(out[b], images[b, :, ::-1]) for b in range(64)]
    kept = [np.array_equal(out[b], images[b]) for b in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54  # about half


def test_crop_and_flip_together_exact():
    batch = _batch(b=32)
    out = PadCrop(padding=2, flip=True)(batch, training=True, seed=SEED)["images"].numpy()
    images = batch["images"].numpy()
    flips = 0
    for b in range(32):
        found = _matching(out[b], images[b], 2, flip=True)
        assert found, f"example {b} is not a padded crop or its mirror"
        flips += any(f for _, _, f in found) and not any(not f for _, _, f in found)
    assert flips > 0


def test_offsets_differ_per_example():
    batch = _batch(b=32)
    out = PadCrop(padding=4, flip=False)(batch, training=True, seed=SEED)["images"].numpy()
    images = batch["images"].numpy()
    offsets = {_matching(out[b], images[b], 4, flip=False)[0][:2] for b in range(32)}
    assert len(offsets) > 5  # 81 possible offsets


def test_offsets_cover_the_full_range():
    # Offsets are uniform over 0..2*padding inclusive along each axis.
    batch = _batch(b=400, h=4, w=4, c=1)
    out = PadCrop(padding=1, flip=False)(batch, training=True, seed=SEED)["images"].numpy()
    images = batch["images"].numpy()
    offsets = {_matching(out[b], images[b], 1, flip=False)[0][:2] for b in range(400)}
    assert offsets == {(dy, dx) for dy in range(3) for dx in range(3)}


def test_labels_untouched():
    batch = _batch()
    out = PadCrop()(batch, training=True, seed=SEED)
    np.testing.assert_array_equal(out["labels"].numpy(), batch["labels"].numpy())


def test_training_false_and_none_are_no_ops():
    batch = _batch()
    layer = PadCrop()
    for training in (False, None):
        out = layer(batch, training=training, seed=SEED)
        np.testing.assert_array_equal(out["images"].numpy(), batch["images"].numpy())


def test_same_seed_same_output_eager_function_and_tf_data():
    batch = _batch()
    layer = PadCrop(padding=4, flip=True)
    eager = layer(batch, training=True, seed=SEED)["images"].numpy()

    @tf.function
    def fn(b, s):
        return layer(b, training=True, seed=s)["images"]

    graph = fn(batch, SEED).numpy()
    ds = tf.data.Dataset.from_tensors(batch).map(
        lambda b: layer(b, training=True, seed=SEED)["images"], num_parallel_calls=2
    )
    data = next(iter(ds)).numpy()
    np.testing.assert_array_equal(eager, graph)
    np.testing.assert_array_equal(eager, data)
    # int32 seeds mean the same thing.
    np.testing.assert_array_equal(eager, layer(batch, training=True, seed=tf.constant([3, 7], tf.int32))["images"])
    # And a different seed gives a different batch.
    other = layer(batch, training=True, seed=tf.constant([3, 8], tf.int64))["images"].numpy()
    assert not np.array_equal(eager, other)


def test_without_seed_uses_the_layer_generator():
    batch = _batch()
    layer = PadCrop(seed=1)
    first = layer(batch, training=True)["images"].numpy()
    second = layer(batch, training=True)["images"].numpy()
    assert not np.array_equal(first, second)  # the generator advances
    again = PadCrop(seed=1)(batch, training=True)["images"].numpy()
    np.testing.assert_array_equal(first, again)  # and is reproducible from its seed


def test_integer_labels_rejected():
    batch = _batch()
    batch["labels"] = tf.constant(np.arange(B) % K, tf.int32)
    with pytest.raises(ValueError, match="one-hot or soft float labels"):
        PadCrop()(batch, training=True, seed=SEED)


def test_non_square_and_grey_images():
    batch = _batch(b=8, h=5, w=9, c=1)
    out = PadCrop(padding=3, flip=True)(batch, training=True, seed=SEED)["images"].numpy()
    images = batch["images"].numpy()
    assert out.shape == (8, 5, 9, 1)
    for b in range(8):
        assert _matching(out[b], images[b], 3, flip=True)


def test_config_round_trip():
    layer = PadCrop(padding=2, flip=False, seed=5, name="pc")
    config = layer.get_config()
    assert config["padding"] == 2 and config["flip"] is False
    clone = PadCrop.from_config(config)
    assert clone.padding == 2 and clone.flip is False and clone.name == "pc"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, PadCrop) and restored.padding == 2


def test_bad_padding_rejected():
    with pytest.raises(ValueError, match="padding"):
        PadCrop(padding=-1)
