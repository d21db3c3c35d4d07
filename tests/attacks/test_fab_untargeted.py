"""Tests for untargeted FAB (`tfrobust.attacks.fab.FAB`, AutoAttack plus's `fab`; the reference's
`fab_base.py` `attack_single_run` with `targeted=False` and `fab_pt.py` `get_diff_logits_grads_batch`).

On a linear multi-class model the answer is known: the linearised boundaries are the true ones, so the
step's class is the one whose hyperplane {z_k = z_y} is closest in the dual norm, and the minimal
adversarial perturbation is the distance to the nearest such hyperplane (inside the box: found by
bisection on the exact worst case over the Linf ball ∩ box; away from the box faces, for L2, the
point-to-hyperplane distance |z_y − z_k| / ‖w_y − w_k‖₂).
"""

import numpy as np
import tensorflow as tf
from support import check_inside, exact_linf_distance, images, linear, worst_linf_margin

from tfrobust.attacks.fab import FAB, closest_boundary

SEED = tf.constant([5, 6], tf.int32)


def test_the_step_takes_the_closest_linearised_boundary_in_the_dual_norm():
    classes = 6
    model_fn, kernel, bias = linear(classes, seed=51)
    x = images(10, seed=52)
    y = np.asarray(model_fn(x)).argmax(-1)
    z = x.reshape(10, -1) @ kernel + bias
    for norm, dual in (("linf", lambda g: np.abs(g).sum(-1)), ("l2", lambda g: np.sqrt((g**2).sum(-1)))):
        df, w = tf.function(lambda v, norm=norm: closest_boundary(model_fn, v, tf.constant(y, tf.int32), norm))(
            tf.constant(x)
        )
        for i in range(10):
            others = [k for k in range(classes) if k != y[i]]
            distance = [abs(z[i, k] - z[i, y[i]]) / dual(kernel[:, k] - kernel[:, y[i]]) for k in others]
            k = others[int(np.argmin(distance))]
            np.testing.assert_allclose(df.numpy()[i], z[i, k] - z[i, y[i]], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(w.numpy()[i], kernel[:, k] - kernel[:, y[i]], rtol=1e-5, atol=1e-6)


def test_untargeted_fab_finds_the_minimal_linf_perturbation_of_a_linear_model():
    classes = 4
    model_fn, kernel, bias = linear(classes, seed=53)
    x = images(12, seed=54)
    y = np.asarray(model_fn(x)).argmax(-1)
    exact = exact_linf_distance(x, y, kernel, bias)
    attack = FAB("linf", 0.3, n_iter=100)
    adv, found = tf.function(attack.single_run)(model_fn, tf.constant(x), tf.constant(y, tf.int32), None, SEED)
    found = found.numpy()
    assert np.all(found >= exact * (1 - 1e-3) - 1e-6)  # never below the true distance
    np.testing.assert_allclose(found, exact, rtol=0.03)  # and converged to it
    assert np.all(np.asarray(model_fn(adv)).argmax(-1) != y)


def test_untargeted_fab_finds_the_minimal_l2_perturbation_of_a_linear_model():
    classes = 4
    model_fn, kernel, bias = linear(classes, seed=55)
    x = images(16, seed=56, low=0.35, high=0.65)
    y = np.asarray(model_fn(x)).argmax(-1)
    z = x.reshape(16, -1) @ kernel + bias
    exact = np.array(
        [
            min(
                abs(z[i, y[i]] - z[i, k]) / np.linalg.norm(kernel[:, y[i]] - kernel[:, k])
                for k in range(classes)
                if k != y[i]
            )
            for i in range(16)
        ]
    )
    keep = exact < 0.25  # the ball stays inside the box
    assert keep.sum() >= 3
    _, found = tf.function(FAB("l2", 1.0, n_iter=100).single_run)(
        model_fn, tf.constant(x), tf.constant(y, tf.int32), None, SEED
    )
    np.testing.assert_allclose(found.numpy()[keep], exact[keep], rtol=0.03)


def test_fab_breaks_exactly_the_points_within_eps():
    classes = 5
    model_fn, kernel, bias = linear(classes, seed=57)
    x = images(24, seed=58)
    y = np.asarray(model_fn(x)).argmax(-1)
    eps = 0.05
    worst = worst_linf_margin(x, y, kernel, bias, eps)
    keep = np.abs(worst) > 0.02  # away from the threshold, where rounding cannot decide
    adv = tf.function(FAB("linf", eps, n_restarts=2))(model_fn, tf.constant(x), tf.one_hot(y, classes), SEED).numpy()
    check_inside(adv, x, "linf", eps)
    broken = np.asarray(model_fn(adv)).argmax(-1) != y
    assert (worst[keep] > 0).any() and (worst[keep] < 0).any()
    np.testing.assert_array_equal(broken[keep], worst[keep] > 0)
    np.testing.assert_array_equal(adv[~broken], x[~broken])
    assert FAB("linf", eps).notes(2) == ()
