"""Tests for tfrobust.attacks.fab (FAB-T): the box-constrained projections and the minimum norm found on
linear models, where the distance to the decision boundary is analytic."""

import numpy as np
import tensorflow as tf
from support import check_inside, exact_linf_distance, images, linear, worst_linf_margin

from tfrobust.attacks.fab import FABTargeted, projection_l2, projection_linf

SEED = tf.constant([9, 9], tf.int32)


def min_linf_step(t, w, b):
    """Smallest λ such that some t + d, |d| <= λ, t + d in [0, 1], has <w, t + d> = b (bisection)."""

    def reach(lam):
        low, high = np.maximum(t - lam, 0.0), np.minimum(t + lam, 1.0)
        lo = np.sum(np.where(w > 0, w * low, w * high))
        hi = np.sum(np.where(w > 0, w * high, w * low))
        return lo <= b <= hi

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reach(mid) else (mid, hi)
    return hi


def test_linf_projection_is_the_minimum_norm_point_on_the_hyperplane_in_the_box():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, size=(20, 16))
    w = rng.normal(size=(20, 16))
    target = rng.uniform(0.2, 0.8, size=(20, 16))  # a point of the box: the hyperplane meets the box
    b = np.sum(w * target, axis=1)
    d = projection_linf(tf.constant(t, tf.float32), tf.constant(w, tf.float32), tf.constant(b, tf.float32)).numpy()
    z = t + d
    assert z.min() >= -1e-5 and z.max() <= 1 + 1e-5
    np.testing.assert_allclose(np.sum(w * z, axis=1), b, atol=2e-4)
    expected = np.array([min_linf_step(t[i], w[i], b[i]) for i in range(20)])
    np.testing.assert_allclose(np.abs(d).max(axis=1), expected, rtol=1e-3, atol=1e-5)


def test_l2_projection_inside_the_box_is_the_orthogonal_projection():
    rng = np.random.default_rng(1)
    t = rng.uniform(0.4, 0.6, size=(20, 16))
    w = rng.normal(size=(20, 16))
    b = np.sum(w * t, axis=1) + rng.uniform(-0.05, 0.05, size=20)  # a nearby hyperplane
    d = projection_l2(tf.constant(t, tf.float32), tf.constant(w, tf.float32), tf.constant(b, tf.float32)).numpy()
    expected = ((b - np.sum(w * t, axis=1)) / np.sum(w * w, axis=1))[:, None] * w
    np.testing.assert_allclose(d, expected, atol=1e-5)
    # Near the box boundary the step stays in the box and still reaches the hyperplane.
    t2 = rng.uniform(0.0, 1.0, size=(20, 16))
    target = rng.uniform(0.2, 0.8, size=(20, 16))
    b2 = np.sum(w * target, axis=1)
    d2 = projection_l2(tf.constant(t2, tf.float32), tf.constant(w, tf.float32), tf.constant(b2, tf.float32)).numpy()
    z = t2 + d2
    assert z.min() >= -1e-5 and z.max() <= 1 + 1e-5
    np.testing.assert_allclose(np.sum(w * z, axis=1), b2, atol=2e-4)
    # ... with no larger norm than the point `target` itself, which is also on the hyperplane.
    assert np.all(np.linalg.norm(d2, axis=1) <= np.linalg.norm(target - t2, axis=1) + 1e-5)


def test_fab_t_linf_norm_matches_analytic_distance():
    model_fn, kernel, bias = linear(2, seed=31)
    x = images(12, seed=32)
    y = np.asarray(model_fn(x)).argmax(-1)
    exact = exact_linf_distance(x, y, kernel, bias)
    attack = FABTargeted("linf", 0.3, n_iter=100)
    adv, found = tf.function(attack.single_run)(
        model_fn, tf.constant(x), tf.constant(y, tf.int32), tf.constant(1 - y, tf.int32), SEED
    )
    found = found.numpy()
    assert np.all(found >= exact * (1 - 1e-3) - 1e-6)  # never below the true distance
    np.testing.assert_allclose(found, exact, rtol=0.03)  # and converged to it
    assert np.all(np.asarray(model_fn(adv)).argmax(-1) != y)


def test_fab_t_l2_norm_matches_analytic_distance():
    model_fn, kernel, bias = linear(2, seed=33)
    x = images(12, seed=34, low=0.35, high=0.65)
    y = np.asarray(model_fn(x)).argmax(-1)
    z = x.reshape(12, -1) @ kernel + bias
    exact = np.abs(z[:, 1] - z[:, 0]) / np.linalg.norm(kernel[:, 1] - kernel[:, 0])
    keep = exact < 0.25  # the ball stays inside the box
    assert keep.sum() >= 3
    attack = FABTargeted("l2", 1.0, n_iter=100)
    _, found = tf.function(attack.single_run)(
        model_fn, tf.constant(x), tf.constant(y, tf.int32), tf.constant(1 - y, tf.int32), SEED
    )
    np.testing.assert_allclose(found.numpy()[keep], exact[keep], rtol=0.03)


def test_success_only_within_eps_and_targets():
    classes = 5
    model_fn, kernel, bias = linear(classes, seed=35)
    x = images(16, seed=36)
    y = np.asarray(model_fn(x)).argmax(-1)
    eps = 0.05
    worst = worst_linf_margin(x, y, kernel, bias, eps)
    attack = FABTargeted("linf", eps, n_iter=50, n_target_classes=4)
    adv = tf.function(attack)(model_fn, tf.constant(x), tf.one_hot(y, classes), SEED).numpy()
    check_inside(adv, x, "linf", eps)
    broken = np.asarray(model_fn(adv)).argmax(-1) != y
    assert not np.any(broken & (worst < 0))  # sound
    assert np.any(broken)
    np.testing.assert_array_equal(adv[~broken], x[~broken])
    assert attack.num_targets(3) == 2 and "2 target classes" in attack.notes(3)[0]


def test_stop_at_eps_keeps_the_success_flags():
    """With stop_at=eps an example stops at its first success within eps: the set of examples with a
    success within eps is the one a full (minimum-norm) run finds, and every returned success is within
    eps and misclassified."""
    model_fn, kernel, bias = linear(2, seed=37)
    x = images(24, seed=38)
    y = np.asarray(model_fn(x)).argmax(-1)
    exact = exact_linf_distance(x, y, kernel, bias)
    eps = float(np.median(exact))
    attack = FABTargeted("linf", eps, n_iter=100)
    run = tf.function(attack.single_run)
    args = (model_fn, tf.constant(x), tf.constant(y, tf.int32), tf.constant(1 - y, tf.int32), SEED)
    _, full = run(*args)
    adv, early = run(*args, stop_at=eps)
    full, early, adv = full.numpy(), early.numpy(), adv.numpy()
    np.testing.assert_array_equal(early <= eps, full <= eps)
    hit = early <= eps
    assert 0 < hit.sum() < len(x)
    assert np.all(early[hit] >= full[hit] - 1e-6)  # stopped early: never closer than the full run
    check_inside(adv[hit], x[hit], "linf", eps)
    assert np.all(np.asarray(model_fn(adv[hit])).argmax(-1) != y[hit])
