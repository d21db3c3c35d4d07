"""Tests for APGD's expectation over transformation (EOT, `APGD.eot_iter`; the reference's `eot_iter` in
fra31/auto-attack `autopgd_base.py` `attack_single_run`, 20 in AutoAttack's rand version).

The known answers: a model with Gaussian noise added to its input before a nonlinearity, whose smoothed
gradient E[∇ℓ(x + σε)] is a one-dimensional Gaussian integral (computed here by Gauss-Hermite quadrature in
NumPy); a model whose N calls follow a fixed sequence, for the reference's rule (gradient averaged, loss and
prediction of the last call); and a deterministic model, where EOT must change nothing.
"""

import numpy as np
import pytest
import tensorflow as tf
from support import check_inside, images, linear

from tfrobust.attacks.apgd import APGD
from tfrobust.errors import UserError

SEED = tf.constant([3, 4], tf.int32)
SIGMA = 0.3  # input noise of the randomised model
SCALE = 3.0


def _noisy_model(w):
    """logits [0, SCALE·tanh(⟨w, x − 0.5 + σε⟩)], ε ~ N(0, I) drawn afresh at every call."""
    w_t = tf.constant(w.reshape(-1, 1), tf.float32)

    def model_fn(x):
        noisy = x - 0.5 + SIGMA * tf.random.normal(tf.shape(x))
        u = tf.matmul(tf.reshape(noisy, [tf.shape(x)[0], -1]), w_t)
        return tf.concat([tf.zeros_like(u), SCALE * tf.tanh(u)], axis=1)

    return model_fn


def _smoothed_derivative(mu, s):
    """E[ℓ'(u)] and E[ℓ'(u)²] for u ~ N(mu, s²), ℓ(u) = softplus(SCALE·tanh u) (the CE of class 0), by
    Gauss-Hermite quadrature (probabilists', 120 nodes)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    u = mu[:, None] + s * nodes[None, :]
    th = np.tanh(u)
    d = SCALE * (1.0 - th**2) / (1.0 + np.exp(-SCALE * th))  # sigmoid(SCALE tanh u) · SCALE (1 − tanh² u)
    norm = weights.sum()
    return (d * weights).sum(1) / norm, (d**2 * weights).sum(1) / norm


def test_eot_gradient_converges_to_the_smoothed_models_gradient():
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    w = rng.normal(size=16) * 0.5
    x = images(3, seed=5)
    y = tf.zeros([3], tf.int32)
    model_fn = _noisy_model(w)
    mu = (x.reshape(3, -1) - 0.5) @ w
    s = SIGMA * np.linalg.norm(w)
    mean, second = _smoothed_derivative(mu, s)
    std = np.sqrt(second - mean**2)
    n = 2000
    attack = APGD("linf", 0.1, "ce", eot_iter=n)
    _, _, grad = tf.function(lambda z: attack._evaluate(model_fn, z, y, None))(tf.constant(x))
    grad = grad.numpy().reshape(3, -1).astype(np.float64)
    # Every call's gradient is ℓ'(u)·w (the noise is additive), so their mean is (mean of ℓ')·w.
    coefficient = grad @ w / (w @ w)
    np.testing.assert_allclose(grad, coefficient[:, None] * w[None, :], atol=1e-5)
    assert np.all(np.abs(coefficient - mean) <= 5 * std / np.sqrt(n))
    # One call is one draw: far from the smoothed gradient for at least one example.
    single = APGD("linf", 0.1, "ce")
    _, _, one = tf.function(lambda z: single._evaluate(model_fn, z, y, None))(tf.constant(x))
    one = one.numpy().reshape(3, -1) @ w / (w @ w)
    assert np.max(np.abs(one - mean)) > 5 * np.max(np.abs(coefficient - mean))


def _sequence_model(n, w):
    """The k-th call (k = 1..n, then again) returns logits [0, (k − 2.5) + ⟨w, x⟩]: a known sequence."""
    count = tf.Variable(0.0)
    w_t = tf.constant(w.reshape(-1, 1), tf.float32)

    def model_fn(x):
        k = count.assign(tf.math.floormod(count, float(n)) + 1.0)
        d = (k - 2.5) + tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w_t)
        return tf.concat([tf.zeros_like(d), d], axis=1)

    return model_fn


@pytest.mark.parametrize("eot_loss", ["last", "mean"])
def test_gradient_is_the_mean_and_loss_and_prediction_the_reference_rule(eot_loss):
    n = 3
    w = np.linspace(-0.2, 0.2, 16)
    x = images(2, seed=6) * 0.1
    attack = APGD("linf", 0.1, "ce", eot_iter=n, eot_loss=eot_loss)
    model_fn = _sequence_model(n, w)
    fn = tf.function(lambda z: attack._evaluate(model_fn, z, tf.zeros([2], tf.int32), None))
    wrong, losses, grad = (t.numpy() for t in fn(tf.constant(x)))
    d = (np.arange(1, n + 1)[None, :] - 2.5) + (x.reshape(2, -1) @ w)[:, None]  # [example, call]
    ce = np.log1p(np.exp(d))  # CE of class 0 with logits [0, d]
    sigmoid = 1 / (1 + np.exp(-d))
    np.testing.assert_allclose(grad.reshape(2, -1), sigmoid.mean(1)[:, None] * w[None, :], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(losses, ce[:, -1] if eot_loss == "last" else ce.mean(1), rtol=1e-5)
    # The last call (k = 3: d ≈ 0.5 > 0) misclassifies; the first two would not.
    assert np.all(wrong)


def test_eot_on_a_deterministic_model_changes_nothing_bit_for_bit():
    """N calls of a deterministic model: the mean of N equal gradients (N = 2: exact in floating point), the
    last call's loss and prediction are the single call's, so the runs are the plain run bit for bit; by
    default an EOT run keeps iterating on broken examples (the reference's last misclassified iterate),
    which changes the returned point, never the success flags."""
    classes = 5
    model_fn, _, _ = linear(classes, seed=7)
    x = images(24, seed=8)
    y = tf.one_hot(np.asarray(model_fn(x)).argmax(-1), classes)
    x = tf.constant(x)

    def run(attack):
        return tf.function(attack)(model_fn, x, y, SEED).numpy()

    plain = run(APGD("linf", 0.08, "ce", n_iter=30))
    assert APGD("linf", 0.08, "ce").exits_on_success and not APGD("linf", 0.08, "ce", eot_iter=2).exits_on_success
    np.testing.assert_array_equal(run(APGD("linf", 0.08, "ce", n_iter=30, eot_iter=2, exit_on_success=True)), plain)
    np.testing.assert_array_equal(
        run(APGD("linf", 0.08, "ce", n_iter=30, eot_iter=2, eot_loss="mean", exit_on_success=True)), plain
    )
    full = run(APGD("linf", 0.08, "ce", n_iter=30, eot_iter=2))
    np.testing.assert_array_equal(full, run(APGD("linf", 0.08, "ce", n_iter=30, exit_on_success=False)))
    labels = y.numpy().argmax(-1)
    broken = np.asarray(model_fn(plain)).argmax(-1) != labels
    assert 0 < broken.sum() < len(labels)
    np.testing.assert_array_equal(np.asarray(model_fn(full)).argmax(-1) != labels, broken)
    check_inside(full, x, "linf", 0.08)


def test_eot_settings_are_checked():
    for bad in ({"eot_iter": 0}, {"eot_iter": 2.0}, {"eot_loss": "median"}, {"exit_on_success": 1}):
        with pytest.raises(UserError):
            APGD("linf", 0.1, "ce", **bad)
