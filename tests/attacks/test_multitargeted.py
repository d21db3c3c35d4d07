"""Tests for tfrobust.attacks.multitargeted on linear models (analytic targeted worst case)."""

import numpy as np
import pytest
import tensorflow as tf
from support import check_inside, images, linear, worst_linf_margin

from tfrobust.attacks.multitargeted import MultiTargeted, targeted_margin
from tfrobust.errors import UserError

SEED = tf.constant([7, 3], tf.int32)


def test_targeted_margin():
    logits = tf.constant([[1.0, 4.0, 2.0]])
    np.testing.assert_allclose(targeted_margin(logits, tf.constant([[0.0, -1.0, 1.0]])), [-2.0])


def test_finds_the_analytic_targeted_attack_linf():
    classes, eps = 5, 0.08
    model_fn, kernel, bias = linear(classes, seed=21)
    x = images(24, seed=22)
    y = np.asarray(model_fn(x)).argmax(-1)
    worst = worst_linf_margin(x, y, kernel, bias, eps)
    keep = np.abs(worst) > 0.02
    assert (worst[keep] > 0).any() and (worst[keep] < 0).any()
    # Small configuration: 4 restarts cycle through the 4 targets, 30 steps each.
    attack = MultiTargeted("linf", eps, n_restarts=4, n_steps=30)
    adv = tf.function(attack)(model_fn, tf.constant(x), tf.one_hot(y, classes), SEED).numpy()
    check_inside(adv, x, "linf", eps)
    broken = np.asarray(model_fn(adv)).argmax(-1) != y
    np.testing.assert_array_equal(broken[keep], worst[keep] > 0)


def test_l2_analytic_one_target():
    """Interior points, small eps: the worst margin towards t is m_t + eps·‖w_t − w_y‖₂; MT on the top target
    breaks exactly the points whose best single target is breakable (2 classes: one target)."""
    model_fn, kernel, bias = linear(2, seed=23)
    x = images(24, seed=24, low=0.3, high=0.7)
    y = np.asarray(model_fn(x)).argmax(-1)
    eps = 0.05
    z = x.reshape(24, -1) @ kernel + bias
    worst = z[np.arange(24), 1 - y] - z[np.arange(24), y] + eps * np.linalg.norm(kernel[:, 1] - kernel[:, 0])
    keep = np.abs(worst) > 0.02
    assert (worst[keep] > 0).any() and (worst[keep] < 0).any()
    attack = MultiTargeted("l2", eps, n_restarts=1, n_steps=40)
    assert attack.notes(2) and attack.num_targets(2) == 1
    adv = attack(model_fn, tf.constant(x), tf.constant(y), SEED).numpy()
    check_inside(adv, x, "l2", eps)
    broken = np.asarray(model_fn(adv)).argmax(-1) != y
    np.testing.assert_array_equal(broken[keep], worst[keep] > 0)


def test_determinism_and_config():
    model_fn, _, _ = linear(4, seed=25)
    x = tf.constant(images(8, seed=26))
    y = tf.argmax(model_fn(x), axis=-1)
    attack = tf.function(MultiTargeted("linf", 0.1, n_restarts=2, n_steps=5))
    np.testing.assert_array_equal(attack(model_fn, x, y, SEED).numpy(), attack(model_fn, x, y, SEED).numpy())
    assert MultiTargeted("linf", 0.1).num_targets(10) == 9 and MultiTargeted("linf", 0.1).notes(10) == ()
    assert MultiTargeted("linf", 0.1, n_restarts=3, restarts_per_target=True).n_restarts == 3
    with pytest.raises(UserError):
        MultiTargeted("linf", 0.1, n_steps=0)
