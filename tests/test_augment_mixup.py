"""MixUp: lambda ~ Beta(alpha, alpha) per example (KS), the exact convex combination, range, labels."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfrobust.augment.common import sample_beta
from tfrobust.augment.mixup import MixUp, mixup_draws

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
    labels = MixUp(alpha=alpha)(batch, training=True, seed=SEED)["labels"].numpy()
    own = labels[np.arange(b), classes]
    mixed = own < 1.0  # partner of the other class (or lambda exactly 1, probability 0)
    assert 0.4 < mixed.mean() < 0.6
    assert stats.kstest(own[mixed], stats.beta(alpha, alpha).cdf).pvalue > 0.01


def test_output_is_the_convex_combination_with_the_drawn_partner():
    rng = np.random.default_rng(3)
    b, k = 24, 6
    images = rng.uniform(size=(b, 6, 5, 3)).astype(np.float32)
    labels = rng.dirichlet(np.ones(k), size=b).astype(np.float32)
    out = MixUp(alpha=0.7)({"images": tf.constant(images), "labels": tf.constant(labels)}, training=True, seed=SEED)
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
    out = MixUp(alpha=0.3)({"images": tf.constant(images), "labels": tf.one_hot(np.arange(b) % 3, 3)},
                           training=True, seed=SEED)["images"].numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    draws = mixup_draws(SEED, b, 0.3)
    partner = draws.partner.numpy()
    for i in range(b):
        if images[i, 0, 0, 0] == images[partner[i], 0, 0, 0]:
            np.testing.assert_array_equal(out[i], images[i])
