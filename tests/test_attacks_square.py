"""Tests for tfrobust.attacks.square (Square attack) on linear models of 4x4x1 and 8x8x1 images."""

import numpy as np
import pytest
import tensorflow as tf

from tfrobust.attacks.square import Square, _side, eta, margin_of, p_schedule
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
    return np.abs(d).max(1) if norm == "linf" else np.sqrt((d ** 2).sum(1))


def test_p_schedule_matches_reference():
    # 10000 queries: halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.
    assert p_schedule(0, 10000) == 0.8 and p_schedule(10, 10000) == 0.8 and p_schedule(11, 10000) == 0.4
    assert p_schedule(50, 10000) == 0.4 and p_schedule(51, 10000) == 0.2
    assert p_schedule(4001, 10000) == pytest.approx(0.8 / 128)
    # 5000 queries: rescaled to the whole schedule (iteration 6 -> 12 -> halved).
    assert p_schedule(5, 5000) == 0.8 and p_schedule(6, 5000) == 0.4
    assert _side(0.8, 32, 32, "linf") == 29 and _side(0.8, 32, 32, "l2") == 29
    assert _side(0.4, 32, 32, "l2") == 21 and _side(0.001, 32, 32, "l2") == 3 and _side(0.001, 32, 32, "linf") == 1
    assert _side(0.8, 4, 4, "l2") == 3  # tiny images: the window stays inside, odd


def test_eta_pattern():
    for s in (1, 3, 5, 6):
        e = eta(s)
        assert e.shape == (s, s)
        assert np.sqrt((e ** 2).sum()) == pytest.approx(1.0)
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


def test_breaks_a_weak_linear_model_and_keeps_clean_images_otherwise():
    model_fn = linear(3, seed=6)
    x = images(12, seed=7)
    y = tf.argmax(model_fn(x), axis=-1, output_type=tf.int32)
    adv = tf.function(Square("linf", 0.5, n_queries=200))(model_fn, tf.constant(x), y, SEED).numpy()
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
