"""Tests for tfrobust.attacks.apgd (APGD-CE/DLR/T) and the shared run loop, on linear models of 4x4x1 images.

For a linear model z = W^T x + b the worst case over {|x' - x|_inf <= eps} ∩ [0, 1] of each logit
difference is analytic (per pixel, the interval end its coefficient points to), so "APGD finds an
adversarial point exactly when one exists" is checkable; points within 0.02 of the decision threshold are
left out so that float rounding cannot decide a case.
"""

import numpy as np
import pytest
import tensorflow as tf
from support import check_inside, images, linear, worst_linf_margin

from tfrobust.attacks.apgd import (
    APGD,
    apgd_ce,
    apgd_t,
    checkpoints,
    dlr_loss,
    targeted_dlr_loss,
)
from tfrobust.attacks.common import top_targets
from tfrobust.errors import UserError

SEED = tf.constant([1, 2], tf.int32)


def test_checkpoint_schedule_n100():
    at, windows = checkpoints(100)
    assert at == (21, 40, 56, 69, 79, 86, 92, 98)
    assert windows == (22, 19, 16, 13, 10, 7, 6, 6)
    assert checkpoints(10)[0] == (1, 2, 3, 4, 5, 6, 7, 8, 9)  # every window at least one iteration
    assert all(i < 20 for i in checkpoints(20)[0])


def test_dlr_values_on_hand_made_logits():
    logits = tf.constant([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    # y = 0 (correct): -(3 - 2) / (3 - 1) = -0.5; y = 1 (wrong): -(1 - 3) / (3 - 1) = 1.
    np.testing.assert_allclose(dlr_loss(logits, tf.constant([0, 1])), [-0.5, 1.0], rtol=1e-6)
    # Targeted, y = 0, t = 3: -(3 - 0) / (3 - (1 + 0) / 2) = -1.2; t = 2: -(3 - 2) / 2.5 = -0.4.
    targeted = targeted_dlr_loss(logits, tf.constant([0, 0]), tf.constant([3, 2]))
    np.testing.assert_allclose(targeted, [-1.2, -0.4], rtol=1e-6)
    # Scale and shift invariance.
    np.testing.assert_allclose(dlr_loss(7.0 * logits + 3.0, tf.constant([0, 1])), [-0.5, 1.0], rtol=1e-5)


def test_targets_are_top_clean_logits():
    logits = tf.constant([[0.0, 5.0, 3.0, 4.0, 1.0]])
    np.testing.assert_array_equal(top_targets(logits, tf.constant([1]), 4), [[3, 2, 4, 0]])
    np.testing.assert_array_equal(top_targets(logits, tf.constant([1]), 2), [[3, 2]])


def test_fewer_classes_fewer_targets_with_note():
    attack = apgd_t("linf", 0.1)
    assert attack.num_targets(10) == 9 and attack.notes(10) == ()
    assert attack.num_targets(5) == 4 and "4 target classes" in attack.notes(5)[0]
    assert attack.num_targets(4) == 3
    assert attack.num_targets(3) == 0 and "skipped" in attack.notes(3)[0]
    assert APGD("linf", 0.1, "dlr").num_targets(2) == 0 and "skipped" in APGD("linf", 0.1, "dlr").notes(2)[0]
    assert APGD("linf", 0.1, "dlr").notes(3) == ()
    with pytest.raises(UserError):
        APGD("linf", 0.1, "hinge")
    with pytest.raises(UserError):
        APGD("l0", 0.1)


def _labels_and_keep(model_fn, x, kernel, bias, eps):
    y = np.asarray(model_fn(x)).argmax(-1)
    worst = worst_linf_margin(x, y, kernel, bias, eps)
    keep = np.abs(worst) > 0.02
    return y, worst, keep


@pytest.mark.parametrize(
    "attack,classes", [(apgd_ce("linf", 0.08), 2), (apgd_t("linf", 0.08), 5), (APGD("linf", 0.08, "dlr"), 5)]
)
def test_linf_breaks_exactly_the_breakable_points(attack, classes):
    model_fn, kernel, bias = linear(classes, seed=classes)
    x = images(24, seed=classes)
    y, worst, keep = _labels_and_keep(model_fn, x, kernel, bias, attack.eps)
    assert (worst[keep] > 0).any() and (worst[keep] < 0).any()  # the case is not trivial
    adv = tf.function(attack)(model_fn, tf.constant(x), tf.one_hot(y, classes), SEED).numpy()
    check_inside(adv, x, "linf", attack.eps)
    broken = np.asarray(model_fn(adv)).argmax(-1) != y
    if attack.loss == "dlr":
        # Untargeted DLR maximises a max over classes, not concave even for a linear model: from some
        # random starts a run settles on a class it cannot reach. Every claim holds; the point whose
        # worst case is barely inside the ball (margin 0.047) may stay robust.
        assert not broken[keep & (worst <= 0)].any()
        np.testing.assert_array_equal(broken[keep & (worst > 0.05)], True)
    else:
        np.testing.assert_array_equal(broken[keep], worst[keep] > 0)
    # Unbroken points come back as their clean image.
    np.testing.assert_array_equal(adv[~broken], x[~broken])


def test_l2_two_classes_analytic():
    """Points in the middle of the box and a small eps: the ball lies inside [0, 1], so the worst margin is
    m + eps·‖w_other − w_y‖₂."""
    model_fn, kernel, bias = linear(2, seed=3)
    x = images(24, seed=4, low=0.3, high=0.7)
    y = np.asarray(model_fn(x)).argmax(-1)
    eps = 0.05
    z = x.reshape(24, -1) @ kernel + bias
    other = 1 - y
    w_norm = np.linalg.norm(kernel[:, 1] - kernel[:, 0])
    worst = z[np.arange(24), other] - z[np.arange(24), y] + eps * w_norm
    keep = np.abs(worst) > 0.02
    assert (worst[keep] > 0).any() and (worst[keep] < 0).any()
    attack = apgd_ce("l2", eps)
    adv = tf.function(attack)(model_fn, tf.constant(x), tf.constant(y), SEED).numpy()
    check_inside(adv, x, "l2", eps)
    broken = np.asarray(model_fn(adv)).argmax(-1) != y
    np.testing.assert_array_equal(broken[keep], worst[keep] > 0)


def test_single_run_breaks_barely_breakable_points():
    """APGD-CE on 2 classes climbs z_other − z_y to the analytic corner: a point whose worst-case margin is
    only just positive (0 < worst <= 0.05) still falls, and none whose worst case is negative does."""
    model_fn, kernel, bias = linear(2, seed=5)
    x = images(64, seed=6)
    y = np.asarray(model_fn(x)).argmax(-1)
    eps = 0.05
    worst = worst_linf_margin(x, y, kernel, bias, eps)
    barely = (worst > 0.002) & (worst <= 0.05)
    assert barely.any()
    _, wrong = apgd_ce("linf", eps).single_run(model_fn, tf.constant(x), tf.constant(y, tf.int32), None, SEED)
    wrong = wrong.numpy()
    assert np.all(wrong[barely])
    assert not np.any(wrong[worst < 0])


def test_inside_ball_and_box_for_every_variant():
    model_fn, _, _ = linear(5, seed=7, scale=3.0)
    x = images(10, seed=8)
    y = np.asarray(model_fn(x)).argmax(-1)
    for norm, eps in (("linf", 0.3), ("l2", 1.5)):
        for loss in ("ce", "dlr", "dlr-targeted"):
            attack = APGD(norm, eps, loss, n_iter=6, n_restarts=2, n_target_classes=2)
            adv = attack(model_fn, tf.constant(x), tf.constant(y), SEED).numpy()
            check_inside(adv, x, norm, eps)


def test_determinism_and_seed_dependence():
    model_fn, _, _ = linear(5, seed=9)
    x = tf.constant(images(12, seed=10))
    y = tf.argmax(model_fn(x), axis=-1)
    attack = tf.function(APGD("l2", 0.5, "ce", n_iter=10, n_restarts=2))
    a = attack(model_fn, x, y, SEED).numpy()
    b = attack(model_fn, x, y, SEED).numpy()
    np.testing.assert_array_equal(a, b)
    adv_1, _ = APGD("l2", 3.0, "ce", n_iter=3).single_run(model_fn, x, tf.cast(y, tf.int32), None, SEED)
    adv_2, _ = APGD("l2", 3.0, "ce", n_iter=3).single_run(
        model_fn, x, tf.cast(y, tf.int32), None, tf.constant([5, 5], tf.int32)
    )
    assert not np.array_equal(adv_1.numpy(), adv_2.numpy())


def test_misclassified_points_are_not_attacked_and_restarts_run_on_survivors():
    model_fn, _, _ = linear(3, seed=11)
    x = images(8, seed=12)
    y = np.asarray(model_fn(x)).argmax(-1)
    y[:3] = (y[:3] + 1) % 3  # three points misclassified from the start
    seen = []

    def spy_fn(images):
        tf.numpy_function(lambda a: seen.append(a.shape[0]) or np.int64(0), [images], tf.int64)
        return model_fn(images)

    adv = APGD("linf", 1e-4, "ce", n_iter=2, n_restarts=3)(spy_fn, tf.constant(x), tf.constant(y), SEED).numpy()
    np.testing.assert_array_equal(adv, x)  # tiny eps: nothing broken, clean images back
    # First call: the clean pass on all 8; every later call sees only the 5 correctly classified points.
    assert seen[0] == 8 and set(seen[1:]) == {5}


def test_broken_examples_leave_the_run_without_changing_the_others():
    """An example leaves the run at its first misclassified iterate; the trajectories of the others are
    those they follow when nothing leaves (the model is applied per example). Row 0 is attacked next to
    an easy point (breaks at once) and next to a robust one: same result, bit for bit."""
    model_fn, kernel, bias = linear(3, seed=13)
    x = images(64, seed=14)
    y = np.asarray(model_fn(x)).argmax(-1)
    eps = 0.05
    worst = worst_linf_margin(x, y, kernel, bias, eps)
    easy, robust = int(np.argmax(worst)), int(np.argmin(worst))
    target = int(np.flatnonzero(np.abs(worst) > 0.02)[0])
    attack = apgd_ce("linf", eps, n_iter=30)
    out = {}
    for other in (easy, robust):
        rows = [target, other]
        adv, wrong = attack.single_run(model_fn, tf.constant(x[rows]), tf.constant(y[rows], tf.int32), None, SEED)
        out[other] = (adv.numpy()[0], bool(wrong[0]))
        assert bool(wrong[1]) == (other == easy)
        adv_other = adv.numpy()[1]
        # A broken example returns a misclassified point of the ball; a robust one its clean image.
        if other == easy:
            check_inside(adv_other[None], x[other : other + 1], "linf", eps)
            assert np.asarray(model_fn(adv_other[None])).argmax(-1)[0] != y[other]
        else:
            np.testing.assert_array_equal(adv_other, x[other])
    np.testing.assert_array_equal(out[easy][0], out[robust][0])
    assert out[easy][1] == out[robust][1] == (worst[target] > 0)
