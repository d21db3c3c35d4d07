"""TRADES / PGD-AT / standard losses and the coupled weight decay (tfrobust/training/losses.py)."""

import numpy as np
import pytest
import tensorflow as tf

from tfrobust.training import losses


def _logits(seed, shape=(8, 5)):
    return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float32)


def test_trades_kl_is_zero_when_adversarial_equals_clean():
    clean = _logits(0)
    labels = tf.one_hot([0, 1, 2, 3, 4, 0, 1, 2], 5)
    loss, parts = losses.trades_loss(clean, clean, labels, beta=6.0)
    assert float(parts["kl"]) == pytest.approx(0.0, abs=1e-7)
    assert float(loss) == pytest.approx(float(parts["ce"]), abs=1e-6)


def test_trades_matches_numpy_formula_and_beta_scales_kl():
    clean, adv = _logits(1), _logits(2)
    labels = tf.one_hot([0, 1, 2, 3, 4, 0, 1, 2], 5)
    p = tf.nn.softmax(clean).numpy()
    q = tf.nn.softmax(adv).numpy()
    ce = -np.mean(np.sum(labels.numpy() * np.log(p), axis=1))
    kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    loss, parts = losses.trades_loss(clean, adv, labels, beta=6.0)
    np.testing.assert_allclose(float(parts["ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(parts["kl"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(loss), ce + 6.0 * kl, rtol=1e-5)


def test_trades_gradient_flows_through_both_logit_sets():
    clean, adv = tf.Variable(_logits(3)), tf.Variable(_logits(4))
    labels = tf.one_hot([0] * 8, 5)
    with tf.GradientTape() as tape:
        loss, _ = losses.trades_loss(clean, adv, labels, beta=6.0)
    g_clean, g_adv = tape.gradient(loss, [clean, adv])
    assert np.abs(g_clean.numpy()).sum() > 0 and np.abs(g_adv.numpy()).sum() > 0


def test_soft_labels_are_accepted():
    clean = _logits(5, (2, 3))
    soft = tf.constant([[0.7, 0.3, 0.0], [0.2, 0.2, 0.6]])
    log_p = tf.nn.log_softmax(clean).numpy()
    expected = -np.mean(np.sum(soft.numpy() * log_p, axis=1))
    loss, _ = losses.standard_loss(clean, soft)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    loss, _ = losses.pgd_at_loss(clean, soft)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_losses_are_float32_for_bfloat16_logits():
    clean = tf.cast(_logits(6), tf.bfloat16)
    loss, _ = losses.trades_loss(clean, clean, tf.one_hot([0] * 8, 5), beta=6.0)
    assert loss.dtype == tf.float32


def test_coupled_weight_decay_is_half_wd_times_sum_of_squares():
    a = tf.Variable(tf.fill([3, 3], 2.0))
    b = tf.Variable(tf.constant([1.0, -1.0]))
    value = losses.l2_weight_decay([a, b], 5e-4)
    assert float(value) == pytest.approx(0.5 * 5e-4 * (9 * 4.0 + 2.0))
    assert float(losses.l2_weight_decay([], 5e-4)) == 0.0
