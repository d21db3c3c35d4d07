"""Tests for tfrobust.attacks.square (Square attack) on linear models of 4x4x1 and 8x8x1 images."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfrobust.attacks.square import (
    Square,
    _side,
    eta,
    l2_window_update,
    linf_window_update,
    margin_of,
    p_schedule,
    side_schedule,
)
from tfrobust.errors import UserError

SEED = tf.constant([4, 2], tf.int32)


def linear(classes, side=4, seed=0):
    rng = np.random.default_rng(seed)
    d = side * side
    k = tf.constant(rng.normal(size=(d, classes)).astype(np.float32))
    b = tf.constant((0.1 * rng.normal(size=classes)).astype(np.float32))
    return lambda images: tf.matmul(tf.reshape(images, [-1, d]), k) + b


def images(n, side=4, seed=1, low=0.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=(n, side, side, 1)).astype(np.float32)


def norms(adv, x, norm):
    d = (np.asarray(adv) - x).reshape(len(x), -1).astype(np.float64)
    return np.abs(d).max(1) if norm == "linf" else np.sqrt((d**2).sum(1))


def test_p_schedule_matches_reference():
    # 10000 queries: halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.
    assert p_schedule(0, 10000) == 0.8 and p_schedule(10, 10000) == 0.8 and p_schedule(11, 10000) == 0.4
    assert p_schedule(50, 10000) == 0.4 and p_schedule(51, 10000) == 0.2
    assert p_schedule(4001, 10000) == pytest.approx(0.8 / 128)
    # 5000 queries, AutoAttack's resc_schedule=False: the iteration itself (iteration 6 keeps p_init).
    assert p_schedule(6, 5000) == 0.8 and p_schedule(11, 5000) == 0.4
    # rescale=True (the reference class's default): iteration 6 -> 12 -> halved.
    assert p_schedule(5, 5000, rescale=True) == 0.8 and p_schedule(6, 5000, rescale=True) == 0.4
    assert _side(0.8, 32, 32, 3, "linf") == 29 and _side(0.8, 32, 32, 3, "l2") == 29
    assert _side(0.4, 32, 32, 3, "l2") == 21 and _side(0.001, 32, 32, 3, "l2") == 3
    assert _side(0.001, 32, 32, 3, "linf") == 1
    assert _side(0.8, 4, 4, 1, "l2") == 3  # tiny images: the window stays inside, odd


def reference_p_selection(it, n_queries, p_init=0.8, rescale=False):
    """fra31/auto-attack `autoattack/square.py` `SquareAttack.p_selection`, written out as there."""
    if rescale:
        it = int(it / n_queries * 10000)
    if 10 < it <= 50:
        return p_init / 2
    elif 50 < it <= 200:
        return p_init / 4
    elif 200 < it <= 500:
        return p_init / 8
    elif 500 < it <= 1000:
        return p_init / 16
    elif 1000 < it <= 2000:
        return p_init / 32
    elif 2000 < it <= 4000:
        return p_init / 64
    elif 4000 < it <= 6000:
        return p_init / 128
    elif 6000 < it <= 8000:
        return p_init / 256
    elif 8000 < it:
        return p_init / 512
    return p_init


def reference_side(p, c, h, w, norm):
    """The reference's window side (`attack_single_run`, Linf and L2 branches)."""
    n_features = c * h * w
    if norm == "linf":
        return max(int(round(math.sqrt(p * n_features / c))), 1)
    s = max(int(round(math.sqrt(p * n_features / c))), 3)
    return s + 1 if s % 2 == 0 else s


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("rescale", [False, True])
def test_5000_query_schedule_equals_reference_at_every_iteration(norm, rescale):
    n_queries, c, h, w = 5000, 3, 32, 32
    attack = Square(norm, 8 / 255, n_queries=n_queries, rescale_schedule=rescale)
    n_iter = n_queries - 1  # iterations after the start (see the module docstring)
    ours = side_schedule(n_iter, n_queries, h, w, c, norm, attack.p_init, attack.rescale_schedule)
    reference = []
    for i_iter in range(n_iter):
        p = reference_p_selection(i_iter, n_queries, 0.8, rescale)
        reference.append((p, reference_side(p, c, h, w, norm)))
    assert ours == reference  # exact floats and ints at every iteration
    ps = [p for p, _ in ours]
    if not rescale:  # AutoAttack: halvings after 10, 50, 200, 500, 1000, 2000, 4000 only
        assert ps[10] == 0.8 and ps[11] == 0.4 and ps[-1] == 0.8 / 128 and len(set(ps)) == 8
    else:
        assert ps[-1] == 0.8 / 512 and len(set(ps)) == 10


def test_default_is_autoattacks_unrescaled_schedule():
    assert Square("linf", 0.1).rescale_schedule is False
    with pytest.raises(UserError):
        Square("linf", 0.1, rescale_schedule="yes")


def reference_eta_rectangles(x, y):
    delta = np.zeros([x, y])
    x_c, y_c = x // 2 + 1, y // 2 + 1
    counter2 = [x_c - 1, y_c - 1]
    for counter in range(0, max(x_c, y_c)):
        delta[
            max(counter2[0], 0) : min(counter2[0] + (2 * counter + 1), x),
            max(0, counter2[1]) : min(counter2[1] + (2 * counter + 1), y),
        ] += 1.0 / (counter + 1) ** 2
        counter2[0] -= 1
        counter2[1] -= 1
    return delta / np.sqrt((delta**2).sum())


def reference_eta(s, transpose):
    delta = np.zeros([s, s])
    delta[: s // 2] = reference_eta_rectangles(s // 2, s)
    delta[s // 2 :] = -1.0 * reference_eta_rectangles(s - s // 2, s)
    delta /= np.sqrt((delta**2).sum())
    return delta.T if transpose else delta


def reference_l2_update(x, x_best, eps, s, vh, vw, vh2, vw2, sign, transpose):
    """The reference's L2 window update (`attack_single_run`, L2 branch) on one CHW example, float32,
    with the draws given: window 1 (vh, vw), window 2 (vh2, vw2), `sign` [c] and eta's transposition."""
    f = np.float32
    c = x.shape[0]
    delta_curr = (x_best - x).astype(f)
    norms_window_1 = np.sqrt((delta_curr[:, vh : vh + s, vw : vw + s] ** 2).sum(axis=(-2, -1), keepdims=True))
    mask_1 = np.zeros_like(x)
    mask_1[:, vh : vh + s, vw : vw + s] = 1.0
    mask_2 = np.zeros_like(x)
    mask_2[:, vh2 : vh2 + s, vw2 : vw2 + s] = 1.0
    norms_image = np.sqrt(((x_best - x) ** 2).sum())
    norms_windows = np.sqrt(((delta_curr * np.maximum(mask_1, mask_2)) ** 2).sum())
    new_deltas = np.ones([c, s, s], f) * (reference_eta(s, transpose).astype(f)[None] * sign[:, None, None])
    old_deltas = delta_curr[:, vh : vh + s, vw : vw + s] / (f(1e-12) + norms_window_1)
    new_deltas = new_deltas + old_deltas
    new_deltas = (
        new_deltas
        / (f(1e-12) + np.sqrt((new_deltas**2).sum(axis=(-2, -1), keepdims=True)))
        * np.sqrt(np.maximum(f(eps) ** 2 - norms_image**2, f(0)) / c + norms_windows**2)
    )
    delta_curr[:, vh2 : vh2 + s, vw2 : vw2 + s] = 0.0
    delta_curr[:, vh : vh + s, vw : vw + s] = new_deltas + 0
    normalized = delta_curr / (np.sqrt((delta_curr**2).sum()) + f(1e-12))
    return np.clip(x + normalized * f(eps), 0.0, 1.0)


@pytest.mark.parametrize("s", [3, 5, 7])
def test_l2_window_update_equals_reference_arithmetic(s):
    rng = np.random.default_rng(11)
    b, h, w, c, eps = 6, 12, 10, 3, 0.5
    x = rng.uniform(0.0, 1.0, size=(b, h, w, c)).astype(np.float32)
    # A current best point inside the ball, with a different perturbation in every channel (the per-channel
    # window norms of the reference differ from a norm over all channels).
    d = rng.normal(size=(b, h, w, c)) * np.array([1.0, 0.2, 3.0])
    d = d / np.sqrt((d**2).reshape(b, -1).sum(1))[:, None, None, None] * eps * rng.uniform(0.5, 1.0, (b, 1, 1, 1))
    x_best = np.clip(x + d, 0.0, 1.0).astype(np.float32)
    vh, vh2 = rng.integers(0, h - s, size=b), rng.integers(0, h - s, size=b)
    vw, vw2 = rng.integers(0, w - s, size=b), rng.integers(0, w - s, size=b)
    signs = rng.choice([-1.0, 1.0], size=(b, c)).astype(np.float32)
    transpose = np.array([False, True] * (b // 2))
    pattern = np.zeros([9, 9], np.float32)
    pattern[:s, :s] = eta(s)
    ours = l2_window_update(
        tf.constant(x),
        tf.constant(x_best),
        eps,
        tf.constant(s),
        tuple(tf.constant(v, tf.int32) for v in (vh, vw, vh2, vw2)),
        tf.constant(signs[:, None, None, :]),
        tf.constant(transpose),
        tf.constant(pattern),
    ).numpy()
    for k in range(b):
        expected = reference_l2_update(
            np.transpose(x[k], (2, 0, 1)),
            np.transpose(x_best[k], (2, 0, 1)),
            eps,
            s,
            vh[k],
            vw[k],
            vh2[k],
            vw2[k],
            signs[k],
            transpose[k],
        )
        np.testing.assert_allclose(ours[k], np.transpose(expected, (1, 2, 0)), rtol=0, atol=2e-6)
    # The result stays in the L2 ball.
    assert np.all(np.sqrt(((ours - x).astype(np.float64) ** 2).reshape(b, -1).sum(1)) <= eps * (1 + 1e-5))


def test_linf_window_update_equals_reference_arithmetic():
    rng = np.random.default_rng(12)
    b, h, w, c, eps, s = 4, 8, 8, 3, 0.1, 3
    x = rng.uniform(0.0, 1.0, size=(b, h, w, c)).astype(np.float32)
    x_best = np.clip(x + rng.choice([-eps, eps], size=x.shape), 0.0, 1.0).astype(np.float32)
    vh, vw = rng.integers(0, h - s, size=b), rng.integers(0, w - s, size=b)
    signs = rng.choice([-1.0, 1.0], size=(b, c)).astype(np.float32)
    ours = linf_window_update(
        tf.constant(x),
        tf.constant(x_best),
        eps,
        tf.constant(s),
        tf.constant(vh, tf.int32),
        tf.constant(vw, tf.int32),
        tf.constant(signs[:, None, None, :]),
    ).numpy()
    for k in range(b):
        new_deltas = np.zeros([h, w, c], np.float32)
        new_deltas[vh[k] : vh[k] + s, vw[k] : vw[k] + s] = 2.0 * np.float32(eps) * signs[k]
        x_new = x_best[k] + new_deltas
        x_new = np.minimum(np.maximum(x_new, x[k] - np.float32(eps)), x[k] + np.float32(eps))
        np.testing.assert_array_equal(ours[k], np.clip(x_new, 0.0, 1.0))


def test_eta_pattern():
    for s in (1, 3, 5, 6):
        e = eta(s)
        assert e.shape == (s, s)
        assert np.sqrt((e**2).sum()) == pytest.approx(1.0)
    e = eta(5)
    assert np.all(e[:2] >= 0) and np.all(e[2:] <= 0)


@pytest.mark.parametrize("norm,eps,side", [("linf", 0.1, 4), ("l2", 0.5, 8)])
def test_margin_never_increases_inside_ball_and_queries_respected(norm, eps, side):
    model_fn = linear(4, side=side, seed=2)
    x = images(10, side=side, seed=3)
    y = tf.argmax(model_fn(x), axis=-1, output_type=tf.int32)
    rows = []

    def counting_fn(images):
        # Counts every example evaluated (the count feeds the output, so the graph keeps it).
        count = tf.numpy_function(lambda a: (rows.append(a.shape[0]), np.float32(0))[1], [images], tf.float32)
        return model_fn(images) + count

    attack = Square(norm, eps, n_queries=60)
    start, start_margin, start_queries = Square(norm, eps, n_queries=1).single_run(model_fn, tf.constant(x), y, SEED)
    np.testing.assert_array_equal(start_queries.numpy(), 1)
    adv, margin, queries = tf.function(attack.single_run)(counting_fn, tf.constant(x), y, SEED)
    adv, margin, queries = adv.numpy(), margin.numpy(), queries.numpy()
    # The same seed gives the same start; from there the margin only goes down (or stays).
    assert np.all(margin <= start_margin.numpy() + 1e-6)
    np.testing.assert_allclose(margin, margin_of(model_fn(adv), y).numpy(), rtol=1e-5, atol=1e-5)
    assert np.all(norms(adv, x, norm) <= eps * (1 + 1e-6) + 1e-6)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.all(queries <= 60) and np.all(queries >= 1)
    assert sum(rows) == queries.sum()  # every query counted, none beyond the budget
    # A point stops being queried once broken.
    assert np.all(queries[margin > 0] == 60)


def test_linf_start_is_vertical_stripes():
    model_fn = linear(3, seed=4)
    x = images(6, seed=5, low=0.3, high=0.7)  # far from the box: no clipping
    y = tf.argmax(model_fn(x), axis=-1, output_type=tf.int32)
    start, _, _ = Square("linf", 0.1, n_queries=1).single_run(model_fn, tf.constant(x), y, SEED)
    delta = start.numpy() - x
    np.testing.assert_allclose(np.abs(delta), 0.1, rtol=1e-5)
    # Constant along the height (rows) of each column.
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :1], delta.shape), atol=1e-6)


@pytest.mark.parametrize("rescale,n_queries", [(True, 200), (False, 1000)])
def test_breaks_a_weak_linear_model_and_keeps_clean_images_otherwise(rescale, n_queries):
    # Unrescaled, p reaches single pixels of a 4x4 image (p <= 1/16) only after iteration 500.
    model_fn = linear(3, seed=6)
    x = images(12, seed=7)
    y = tf.argmax(model_fn(x), axis=-1, output_type=tf.int32)
    attack = Square("linf", 0.5, n_queries=n_queries, rescale_schedule=rescale)
    adv = tf.function(attack)(model_fn, tf.constant(x), y, SEED).numpy()
    broken = np.asarray(model_fn(adv)).argmax(-1) != y.numpy()
    assert broken.mean() >= 0.9
    tiny = Square("linf", 1e-4, n_queries=20)(model_fn, tf.constant(x), y, SEED).numpy()
    np.testing.assert_array_equal(np.asarray(model_fn(tiny)).argmax(-1), y.numpy())


def test_determinism():
    model_fn = linear(4, side=8, seed=8)
    x = tf.constant(images(6, side=8, seed=9))
    y = tf.argmax(model_fn(x), axis=-1)
    attack = tf.function(Square("l2", 0.3, n_queries=30))
    np.testing.assert_array_equal(attack(model_fn, x, y, SEED).numpy(), attack(model_fn, x, y, SEED).numpy())


def test_config_errors():
    with pytest.raises(UserError):
        Square("linf", 0.1, n_queries=0)
    with pytest.raises(UserError):
        Square("l0", 0.1)
