"""Tests for tfrobust.attacks: projections, inits, optimizers, losses and PGD (tiny models, 4x4 images)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust import attacks as A
from tfrobust.errors import UserError

TOL = 1e-6  # float32 rounding of x ± eps
SEED = tf.constant([3, 7], tf.int32)


def _images(batch=6, seed=0, low=0.0, high=1.0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(low, high, size=(batch, 4, 4, 1)).astype(np.float32))


def _inside(x_adv, x, norm, eps):
    x_adv, x = np.asarray(x_adv), np.asarray(x)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.all(A.norm_of(x_adv - x, norm).numpy() <= eps + TOL)


@pytest.fixture(scope="module")
def dense_model():
    """Keras Dense on flattened 4x4x1 images with fixed weights: 3 classes."""
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    rng = np.random.default_rng(1)
    model.layers[-1].set_weights([rng.normal(size=(16, 3)).astype(np.float32), np.zeros(3, np.float32)])

    def model_fn(images):
        return model(images, training=False)

    return model_fn


def _labels(batch=6, classes=3):
    return tf.one_hot(np.arange(batch) % classes, classes)


# ---------------------------------------------------------------- projections


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_projection_inside_ball_and_box(norm, eps):
    x = _images()
    proj = A.make_projection(norm, eps)
    for scale in (0.01, 1.0, 1e3):  # small, large and huge perturbations
        z = x + scale * tf.random.stateless_normal(x.shape, SEED)
        _inside(proj.project(z, x), x, norm, eps)
    # A feasible point comes back unchanged.
    inside = A.UniformInit(norm, eps / 2)(x, SEED)
    np.testing.assert_allclose(proj.project(inside, x), inside, atol=TOL)


def test_l2_projection_idempotent():
    x = _images()
    proj = A.L2Projection(0.5)
    once = proj.project(x + 5.0 * tf.random.stateless_normal(x.shape, SEED), x)
    np.testing.assert_allclose(proj.project(once, x), once, atol=TOL)
    # Zero perturbation and eps = 0 give no NaN.
    np.testing.assert_array_equal(proj.project(x, x), x)
    np.testing.assert_array_equal(A.L2Projection(0.0).project(x + 1.0, x), x)


def test_linf_projection_is_exact_clip():
    x = _images().numpy()
    z = (x + 3.0 * np.random.default_rng(2).normal(size=x.shape)).astype(np.float32)
    eps = np.float32(0.1)
    expected = np.clip(np.clip(z, x - eps, x + eps), 0.0, 1.0)
    np.testing.assert_array_equal(A.LinfProjection(0.1).project(tf.constant(z), tf.constant(x)), expected)


def test_norm_of():
    delta = tf.constant([[3.0, -4.0], [0.0, -0.5]])
    np.testing.assert_allclose(A.norm_of(delta, "linf"), [4.0, 0.5])
    np.testing.assert_allclose(A.norm_of(delta, "l2"), [5.0, 0.5])
    np.testing.assert_allclose(A.norm_of(delta, "l1"), [7.0, 0.5])
    with pytest.raises(UserError):
        A.norm_of(delta, "l0")
    assert set(A.PROJECTIONS) == {"linf", "l2", "l1"}


# ---------------------------------------------------------------- inits


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_uniform_init_inside_ball_and_random(norm, eps):
    x = _images(batch=64, low=0.2, high=0.8)  # away from the box so the clip does not bind
    init = A.UniformInit(norm, eps)
    start = init(x, SEED)
    _inside(start, x, norm, eps)
    norms = A.norm_of(start - x, norm).numpy()
    assert norms.min() > 0.5 * eps  # spread over the ball, not stuck at the centre
    np.testing.assert_array_equal(init(x, SEED), start)  # same seed, same start
    assert not np.allclose(init(x, tf.constant([3, 8])), start)  # other seed, other start
    if norm == "linf":  # uniform per pixel in [-eps, eps]: mean ≈ 0, spread ≈ eps/sqrt(3)
        delta = (start - x).numpy()
        assert abs(delta.mean()) < 0.1 * eps and abs(delta.std() - eps / np.sqrt(3)) < 0.1 * eps


def test_zero_init():
    x = _images()
    np.testing.assert_array_equal(A.ZeroInit()(x, SEED), x)


# ---------------------------------------------------------------- schedules and optimizers


def test_piecewise_constant():
    sched = A.PiecewiseConstant((20, 30), (0.1, 0.01, 0.001))
    got = [float(sched(tf.constant(s))) for s in (0, 19, 20, 29, 30, 39)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    assert float(A.Constant(0.3)(tf.constant(5))) == pytest.approx(0.3)
    with pytest.raises(UserError):
        A.PiecewiseConstant((5,), (0.1,))


def test_sign_gradient():
    x = tf.constant([[0.5, 0.5, 0.5]])
    g = tf.constant([[2.0, -0.1, 0.0]])
    x_new, state = A.SignGradient(0.25).update(x, g, A.SignGradient(0.25).init(x), tf.constant(0))
    np.testing.assert_allclose(x_new, [[0.75, 0.25, 0.5]])
    assert state == ()


def test_normalized_gradient_per_example():
    x = tf.zeros([2, 2])
    g = tf.constant([[3.0, 4.0], [0.0, 0.0]])  # second example: zero gradient stays put
    opt = A.NormalizedGradient(A.PiecewiseConstant((1,), (1.0, 0.5)))
    x0, _ = opt.update(x, g, opt.init(x), tf.constant(0))
    np.testing.assert_allclose(x0, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    x1, _ = opt.update(x, g, opt.init(x), tf.constant(1))
    np.testing.assert_allclose(x1, [[0.3, 0.4], [0.0, 0.0]], rtol=1e-6)


def test_adam_matches_reference_formula():
    # optax scale_by_adam with the reference's attacks.Adam epsilon 1e-9 (adversarial_robustness/jax attacks.py).
    opt = A.Adam(A.PiecewiseConstant((1,), (0.1, 0.01)))
    x = tf.zeros([1, 3])
    grads = [np.array([[1e-3, -2.0, 2e-8]], np.float32), np.array([[-1e-3, 1.0, -1e-8]], np.float32)]
    state = opt.init(x)
    m = v = np.zeros([1, 3])
    x_ref = np.zeros([1, 3])
    x_keras_eps = np.zeros([1, 3])
    for step, g in enumerate(grads):
        x, state = opt.update(x, tf.constant(g), state, tf.constant(step))
        t = step + 1
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        lr = 0.1 if step < 1 else 0.01
        x_ref = x_ref + lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-9)
        x_keras_eps = x_keras_eps + lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        if step == 0:  # the first Adam step is lr·sign(g) where |g| >> eps
            np.testing.assert_allclose(x[:, :2], [[0.1, -0.1]], rtol=1e-4)
    np.testing.assert_allclose(x, x_ref, rtol=1e-5)
    # The gradient of 2e-8 tells the reference's epsilon from Keras's 1e-8.
    assert abs(float(x[0, 2]) - x_keras_eps[0, 2]) > 1e-3
    assert int(state[2]) == 2


# ---------------------------------------------------------------- losses


def test_losses():
    logits = tf.constant([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    probs = tf.nn.softmax(logits)
    np.testing.assert_allclose(A.kl_to_target(logits, probs), [0.0, 0.0], atol=1e-6)
    assert np.all(A.kl_to_target(logits, tf.constant([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])).numpy() > 0)
    onehot = tf.one_hot([0, 0], 3)
    # For one-hot targets the entropy term vanishes: KL = cross-entropy; integer labels work the same.
    np.testing.assert_allclose(A.kl_to_target(logits, onehot), A.cross_entropy(logits, onehot), rtol=1e-6)
    np.testing.assert_allclose(A.cross_entropy(logits, tf.constant([0, 0])), A.cross_entropy(logits, onehot))
    np.testing.assert_allclose(A.cross_entropy(logits, onehot), -tf.nn.log_softmax(logits)[:, 0].numpy(), rtol=1e-6)
    # margin = max_{i≠y} z_i − z_y: negative when correct (example 0), positive when wrong (example 1).
    np.testing.assert_allclose(A.margin(logits, onehot), [0.5 - 2.0, 3.0 - 0.0])
    assert set(A.LOSSES) == {"kl", "cross_entropy", "margin"}


# ---------------------------------------------------------------- PGD


@pytest.mark.parametrize("factory", ["trades", "pgd_at", "pgd40"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_stays_inside_ball_and_box(dense_model, factory, norm, eps):
    x = _images()
    y = _labels()
    attack = A.ATTACKS[factory](norm, eps)
    target = tf.nn.softmax(dense_model(x)) if factory == "trades" else y
    _inside(attack(dense_model, x, target, SEED), x, norm, eps)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_increases_loss(dense_model, norm, eps):
    x = _images(low=0.2, high=0.8)
    y = _labels()
    x_adv = A.pgd_at_attack(norm, eps)(dense_model, x, y, SEED)
    clean, adv = A.cross_entropy(dense_model(x), y).numpy(), A.cross_entropy(dense_model(x_adv), y).numpy()
    assert np.all(adv > clean + 1e-3)
    kl_adv = A.trades_attack(norm, eps)(dense_model, x, tf.nn.softmax(dense_model(x)), SEED)
    assert np.all(A.kl_to_target(dense_model(kl_adv), tf.nn.softmax(dense_model(x))).numpy() > 1e-6)


def test_pgd40_finds_analytic_worst_case_of_linear_model():
    """z = W·x + b with 2 classes: the margin z_o − z_y is linear, so its maximum over the ball is
    margin(x) + eps·‖w_o − w_y‖_dual, reached at x + eps·sign(w_o − w_y) (Linf) or
    x + eps·(w_o − w_y)/‖w_o − w_y‖₂ (L2), when the box does not bind."""
    rng = np.random.default_rng(4)
    w = tf.constant(rng.normal(size=(16, 2)).astype(np.float32))
    b = tf.constant([0.3, -0.2])

    def model_fn(images):
        return tf.matmul(tf.reshape(images, [-1, 16]), w) + b

    x = _images(batch=4, low=0.3, high=0.7)  # 0.5 L2 / 8/255 Linf never reaches the box from here
    y = tf.one_hot([0, 1, 0, 1], 2)
    clean_margin = A.margin(model_fn(x), y).numpy()
    w_diff = (w.numpy()[:, 1] - w.numpy()[:, 0]) * np.array([1, -1, 1, -1])[:, None]  # w_o − w_y per example
    for norm, eps, dual in [("linf", 8 / 255, np.abs(w_diff).sum(1)), ("l2", 0.5, np.linalg.norm(w_diff, axis=1))]:
        x_adv = A.pgd40_attack(norm, eps)(model_fn, x, y, SEED)
        np.testing.assert_allclose(A.margin(model_fn(x_adv), y), clean_margin + eps * dual, rtol=1e-3, atol=1e-4)
        if norm == "linf":
            expected = x.numpy() + eps * np.sign(w_diff).reshape(x.shape)
            np.testing.assert_allclose(x_adv, expected, atol=1e-5)
        else:
            unit = w_diff / np.linalg.norm(w_diff, axis=1, keepdims=True)
            # The angle to the optimum shrinks ×0.8 per eps/4 step: ~1e-2 after 20 of them; the margin
            # is second order in that angle, hence checked tighter above.
            np.testing.assert_allclose(x_adv, x.numpy() + eps * unit.reshape(x.shape), atol=1e-2)
    # Adam on L2 is allowed but settles on the sign(g) direction: it must still be feasible.
    x_adam = A.pgd40_attack("l2", 0.5, optimizer="adam")(model_fn, x, y, SEED)
    _inside(x_adam, x, "l2", 0.5)


def test_pgd_deterministic_eager_and_graph(dense_model):
    x, y = _images(), _labels()
    attack = A.pgd40_attack("linf", 8 / 255)

    @tf.function
    def graph_attack(images, labels, seed):
        return attack(dense_model, images, labels, seed)

    eager = attack(dense_model, x, y, SEED).numpy()
    np.testing.assert_array_equal(attack(dense_model, x, y, SEED), eager)
    np.testing.assert_allclose(graph_attack(x, y, SEED), eager, atol=1e-6)
    np.testing.assert_allclose(graph_attack(x, y, SEED), eager, atol=1e-6)
    # A different seed gives a different start, hence (here) a different point for the training attack.
    train = A.trades_attack("linf", 8 / 255, num_steps=1)
    target = tf.nn.softmax(dense_model(x))
    assert not np.allclose(train(dense_model, x, target, SEED), train(dense_model, x, target, tf.constant([3, 8])))


def test_graph_does_not_grow_with_steps(dense_model):
    x, y = _images(), _labels()

    def num_ops(steps):
        attack = A.pgd_at_attack("linf", 0.1, num_steps=steps)
        fn = tf.function(lambda images, labels, seed: attack(dense_model, images, labels, seed))
        return len(fn.get_concrete_function(x, y, SEED).graph.get_operations())

    assert num_ops(2) == num_ops(20)


def test_keep_best_at_least_as_bad_as_last_iterate():
    rng = np.random.default_rng(5)
    w1 = tf.constant(rng.normal(size=(16, 8)).astype(np.float32))
    w2 = tf.constant(rng.normal(size=(8, 3)).astype(np.float32))

    def wiggly_model(images):  # oscillates fast in x, so big sign steps bounce between good and bad points
        return tf.matmul(tf.sin(20.0 * tf.matmul(tf.reshape(images, [-1, 16]), w1)), w2)

    x, y = _images(batch=16), _labels(batch=16)
    parts = dict(
        projection=A.LinfProjection(0.1),
        init=A.UniformInit("linf", 0.1),
        optimizer=A.SignGradient(0.1),
        loss=A.margin,
        num_steps=7,
    )
    last = A.PGD(**parts)(wiggly_model, x, y, SEED)
    best = A.PGD(**parts, keep_best=True)(wiggly_model, x, y, SEED)
    _inside(best, x, "linf", 0.1)
    loss_last, loss_best = A.margin(wiggly_model(last), y).numpy(), A.margin(wiggly_model(best), y).numpy()
    assert np.all(loss_best >= loss_last - 1e-6)
    assert np.any(loss_best > loss_last + 1e-3)  # the bouncing really happened


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_example_independent_of_rest_of_batch(dense_model, norm, eps):
    """Summed (not averaged) loss: with a deterministic start an example's adversarial point is the same
    alone or in a larger batch."""
    x, y = _images(batch=6), _labels(batch=6)
    base = A.pgd_at_attack(norm, eps)
    attack = A.PGD(base.projection, A.ZeroInit(), base.optimizer, base.loss, base.num_steps)
    alone = attack(dense_model, x[:1], y[:1], SEED)
    together = attack(dense_model, x, y, SEED)
    np.testing.assert_allclose(together[:1], alone, atol=1e-6)


def test_factories_and_validation():
    assert set(A.ATTACKS) == {"trades", "pgd_at", "pgd40"}
    trades = A.trades_attack("linf", 8 / 255)
    assert isinstance(trades.optimizer, A.Adam) and trades.num_steps == 10 and not trades.keep_best
    assert trades.optimizer.learning_rate_schedule == A.PiecewiseConstant((5,), (0.1, 0.01))
    assert trades.loss is A.kl_to_target
    assert A.trades_attack("linf", 8 / 255, optimizer="sign").optimizer == A.SignGradient(2 / 255)
    assert A.trades_attack("l2", 0.5).optimizer == A.NormalizedGradient(0.125)
    assert A.pgd_at_attack("linf", 0.1).loss is A.cross_entropy
    pgd40 = A.pgd40_attack("linf", 8 / 255)
    assert pgd40.keep_best and pgd40.num_steps == 40 and pgd40.loss is A.margin
    assert pgd40.optimizer.learning_rate_schedule == A.PiecewiseConstant((20, 30), (0.1, 0.01, 0.001))
    hash(pgd40)  # frozen and hashable: usable as a static tf.function argument
    with pytest.raises(UserError, match="APGD-L1"):  # L1 has no PGD step rule
        A.trades_attack("l1", 0.1)
    with pytest.raises(UserError, match="APGD-L1"):
        A.pgd40_attack("l1", 12.0)
    with pytest.raises(UserError):
        A.trades_attack("linf", 0.1, optimizer="sgd")
    with pytest.raises(UserError):
        A.PGD(A.LinfProjection(0.1), A.UniformInit("linf", 0.2), A.SignGradient(0.1), A.margin, 3)
    with pytest.raises(UserError):
        A.LinfProjection(-1.0)
