"""CutMix: label weight == exact pasted pixel fraction, box area ~ U(0, 1), boxes anywhere, partners."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfrobust.augment.cutmix import CutMix, cutmix_boxes, pasted_fraction

SEED = tf.constant([5, 9], tf.int64)


def _constant_images(b, h, w, c=2):
    # Image b is the constant (b + 1) / (B + 1): distinct per example, so every output pixel names its source.
    values = (np.arange(b, dtype=np.float32) + 1.0) / (b + 1.0)
    return np.broadcast_to(values[:, None, None, None], (b, h, w, c)).copy(), values


@pytest.mark.parametrize("h, w", [(16, 16), (12, 20), (7, 5)])
def test_label_weights_are_the_exact_pasted_fractions(h, w):
    b = 48
    images, values = _constant_images(b, h, w)
    batch = {"images": tf.constant(images), "labels": tf.eye(b)}
    out = CutMix()(batch, training=True, seed=SEED)
    pixels, labels = out["images"].numpy(), out["labels"].numpy()
    pasted_somewhere = 0
    for i in range(b):
        counts = {s: int(np.sum(pixels[i, :, :, 0] == values[s])) for s in range(b)}
        assert sum(counts.values()) == h * w  # every pixel comes from some example
        sources = [s for s, n in counts.items() if n]
        assert set(sources) <= {i} | set(np.flatnonzero(labels[i]))
        for s in range(b):
            expected = np.float32(counts[s]) / np.float32(h * w)
            if s == i:
                np.testing.assert_allclose(labels[i, s], expected, atol=2e-7)  # 1 - f, one rounding
            else:
                assert labels[i, s] == expected, (i, s, labels[i, s], expected)  # f exactly
        # The pasted pixels form one axis-aligned rectangle (the clipped box).
        pasted = pixels[i, :, :, 0] != values[i]
        if pasted.any():
            pasted_somewhere += 1
            rows, cols = np.flatnonzero(pasted.any(axis=1)), np.flatnonzero(pasted.any(axis=0))
            assert pasted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
            assert pasted.sum() == len(rows) * len(cols)
        # Channels agree: one mask for the whole pixel.
        np.testing.assert_array_equal(pixels[i, :, :, 0], pixels[i, :, :, 1])
    assert pasted_somewhere > b // 2
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)


def test_layer_uses_the_documented_boxes_and_partners():
    b, h, w = 32, 16, 16
    images, values = _constant_images(b, h, w)
    out = CutMix()({"images": tf.constant(images), "labels": tf.eye(b)}, training=True, seed=SEED)
    boxes = cutmix_boxes(SEED, b, h, w)
    fraction = pasted_fraction(boxes, h, w).numpy()
    partner = boxes.partner.numpy()
    assert sorted(partner.tolist()) == list(range(b))  # a permutation of the batch
    labels = out["labels"].numpy()
    for i in range(b):
        if partner[i] != i:
            assert labels[i, partner[i]] == fraction[i]
    # Unclipped pixel boxes vs the clipped count.
    top, bottom = boxes.top.numpy(), boxes.bottom.numpy()
    left, right = boxes.left.numpy(), boxes.right.numpy()
    clipped = (np.clip(bottom, 0, h) - np.clip(top, 0, h)) * (np.clip(right, 0, w) - np.clip(left, 0, w))
    np.testing.assert_array_equal(fraction, clipped.astype(np.float32) / np.float32(h * w))


def test_box_area_is_uniform_ks():
    # lambda ~ Beta(1, 1): the sampled area fraction 1 - lambda is U(0, 1).
    boxes = cutmix_boxes(SEED, 5000, 32, 32)
    result = stats.kstest(boxes.area.numpy(), "uniform")
    assert result.pvalue > 0.01, result


def test_pixel_box_area_before_clipping_is_uniform_ks_and_unbiased():
    # On a large grid the rounded pixel box keeps the U(0, 1) area distribution (KS), and on 32x32 its
    # mean is still 1/2: rounding both edges of a continuous box is unbiased.
    big = cutmix_boxes(tf.constant([1, 2], tf.int64), 4000, 1024, 1024)
    area = ((big.bottom - big.top) * (big.right - big.left)).numpy() / 1024.0**2
    assert stats.kstest(area, "uniform").pvalue > 0.01
    small = cutmix_boxes(tf.constant([3, 4], tf.int64), 20000, 32, 32)
    side_h = (small.bottom - small.top).numpy()
    expected_h = np.sqrt(small.area.numpy()) * 32
    assert abs(np.mean(side_h - expected_h)) < 0.02  # unbiased sides
    assert np.all(np.abs(side_h - expected_h) <= 1.0)
    area = (side_h * (small.right - small.left).numpy()) / 1024.0
    assert abs(area.mean() - 0.5) < 0.01


def test_box_centres_cover_the_whole_image():
    h = w = 32
    boxes = cutmix_boxes(SEED, 5000, h, w)
    centre_y = (boxes.top + boxes.bottom).numpy() / 2.0
    centre_x = (boxes.left + boxes.right).numpy() / 2.0
    for centre, size in ((centre_y, h), (centre_x, w)):
        assert centre.min() < 1.0 and centre.max() > size - 1.0
        # Uniform over [0, size): each quarter holds about a quarter of the centres.
        quarters = np.histogram(centre, bins=4, range=(0, size))[0] / len(centre)
        assert np.all(np.abs(quarters - 0.25) < 0.03), quarters
    # Boxes cross the border often (then the pasted fraction is smaller than the drawn area).
    fraction = pasted_fraction(boxes, h, w).numpy()
    assert np.mean(fraction < boxes.area.numpy() - 1e-6) > 0.3
    assert np.all(fraction <= boxes.area.numpy() + (2 * 32 + 1) / 1024 + 1e-6)  # rounding adds < h + w + 1 pixels


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_other_alpha_gives_beta_area_ks(alpha):
    boxes = cutmix_boxes(SEED, 5000, 32, 32, alpha=alpha)
    assert stats.kstest(1.0 - boxes.area.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 0.01


def test_self_partner_leaves_the_example_unchanged():
    # Batch of one: the only partner is itself.
    images = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype(np.float32)
    batch = {"images": tf.constant(images), "labels": tf.constant([[0.2, 0.8]])}
    out = CutMix()(batch, training=True, seed=SEED)
    np.testing.assert_array_equal(out["images"].numpy(), images)
    np.testing.assert_array_equal(out["labels"].numpy(), np.float32([[0.2, 0.8]]))


def test_soft_labels_mix_linearly():
    rng = np.random.default_rng(1)
    b = 16
    labels = rng.dirichlet(np.ones(4), size=b).astype(np.float32)
    images = rng.uniform(size=(b, 8, 8, 1)).astype(np.float32)
    out = CutMix()({"images": tf.constant(images), "labels": tf.constant(labels)}, training=True, seed=SEED)
    boxes = cutmix_boxes(SEED, b, 8, 8)
    f = pasted_fraction(boxes, 8, 8).numpy()[:, None]
    expected = (1 - f) * labels + f * labels[boxes.partner.numpy()]
    np.testing.assert_allclose(out["labels"].numpy(), expected, atol=1e-6)
