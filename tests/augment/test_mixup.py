"""MixUp: lambda ~ Beta(alpha, alpha) (KS), the exact convex combination, range, labels; draws per device
batch (default) or per example."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfrobust.augment.common import sample_beta
from tfrobust.augment.mixup import MixUp, mixup_block_draws, mixup_draws

SEED = tf.constant([2, 71], tf.int64)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 1.4])
def test_lambda_is_beta_ks(alpha):
    draws = mixup_draws(SEED, 5000, alpha)
    lam = draws.lam.numpy()
    assert np.all((lam >= 0) & (lam <= 1)) and np.all(np.isfinite(lam))
    result = stats.kstest(lam, stats.beta(alpha, alpha).cdf)
    assert result.pvalue > 0.01, result


def test_sample_beta_asymmetric_ks():
    x = sample_beta([5000], tf.constant([8, 8], tf.int64), 0.3, 2.0).numpy()
    assert stats.kstest(x, stats.beta(0.3, 2.0).cdf).pvalue > 0.01


def test_layer_lambda_read_from_labels_is_beta_ks():
    # Two classes; an example mixed with a partner of the other class carries lambda as its own class weight.
    alpha, b = 0.4, 4000
    classes = np.arange(b) % 2
    batch = {
        "images": tf.constant(np.full((b, 1, 1, 1), 0.5, np.float32)),
        "labels": tf.constant(np.eye(2, dtype=np.float32)[classes]),
    }
    labels = MixUp(alpha=alpha, draws="example")(batch, training=True, seed=SEED)["labels"].numpy()
    own = labels[np.arange(b), classes]
    mixed = own < 1.0  # partner of the other class (or lambda exactly 1, probability 0)
    assert 0.4 < mixed.mean() < 0.6
    assert stats.kstest(own[mixed], stats.beta(alpha, alpha).cdf).pvalue > 0.01


def test_output_is_the_convex_combination_with_the_drawn_partner():
    rng = np.random.default_rng(3)
    b, k = 24, 6
    images = rng.uniform(size=(b, 6, 5, 3)).astype(np.float32)
    labels = rng.dirichlet(np.ones(k), size=b).astype(np.float32)
    out = MixUp(alpha=0.7, draws="example")(
        {"images": tf.constant(images), "labels": tf.constant(labels)}, training=True, seed=SEED
    )
    draws = mixup_draws(SEED, b, 0.7)
    lam, partner = draws.lam.numpy(), draws.partner.numpy()
    assert sorted(partner.tolist()) == list(range(b))
    expected_images = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[partner]
    expected_labels = lam[:, None] * labels + (1 - lam[:, None]) * labels[partner]
    np.testing.assert_allclose(out["images"].numpy(), expected_images, atol=1e-6)
    np.testing.assert_allclose(out["labels"].numpy(), expected_labels, atol=1e-6)
    np.testing.assert_allclose(out["labels"].numpy().sum(axis=1), 1.0, atol=1e-6)
    assert len(np.unique(lam)) == b  # one lambda per example


def test_range_kept_exactly_at_the_extremes():
    # All-ones and all-zeros images mix to values inside [0, 1]; ones with ones stay exactly 1.
    b = 64
    images = np.zeros((b, 4, 4, 1), np.float32)
    images[::2] = 1.0
    out = MixUp(alpha=0.3)(
        {"images": tf.constant(images), "labels": tf.one_hot(np.arange(b) % 3, 3)}, training=True, seed=SEED
    )["images"].numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    draws = mixup_draws(SEED, b, 0.3)
    partner = draws.partner.numpy()
    for i in range(b):
        if images[i, 0, 0, 0] == images[partner[i], 0, 0, 0]:
            np.testing.assert_array_equal(out[i], images[i])


@pytest.mark.parametrize("devices, sub_batches", [(1, 1), (1, 4), (3, 2)])
def test_batch_draws_one_lambda_and_one_shared_permutation_per_device_batch(devices, sub_batches):
    rng = np.random.default_rng(4)
    b, k = 24, 5
    n = b // devices
    images = rng.uniform(size=(b, 4, 4, 2)).astype(np.float32)
    labels = rng.dirichlet(np.ones(k), size=b).astype(np.float32)
    layer = MixUp(alpha=0.7, devices=devices, sub_batches=sub_batches)
    out = layer({"images": tf.constant(images), "labels": tf.constant(labels)}, training=True, seed=SEED)
    draws = mixup_block_draws(SEED, b, 0.7, devices, sub_batches)
    lam, partner = draws.lam.numpy(), draws.partner.numpy()
    for block in range(devices):
        rows = np.arange(block * n, (block + 1) * n)
        assert len(np.unique(lam[rows])) == 1  # one lambda per device batch
        local = partner[rows] - block * n
        # The reference's sub-batches (rows s, s + S, ...) share one permutation idx of 0..n/S-1.
        idx = local[::sub_batches] // sub_batches
        assert sorted(idx.tolist()) == list(range(n // sub_batches))
        np.testing.assert_array_equal(local, (idx[:, None] * sub_batches + np.arange(sub_batches)).reshape(-1))
    if devices > 1:
        assert len(np.unique(lam)) == devices  # independent draws per device batch
    expected_images = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[partner]
    expected_labels = lam[:, None] * labels + (1 - lam[:, None]) * labels[partner]
    np.testing.assert_allclose(out["images"].numpy(), expected_images, atol=1e-6)
    np.testing.assert_allclose(out["labels"].numpy(), expected_labels, atol=1e-6)


def test_batch_lambda_is_beta_ks():
    lam = mixup_block_draws(SEED, 3000, 0.4, devices=3000).lam.numpy()
    assert stats.kstest(lam, stats.beta(0.4, 0.4).cdf).pvalue > 0.01
