"""CutMix: label weight == exact pasted pixel fraction, box area ~ U(0, 1), boxes anywhere, partners;
per-device-batch draws (the reference's, default) against a NumPy transcription of its `utils.cutmix`."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfrobust.augment.cutmix import (
    CutMix,
    cutmix_block_boxes,
    cutmix_boxes,
    pasted_fraction,
)

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
    out = CutMix(draws="example")(batch, training=True, seed=SEED)
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
            assert pasted[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()
            assert pasted.sum() == len(rows) * len(cols)
        # Channels agree: one mask for the whole pixel.
        np.testing.assert_array_equal(pixels[i, :, :, 0], pixels[i, :, :, 1])
    assert pasted_somewhere > b // 2
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)


def test_layer_uses_the_documented_boxes_and_partners():
    b, h, w = 32, 16, 16
    images, values = _constant_images(b, h, w)
    out = CutMix(draws="example")({"images": tf.constant(images), "labels": tf.eye(b)}, training=True, seed=SEED)
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
    out = CutMix(draws="example")(
        {"images": tf.constant(images), "labels": tf.constant(labels)}, training=True, seed=SEED
    )
    boxes = cutmix_boxes(SEED, b, 8, 8)
    f = pasted_fraction(boxes, 8, 8).numpy()[:, None]
    expected = (1 - f) * labels + f * labels[boxes.partner.numpy()]
    np.testing.assert_allclose(out["labels"].numpy(), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Per-device-batch draws (draws="batch", the default): DeepMind adversarial_robustness/jax/utils.py


def _reference_cutmix(images, labels, lam, centre_y, centre_x, idx, split):
    """NumPy transcription of the reference's `utils.cutmix(rng, images, labels, split=split)` on one device
    batch, given its draws: lambda (before the area correction), the box centre (i, j) and the permutation
    `idx` of 0..n/split-1."""
    n, height, width, _ = images.shape
    cut_rat = np.sqrt(np.float32(1.0) - np.float32(lam))
    cut_w = int(np.float32(width) * cut_rat)  # jnp.array(width * cut_rat, dtype=int32): truncation
    cut_h = int(np.float32(height) * cut_rat)
    bby1 = np.clip(centre_y - cut_h // 2, 0, height)
    bbx1 = np.clip(centre_x - cut_w // 2, 0, width)
    h = np.clip(centre_y + cut_h // 2, 0, height) - bby1
    w = np.clip(centre_x + cut_w // 2, 0, width) - bbx1
    lam = 1.0 - (h * w / (height * width))
    mask = np.zeros((height, width, 1), np.float32)
    mask[bby1 : bby1 + h, bbx1 : bbx1 + w] = 1.0
    # einops.rearrange('(b1 b2) ... -> b1 b2 ...', b2=split), then the same idx on every sub-batch.
    x = images.reshape(n // split, split, *images.shape[1:])
    y = labels.reshape(n // split, split, -1)
    out_x = x * (1.0 - mask) + x[idx] * mask
    out_y = lam * y + (1.0 - lam) * y[idx]
    return out_x.reshape(images.shape), out_y.reshape(labels.shape), (bby1, bbx1, h, w)


@pytest.mark.parametrize("devices, sub_batches, h, w", [(1, 1, 16, 16), (1, 4, 12, 20), (2, 4, 32, 32), (3, 2, 7, 5)])
def test_batch_draws_match_the_reference_cutmix(devices, sub_batches, h, w):
    b = 24 * devices
    rng = np.random.default_rng(devices * 10 + sub_batches)
    images = rng.uniform(size=(b, h, w, 3)).astype(np.float32)
    labels = rng.dirichlet(np.ones(6), size=b).astype(np.float32)
    n = b // devices
    for seed in ([5, 9], [1, 2], [7, 3]):
        seed = tf.constant(seed, tf.int64)
        layer = CutMix(devices=devices, sub_batches=sub_batches)
        assert layer.draws == "batch"
        out = layer({"images": tf.constant(images), "labels": tf.constant(labels)}, training=True, seed=seed)
        boxes = cutmix_block_boxes(seed, b, h, w, devices=devices, sub_batches=sub_batches)
        partner, area = boxes.partner.numpy(), boxes.area.numpy()
        top, bottom = boxes.top.numpy(), boxes.bottom.numpy()
        left, right = boxes.left.numpy(), boxes.right.numpy()
        for k in range(devices):
            rows = slice(k * n, (k + 1) * n)
            # One draw per device batch: every row of the block carries the same lambda and box.
            for values in (area, top, bottom, left, right):
                assert len(np.unique(values[rows])) == 1
            # The raw draws, read back: lambda = 1 - area, centre = the middle of the unclipped box, and
            # the permutation of sub-batch positions (row S i + s -> row S idx[i] + s).
            block_partner = partner[rows] - k * n
            idx = block_partner[::sub_batches] // sub_batches
            np.testing.assert_array_equal(
                block_partner, (idx[:, None] * sub_batches + np.arange(sub_batches)[None, :]).reshape(-1)
            )
            assert sorted(idx.tolist()) == list(range(n // sub_batches))
            centre_y, centre_x = (top[k * n] + bottom[k * n]) // 2, (left[k * n] + right[k * n]) // 2
            assert 0 <= centre_y < h and 0 <= centre_x < w
            want_x, want_y, (bby1, bbx1, bh, bw) = _reference_cutmix(
                images[rows], labels[rows], 1.0 - area[k * n], centre_y, centre_x, idx, sub_batches
            )
            np.testing.assert_array_equal(out["images"].numpy()[rows], want_x)
            np.testing.assert_allclose(out["labels"].numpy()[rows], want_y, atol=1e-6)
            # The box is the reference's: even unclipped sides 2 (cut // 2), cut = int(size sqrt(1 - lambda)).
            cut_h = int(np.float32(h) * np.sqrt(np.float32(area[k * n])))
            cut_w = int(np.float32(w) * np.sqrt(np.float32(area[k * n])))
            assert bottom[k * n] - top[k * n] == 2 * (cut_h // 2) and right[k * n] - left[k * n] == 2 * (cut_w // 2)
            fraction = pasted_fraction(boxes, h, w).numpy()[k * n]
            assert fraction == np.float32(bh * bw) / np.float32(h * w)


def test_batch_draws_statistics_area_uniform_centres_integer_sides_even():
    # 2000 device batches of one row: 2000 independent draws of lambda, centre and box.
    boxes = cutmix_block_boxes(tf.constant([3, 8], tf.int64), 2000, 32, 32, devices=2000)
    area = boxes.area.numpy()
    assert stats.kstest(area, "uniform").pvalue > 0.01
    sides = np.concatenate([(boxes.bottom - boxes.top).numpy(), (boxes.right - boxes.left).numpy()])
    assert np.all(sides % 2 == 0)
    cut = np.floor(32 * np.sqrt(area)).astype(int)
    np.testing.assert_array_equal((boxes.bottom - boxes.top).numpy(), 2 * (cut // 2))
    centre = ((boxes.top + boxes.bottom) // 2).numpy()
    assert centre.min() == 0 and centre.max() == 31
    # Truncation makes the reference's boxes short: about one pixel per side on 32x32 (0.5 from int(),
    # 0.5 from the even side), the bias that draws="example" avoids.
    shortfall = 32 * np.sqrt(area) - (boxes.bottom - boxes.top).numpy()
    assert 0.9 < shortfall.mean() < 1.1


def test_copies_of_an_image_meet_copies_of_one_partner():
    # Rows 4a..4a+3 hold the same image (the pipeline's repeats): with sub_batches = 4 the reference's
    # shared permutation pairs all four copies with the four copies of one other image.
    b, repeats = 32, 4
    source = np.repeat(np.arange(b // repeats), repeats)
    images = np.broadcast_to(((source + 1.0) / 10.0)[:, None, None, None], (b, 8, 8, 1)).astype(np.float32)
    out = CutMix(sub_batches=repeats)({"images": tf.constant(images), "labels": tf.eye(b)}, training=True, seed=SEED)
    partner = cutmix_block_boxes(SEED, b, 8, 8, sub_batches=repeats).partner.numpy()
    for a in range(b // repeats):
        assert len(set(source[partner[repeats * a : repeats * (a + 1)]].tolist())) == 1
    # With per-example draws the copies of an image meet different partners.
    partner = cutmix_boxes(SEED, b, 8, 8).partner.numpy()
    assert any(len(set(source[partner[repeats * a : repeats * (a + 1)]].tolist())) > 1 for a in range(b // repeats))
    assert out["images"].shape == images.shape


def test_batch_size_must_split_into_device_batches():
    batch = {"images": tf.zeros([10, 4, 4, 1]), "labels": tf.eye(10)}
    with pytest.raises(ValueError, match="device batches"):
        CutMix(devices=2, sub_batches=4)(batch, training=True, seed=SEED)
    for bad in (dict(draws="per-row"), dict(devices=0), dict(sub_batches=1.5)):
        with pytest.raises(ValueError):
            CutMix(**bad)
