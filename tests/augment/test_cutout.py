"""Cutout: exactly the clipped window x window square is filled, centres uniform over the image, labels kept."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfrobust.augment.cutout import Cutout, cutout_boxes

SEED = tf.constant([7, 3], tf.int64)


def _batch(b, h, w, c=3, seed=0):
    rng = np.random.default_rng(seed)
    # Strictly positive pixels so a zero in the output can only come from the square (fill=0).
    images = rng.uniform(0.01, 1.0, size=(b, h, w, c)).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=b)]
    return {"images": tf.constant(images), "labels": tf.constant(labels)}


@pytest.mark.parametrize("h, w, window", [(32, 32, 18), (12, 9, 5), (8, 8, 4), (6, 6, 10)])
def test_zeroed_pixels_are_exactly_the_clipped_square(h, w, window):
    b = 64
    batch = _batch(b, h, w)
    out = Cutout(window=window, fill=0.0)(batch, training=True, seed=SEED)
    pixels, images = out["images"].numpy(), batch["images"].numpy()
    top, left = (t.numpy() for t in cutout_boxes(SEED, b, h, w, window))
    for i in range(b):
        expected = np.zeros((h, w), bool)
        expected[max(top[i], 0) : max(top[i] + window, 0), max(left[i], 0) : max(left[i] + window, 0)] = True
        zeroed = np.all(pixels[i] == 0.0, axis=-1)
        np.testing.assert_array_equal(zeroed, expected, err_msg=f"example {i}")
        np.testing.assert_array_equal(pixels[i][~expected], images[i][~expected])  # the rest untouched
        rows, cols = np.flatnonzero(zeroed.any(axis=1)), np.flatnonzero(zeroed.any(axis=0))
        assert len(rows) <= window and len(cols) <= window
        inside = top[i] >= 0 and left[i] >= 0 and top[i] + window <= h and left[i] + window <= w
        if inside:
            assert zeroed.sum() == window * window
    np.testing.assert_array_equal(out["labels"].numpy(), batch["labels"].numpy())


def test_centres_are_uniform_over_the_image():
    h, w, window = 10, 7, 4
    top, left = (t.numpy() for t in cutout_boxes(SEED, 7000, h, w, window))
    centre_y, centre_x = top + window // 2, left + window // 2
    for centre, size in ((centre_y, h), (centre_x, w)):
        counts = np.bincount(centre, minlength=size)
        assert len(counts) == size and counts.min() > 0  # every row/column is a possible centre
        assert stats.chisquare(counts).pvalue > 0.01  # and equally likely
    # The square sticks out of the image whenever the centre is near a border.
    assert np.mean(top < 0) > 0.1 and np.mean(left + window > w) > 0.1


def test_default_fill_is_mid_grey_and_per_channel_fill():
    batch = _batch(16, 8, 8)
    out = Cutout(window=4)(batch, training=True, seed=SEED)["images"].numpy()
    changed = np.any(out != batch["images"].numpy(), axis=-1)
    assert changed.any() and np.all(out[changed] == 0.5)
    colour = (0.1, 0.2, 0.3)
    out = Cutout(window=4, fill=colour)(batch, training=True, seed=SEED)["images"].numpy()
    top, left = (t.numpy() for t in cutout_boxes(SEED, 16, 8, 8, 4))
    r, c = max(top[0], 0), max(left[0], 0)
    np.testing.assert_array_equal(out[0, r, c], np.float32(colour))


def test_window_larger_than_image_fills_a_clipped_square():
    batch = _batch(32, 5, 5)
    out = Cutout(window=20, fill=0.0)(batch, training=True, seed=SEED)["images"].numpy()
    # A 20-pixel square centred anywhere in a 5x5 image covers all of it.
    np.testing.assert_array_equal(out, 0.0)


def test_paper_window_on_cifar_covers_about_a_quarter():
    # 18x18 on 32x32 is 32% of the image when inside; with clipping the mean covered fraction is lower.
    batch = _batch(256, 32, 32, c=1)
    out = Cutout(window=18, fill=0.0)(batch, training=True, seed=SEED)["images"].numpy()
    covered = np.mean(out == 0.0, axis=(1, 2, 3))
    assert 0.15 < covered.mean() < 0.3
    assert covered.max() == pytest.approx(18 * 18 / 1024)
