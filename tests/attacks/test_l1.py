"""The L1 threat model: the exact projection onto the L1 ball ∩ [0, 1], APGD-L1 (with and without the
reference's `use_largereps` schedule), FAB's L1 projection, Square-L1, and the L1 random start.

Known answers come from independent computations: the projection from a NumPy bisection on the soft
threshold (and the projection's variational inequality), FAB's minimum-L1 step from scipy's linear
programming solver, the worst case of a linear model from the fractional knapsack in `support.py`, and
the reference's step rules (fra31/auto-attack `autopgd_base.py`, `square.py`) restated in NumPy.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from support import (
    check_inside,
    images,
    knapsack_l1_gain,
    linear,
    linear_one_direction,
    worst_l1_margin,
)

from tfrobust.attacks.apgd import APGD, l1_check_interval, largereps_schedule
from tfrobust.attacks.fab import FABTargeted, projection_l1
from tfrobust.attacks.init import UniformInit, l1_normal_start
from tfrobust.attacks.projection import (
    L1Projection,
    l1_box_projection,
    make_projection,
    norm_of,
)
from tfrobust.attacks.square import Square, eta_l1, l1_window_update, margin_of
from tfrobust.errors import UserError

SEED = tf.constant([1, 2], tf.int32)


def np_l1_box_projection(delta, x, eps):
    """Projection of δ onto {‖d‖₁ <= eps, x + d ∈ [0, 1]}, per row, by bisection on the soft threshold α
    in float64: d_i = sign(δ_i)·clip(|δ_i| − α, 0, room_i), with α = 0 if the box-clipped δ is in the ball."""
    delta = np.asarray(delta, np.float64).reshape(len(delta), -1)
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    eps = np.broadcast_to(np.asarray(eps, np.float64), [len(delta)])
    out = np.zeros_like(delta)

    def mass(a, room, alpha):
        return np.minimum(np.maximum(a - alpha, 0.0), room).sum()

    for i in range(len(delta)):
        a = np.abs(delta[i])
        room = np.where(delta[i] >= 0, 1.0 - x[i], x[i])
        alpha = 0.0
        if mass(a, room, 0.0) > eps[i]:
            lo, hi = 0.0, a.max()
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if mass(a, room, mid) > eps[i] else (lo, mid)
            alpha = hi
        out[i] = np.sign(delta[i]) * np.minimum(np.maximum(a - alpha, 0.0), room)
    return out


def _cases(rng, n=12, shape=(4, 4, 3)):
    x = rng.uniform(0.0, 1.0, size=(n, *shape)).astype(np.float32)
    x[0] = 0.0  # at the box's faces: half the directions have no room
    x[1] = 1.0
    x[2, :2] = 0.0
    x[3, :, :2] = 1.0
    delta = (rng.normal(size=(n, *shape)) * rng.uniform(0.02, 2.0, size=(n, 1, 1, 1))).astype(np.float32)
    delta[4] = 0.0
    delta[5] *= 1e-3  # already inside any ball below
    return x, delta


@pytest.mark.parametrize("eps", [0.0, 0.05, 1.0, 5.0, 12.0, 200.0])
def test_projection_equals_numpy_bisection(eps):
    x, delta = _cases(np.random.default_rng(int(eps * 10)))
    ours = l1_box_projection(tf.constant(delta), tf.constant(x), eps).numpy()
    expected = np_l1_box_projection(delta, x, eps).reshape(ours.shape)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-7)
    flat = ours.reshape(len(x), -1).astype(np.float64)
    assert np.all(np.abs(flat).sum(1) <= eps * (1 + 1e-6) + 1e-7)
    assert np.all(x + ours >= -1e-7) and np.all(x + ours <= 1 + 1e-7)
    # eps 200 exceeds every point's room (48 coordinates): the projection is the box clip.
    if eps == 200.0:
        np.testing.assert_allclose(ours, np.clip(x + delta, 0.0, 1.0) - x, atol=1e-7)


@pytest.mark.parametrize("steps, max_steps", [(0, 0), (2, 2), (0, 16), (20, 20), (20, 64)])
def test_projection_is_exact_whether_the_bracket_holds_one_knot_value_or_many(steps, max_steps):
    """Few bisection steps leave many distinct knot values in the bracket (the sorted construction then
    solves those rows), more rounds of halving or many steps one or none (solved on its segment); ties
    (equal |δ_i|, as Square's patterns and APGD-L1's sparse steps make) and box faces included. Every way
    gives the NumPy bisection."""
    rng = np.random.default_rng(7)
    x, delta = _cases(rng, n=10, shape=(3, 8, 8))
    delta[6] = np.sign(delta[6]) * 0.05  # every |δ_i| equal
    delta[7] = np.round(delta[7] * 20) / 20  # a few distinct values, each shared by many coordinates
    x[8] = np.round(x[8] * 4) / 4
    for eps in (0.3, 2.0, 9.0):
        ours = l1_box_projection(
            tf.constant(delta), tf.constant(x), eps, bisection_steps=steps, max_bisection_steps=max_steps
        ).numpy()
        expected = np_l1_box_projection(delta, x, eps).reshape(ours.shape)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-7)
        assert np.all(np.abs(ours.reshape(len(x), -1).astype(np.float64)).sum(1) <= eps * (1 + 1e-6) + 1e-7)


def _tiny_knot_rows():
    """Six CIFAR-sized rows just outside their balls, the root α near 0 among many distinct knots of 1e-12
    (Square-L1's pattern, ring weights 1/(ring+1)⁴, at a tiny mass); three of them hold only those."""
    rng = np.random.default_rng(11)
    x = rng.uniform(0.1, 0.9, size=(6, 3, 32, 32)).astype(np.float32)
    delta = (rng.normal(size=x.shape) * 0.01).astype(np.float32)
    delta[:3] = 0.0
    delta[:3, 1] = 0.01
    delta[:, 0, 0, :16] = np.arange(1, 17, dtype=np.float32) * 1e-12
    eps = (np.abs(delta.astype(np.float64)).reshape(6, -1).sum(1) * (1 - 1e-7)).astype(np.float32)
    return x, delta, eps


def test_a_root_among_tiny_knots_takes_more_halving_not_the_sort(monkeypatch):
    """20 halvings of [0, max|δ_i|] leave several tiny knots inside the bracket: the rows keep halving their
    own bracket and give the NumPy bisection's answer without the sorted construction (TensorFlow ops,
    eagerly, where only the branch taken runs)."""
    from tfrobust.attacks import projection

    monkeypatch.setattr(projection, "L1_COMPILED_MIN_COORDINATES", 10**9)
    x, delta, eps = _tiny_knot_rows()
    sorted_calls = []
    sort = projection._l1_threshold_sorted
    monkeypatch.setattr(projection, "_l1_threshold_sorted", lambda *args: sorted_calls.append(1) or sort(*args))
    only_20 = l1_box_projection(tf.constant(delta), tf.constant(x), eps, max_bisection_steps=20).numpy()
    assert sorted_calls, "the case must hold two knot values in the bracket after 20 halvings"
    sorted_calls.clear()
    ours = l1_box_projection(tf.constant(delta), tf.constant(x), eps).numpy()
    assert not sorted_calls
    expected = np_l1_box_projection(delta, x, eps).reshape(ours.shape)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-7)
    np.testing.assert_allclose(only_20, expected, rtol=0, atol=2e-7)


def test_compiled_projection_is_exact_and_each_row_its_own(monkeypatch):
    """CIFAR-sized rows take the XLA program: the NumPy bisection's answer, the TensorFlow ops' answer, and
    each row's answer the one it gets alone and in a batch of unknown size (padded with zero rows), bit
    for bit."""
    from tfrobust.attacks import projection

    x, delta, eps = _tiny_knot_rows()
    rng = np.random.default_rng(5)
    x2, delta2 = _cases(rng, n=6, shape=(3, 32, 32))  # box faces, zero δ, δ inside the ball
    x, delta = np.concatenate([x, x2]), np.concatenate([delta, delta2])
    eps = np.concatenate([eps, np.full(6, 3.0, np.float32)])
    assert x[0].size >= projection.L1_COMPILED_MIN_COORDINATES
    ours = l1_box_projection(tf.constant(delta), tf.constant(x), eps).numpy()
    expected = np_l1_box_projection(delta, x, eps).reshape(ours.shape)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-7)
    dynamic = tf.function(
        lambda d, v, e: l1_box_projection(d, v, e),
        input_signature=[tf.TensorSpec([None, 3, 32, 32]), tf.TensorSpec([None, 3, 32, 32]), tf.TensorSpec([None])],
    )
    for rows in (slice(0, 12), slice(2, 11), slice(9, 10)):  # 9 rows pad to 10
        np.testing.assert_array_equal(dynamic(delta[rows], x[rows], eps[rows]).numpy(), ours[rows])
    for i in range(len(x)):
        alone = l1_box_projection(tf.constant(delta[i : i + 1]), tf.constant(x[i : i + 1]), eps[i]).numpy()
        np.testing.assert_array_equal(alone, ours[i : i + 1])
    # Inside an attack compiled whole (`Evaluator(jit_compile=True)`), the program is part of the attack's.
    inside_xla = tf.function(lambda d, v, e: l1_box_projection(d, v, e), jit_compile=True)
    np.testing.assert_allclose(inside_xla(delta, x, eps).numpy(), ours, rtol=0, atol=1e-7)
    monkeypatch.setattr(projection, "L1_COMPILED_MIN_COORDINATES", 10**9)
    ops = l1_box_projection(tf.constant(delta), tf.constant(x), eps).numpy()
    np.testing.assert_allclose(ops, ours, rtol=0, atol=1e-7)


def test_padded_rows():
    from tfrobust.attacks.projection import _padded_rows

    got = [int(_padded_rows(tf.constant(n))) for n in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 86, 128, 129, 250)]
    assert got == [1, 2, 3, 4, 5, 7, 8, 10, 16, 16, 20, 96, 128, 160, 256]


def test_projection_is_the_closest_feasible_point():
    """p = P(y) exactly when ⟨y − p, z − p⟩ <= 0 for every feasible z (the projection onto a closed convex
    set): checked against random points z of the ball ∩ box, some on its surface."""
    rng = np.random.default_rng(3)
    x, delta = _cases(rng, n=8)
    eps = 1.5
    p = l1_box_projection(tf.constant(delta), tf.constant(x), eps).numpy().reshape(8, -1).astype(np.float64)
    y = delta.reshape(8, -1).astype(np.float64)
    xf = x.reshape(8, -1).astype(np.float64)
    for _ in range(50):
        z = rng.laplace(size=y.shape) * rng.uniform(0.1, 3.0, size=(8, 1))
        z = np_l1_box_projection(z, xf, eps * rng.uniform(0.5, 1.0, size=8))
        assert np.all(((y - p) * (z - p)).sum(1) <= 1e-5)


def test_projection_per_example_radius_and_identity_inside():
    rng = np.random.default_rng(4)
    x, delta = _cases(rng, n=6)
    eps = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 8.0], np.float32)
    ours = l1_box_projection(tf.constant(delta), tf.constant(x), tf.constant(eps)).numpy()
    for i in range(6):
        single = l1_box_projection(tf.constant(delta[i : i + 1]), tf.constant(x[i : i + 1]), float(eps[i])).numpy()
        np.testing.assert_array_equal(ours[i : i + 1], single)
    # A point inside the ball and the box comes back unchanged, bit for bit.
    inside = np.clip(x + 0.001 * delta, 0.0, 1.0)
    projected = L1Projection(10.0).project(tf.constant(inside), tf.constant(x)).numpy()
    np.testing.assert_array_equal(projected, inside)
    assert make_projection("l1", 3.0) == L1Projection(3.0)
    np.testing.assert_allclose(norm_of(tf.constant(delta), "l1"), np.abs(delta).reshape(6, -1).sum(1), rtol=1e-6)


def test_projection_matches_the_references_float32_bisection():
    """The reference's `L1_projection` algorithm, restated in PyTorch float32 (sort the 2D knots ascending,
    bisect over their index for the segment where the remaining mass crosses eps, interpolate): tfrobust's
    float64 count-based search gives the same point up to float32 rounding, and lies closer to the
    float64 bisection."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x, delta = _cases(rng, n=16, shape=(3, 8, 8))

    def reference(x, y, eps):
        n, dim = x.shape[0], x[0].numel()
        x, y = x.reshape(n, -1), y.reshape(n, -1)
        box = torch.clamp(torch.minimum(1 - x - y, x + y), max=0.0)  # −(how far the box forces a shrink)
        knots, which = torch.sort(torch.cat([-box, y.abs()], 1), dim=1)
        after = torch.cat([knots[:, 1:], torch.zeros(n, 1)], 1)
        shrinking = torch.cumsum(torch.where(which < dim, 1.0, -1.0), 1)  # coordinates shrinking past a knot
        spare = eps - y.abs().sum(1)
        removed = -box.sum(1)[:, None] + torch.cumsum((after - knots) * shrinking, 1)  # mass removed at the next knot
        needs = -box.sum(1) + spare < 0
        rows = torch.arange(n)
        lb = torch.zeros(n, dtype=torch.long)
        ub = torch.full((n,), 2 * dim - 1, dtype=torch.long)
        for _ in range(math.ceil(math.log2(2 * dim))):
            mid = (lb + ub) // 2
            more = removed[rows, mid] + spare < 0
            lb = torch.where(more, mid, lb)
            ub = torch.where(more, ub, mid)
        alpha = (-removed[rows, lb] - spare) / shrinking[rows, lb + 1] + after[rows, lb]
        shrink = torch.minimum(torch.maximum(-box, alpha[:, None]), y.abs())
        shrink = torch.where(needs[:, None], shrink, -box)
        return (y.sign() * (y.abs() - shrink)).reshape(-1, 3, 8, 8)

    for eps in (1.0, 12.0):
        ref = reference(torch.tensor(x), torch.tensor(delta), eps).numpy()
        ours = l1_box_projection(tf.constant(delta), tf.constant(x), eps).numpy()
        np.testing.assert_allclose(ours, ref, rtol=0, atol=3e-5)
        expected = np_l1_box_projection(delta, x, eps).reshape(ours.shape)
        assert np.abs(ours - expected).max() <= np.abs(ref - expected).max() + 1e-7


# ---------------------------------------------------------------- APGD-L1


def test_largereps_schedule_and_check_interval():
    assert largereps_schedule(100) == ((3.0, 30), (2.0, 30), (1.0, 40))
    assert largereps_schedule(10) == ((3.0, 3), (2.0, 3), (1.0, 4))
    assert largereps_schedule(3) == ((3.0, 1), (2.0, 1), (1.0, 1))
    assert largereps_schedule(7) == ((3.0, 3), (2.0, 3), (1.0, 1))  # ceil(2.1) = 3
    assert [l1_check_interval(n) for n in (100, 40, 30, 50, 24, 25, 1)] == [4, 1, 1, 2, 1, 1, 1]


def test_l1_configuration_errors():
    APGD("l1", 12.0, use_largereps=True)
    with pytest.raises(UserError, match="L1 schedule"):
        APGD("linf", 0.1, use_largereps=True)
    for n_iter in (1, 2, 4):  # stages of (1, 1, -1), (1, 1, 0), (2, 2, 0) iterations
        with pytest.raises(UserError, match="no iteration at eps"):
            APGD("l1", 12.0, n_iter=n_iter, use_largereps=True)
    APGD("l1", 12.0, n_iter=3, use_largereps=True)
    APGD("l1", 12.0, n_iter=5, use_largereps=True)
    with pytest.raises(UserError, match="True or False"):
        APGD("l1", 12.0, use_largereps=1)


def _l1_case(classes, seed, n=48, eps=1.0):
    model_fn, kernel, bias = linear_one_direction(classes, seed=seed)
    x = images(n, seed=classes + seed)
    y = np.asarray(model_fn(x)).argmax(-1)
    worst = worst_l1_margin(x, y, kernel, bias, eps)
    return model_fn, kernel, bias, x, y, worst


@pytest.mark.parametrize(
    "loss,classes,largereps",
    [("ce", 2, False), ("ce", 2, True), ("ce", 5, False), ("dlr-targeted", 5, False), ("dlr-targeted", 5, True)],
)
def test_apgd_l1_breaks_exactly_the_breakable_points(loss, classes, largereps):
    """APGD-L1 breaks a point of a linear model exactly when the knapsack says the L1 ball ∩ box holds an
    adversarial point (points within 0.02 of the threshold left out).

    The model is `linear_one_direction`: with coefficients of equal magnitude, APGD-L1's sign steps spread
    over its top-k coordinates are steepest ascent. With unequal ones they settle on an even split short of
    the knapsack's greedy allocation, as the reference's rules do (on `linear(2, seed=2)` at eps 0.6, 5 of
    the 42 breakable points of `images(48, seed=2)` stayed robust, one with worst-case margin 0.56): that
    case is tested for soundness below."""
    eps = 1.0
    model_fn, kernel, bias, x, y, worst = _l1_case(classes, seed=0, eps=eps)
    keep = np.abs(worst) > 0.02
    assert (worst[keep] > 0).sum() >= 10 and (worst[keep] < 0).sum() >= 10  # the case is not trivial
    attack = APGD("l1", eps, loss, n_iter=100, n_target_classes=4, use_largereps=largereps)
    adv = tf.function(attack)(model_fn, tf.constant(x), tf.constant(y), SEED).numpy()
    check_inside(adv, x, "l1", eps)
    broken = np.asarray(model_fn(adv)).argmax(-1) != y
    np.testing.assert_array_equal(broken[keep], worst[keep] > 0)
    np.testing.assert_array_equal(adv[~broken], x[~broken])
    if largereps:
        # Points breakable at 3·eps but not at eps exist and stay unbroken: only the last stage counts.
        wider = worst_l1_margin(x, y, kernel, bias, 3 * eps)
        assert np.any(keep & (worst < 0) & (wider > 0))


def test_apgd_l1_never_beats_the_knapsack_on_a_general_linear_model():
    """On a linear model with unequal coefficients every break is a true one (the knapsack bounds what any
    point of the ball ∩ box can reach), and the points far beyond the threshold all fall."""
    classes, eps = 2, 0.6
    model_fn, kernel, bias = linear(classes, seed=2)
    x = images(48, seed=2)
    y = np.asarray(model_fn(x)).argmax(-1)
    worst = worst_l1_margin(x, y, kernel, bias, eps)
    adv = tf.function(APGD("l1", eps, "ce", n_iter=100))(model_fn, tf.constant(x), tf.constant(y), SEED).numpy()
    check_inside(adv, x, "l1", eps)
    z = np.asarray(model_fn(adv), np.float64)
    reached = z[np.arange(48), 1 - y] - z[np.arange(48), y]
    assert np.all(reached <= worst + 1e-4)
    broken = reached > 0
    assert not broken[worst < 0].any()
    assert broken[worst > 0.6].all()


def _np_l1_stage(model_fn, x, y, start, eps, n_iter, from_start):
    """The reference's `attack_single_run`, L1 branch, restated in NumPy float32 for CE (gradients from
    TensorFlow, the projection from `l1_box_projection`): x_best after n_iter iterations."""
    f = np.float32
    b, dim = len(x), x[0].size

    def evaluate(points):
        t = tf.constant(points)
        with tf.GradientTape() as tape:
            tape.watch(t)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model_fn(t))
            total = tf.reduce_sum(losses)
        return losses.numpy(), tape.gradient(total, t).numpy()

    def onto_ball(point):
        du = point - x
        return np.clip(x + du + (l1_box_projection(tf.constant(du), tf.constant(x), eps).numpy() - du), 0, 1)

    def l0(t):
        return (t.reshape(b, -1) != 0).sum(1).astype(f)

    x_adv = np.clip(start, 0, 1).astype(f)
    loss, grad = evaluate(x_adv)
    x_best, grad_best, loss_best = x_adv.copy(), grad.copy(), loss.copy()
    topk = l0(x_adv - x) / dim / f(1.5) if from_start else np.full(b, 0.2, f)
    sp_old = l0(x_adv - x) if from_start else np.full(b, dim, f)
    step = np.full(b, eps, f)
    k = max(int(0.04 * n_iter), 1)
    for i in range(n_iter):
        g = grad.reshape(b, -1)
        position = np.clip((f(1) - topk) * f(dim), 0, dim - 1).astype(np.int64)
        threshold = np.sort(np.abs(g), axis=1)[np.arange(b), position]
        sparse = (np.sign(g) * (np.abs(g) >= threshold[:, None])).reshape(x.shape).astype(f)
        count = np.abs(sparse).reshape(b, -1).sum(1)
        x_adv = onto_ball(x_adv + step[:, None, None, None] * sparse / (count + f(1e-10))[:, None, None, None])
        loss, grad = evaluate(x_adv)
        better = loss > loss_best
        x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss[better]
        if (i + 1) % k == 0:
            sp = l0(x_best - x)
            with np.errstate(divide="ignore", invalid="ignore"):
                sparser = sp / sp_old < f(0.95)
            topk = sp / dim / f(1.5)
            step = np.clip(np.where(sparser, f(eps), step / f(1.5)), f(eps / 10), f(eps))
            sp_old = sp
            x_adv[sparser], grad[sparser] = x_best[sparser], grad_best[sparser]
    return x_best


@pytest.mark.parametrize("n_iter,from_start", [(25, True), (50, False)])
def test_l1_stage_follows_the_references_step_rules(n_iter, from_start):
    """Same start, same model: tfrobust's stage and the NumPy restatement agree at every coordinate (bit
    for bit here), with checks after every iteration (N = 25) or every second (N = 50), from a given start
    or with the random start's sparsity defaults. A small tanh network keeps the loss landscape changing,
    so that the step size, the sparsity and the restarts from the best point all show in x_best."""
    rng = np.random.default_rng(6)
    w1 = tf.constant(rng.normal(size=(16, 32)).astype(np.float32) * 1.5)
    w2 = tf.constant(rng.normal(size=(32, 4)).astype(np.float32))

    def model_fn(im):
        return tf.matmul(tf.tanh(tf.matmul(tf.reshape(im, [-1, 16]), w1) - 0.5 * tf.reduce_sum(w1, 0)), w2)

    x = images(16, seed=7)
    y = np.asarray(model_fn(x)).argmax(-1).astype(np.int32)
    eps = 1.2
    t = rng.normal(size=x.shape).astype(np.float32)
    start = x + t + (l1_box_projection(tf.constant(t), tf.constant(x), eps).numpy() - t)
    (ours,) = APGD("l1", eps, "ce", n_iter=n_iter).l1_stage(
        model_fn,
        tf.constant(x),
        tf.constant(y),
        None,
        tf.constant(start),
        eps,
        n_iter,
        from_start=from_start,
        last=False,
    )
    expected = _np_l1_stage(model_fn, x, y, start, eps, n_iter, from_start)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-6)
    assert np.abs(expected - start).max() > 0.5  # the run moved


def test_l1_start_and_uniform_init():
    x = tf.constant(images(64, seed=8))
    # APGD-L1's start x + P(t), t ~ N(0, I): on the sphere of radius eps (‖t‖₁ ≫ eps), inside the box.
    start = l1_normal_start(x, 2.0, SEED).numpy()
    check_inside(start, x.numpy(), "l1", 2.0)
    np.testing.assert_allclose(np.abs(start - x.numpy()).reshape(64, -1).sum(1), 2.0, rtol=1e-5)
    # Uniform in the L1 ball: unclipped (x in the middle, small eps), (‖δ‖₁/eps)^d is U[0, 1] for d = 16.
    mid = tf.fill([4000, 4, 4, 1], 0.5)
    sample = UniformInit("l1", 0.2)(mid, SEED).numpy() - 0.5
    radius = np.abs(sample).reshape(4000, -1).sum(1)
    check_inside(sample + 0.5, mid.numpy(), "l1", 0.2)
    u = (radius / 0.2) ** 16
    assert abs(u.mean() - 0.5) < 0.03 and abs((u < 0.25).mean() - 0.25) < 0.03
    # Directions: every orthant and coordinate alike (mean 0, equal mean magnitude per coordinate).
    assert np.abs(sample.reshape(4000, -1).mean(0)).max() < 0.003
    per_coordinate = np.abs(sample).reshape(4000, -1).mean(0)
    assert per_coordinate.max() / per_coordinate.min() < 1.2


# ---------------------------------------------------------------- FAB-L1


def test_fab_projection_l1_equals_linear_programming():
    linprog = pytest.importorskip("scipy.optimize").linprog
    rng = np.random.default_rng(9)
    n, dim = 24, 16
    t = rng.uniform(size=(n, dim)).astype(np.float32)
    w = rng.normal(size=(n, dim)).astype(np.float32)
    w[0, :8] = 0.0  # coordinates that cannot help never move
    offset = rng.normal(size=n) * 2.0
    offset[-4:] = np.sign(offset[-4:]) * 50.0  # out of reach inside the box: the corner
    b = (np.sum(w * t, 1) + offset).astype(np.float32)
    d = projection_l1(tf.constant(t), tf.constant(w), tf.constant(b)).numpy()
    for i in range(n):
        # min Σ (p + q) s.t. ⟨w, p − q⟩ = b − ⟨w, t⟩, 0 <= p <= 1 − t, 0 <= q <= t.
        bounds = [(0.0, 1.0 - float(v)) for v in t[i]] + [(0.0, float(v)) for v in t[i]]
        res = linprog(
            np.ones(2 * dim),
            A_eq=np.concatenate([w[i], -w[i]])[None].astype(np.float64),
            b_eq=[float(b[i]) - float(w[i].astype(np.float64) @ t[i])],
            bounds=bounds,
            method="highs",
        )
        if i >= n - 4:
            assert res.status == 2  # infeasible
            corner = (w[i] * np.sign(offset[i]) > 0).astype(np.float32)
            np.testing.assert_allclose((t[i] + d[i])[w[i] != 0], corner[w[i] != 0], atol=1e-6)
        else:
            assert res.status == 0
            np.testing.assert_allclose(np.abs(d[i]).sum(), res.fun, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(w[i] @ (t[i] + d[i]), b[i], atol=1e-4)
            assert np.all(t[i] + d[i] >= -1e-6) and np.all(t[i] + d[i] <= 1 + 1e-6)
    assert np.all(d[0, :8] == 0.0)


def test_fab_l1_breaks_exactly_the_breakable_points():
    """FAB-T on a 2-class linear model: the projection onto the (exact) decision hyperplane inside the box
    is the minimum-L1 adversarial step, the knapsack's dual; FAB finds it within eps exactly when the
    worst-case margin at eps is positive."""
    eps = 0.6
    model_fn, kernel, bias = linear(2, seed=10)
    x = images(32, seed=11)
    y = np.asarray(model_fn(x)).argmax(-1)
    worst = worst_l1_margin(x, y, kernel, bias, eps)
    keep = np.abs(worst) > 0.02
    assert (worst[keep] > 0).sum() >= 5 and (worst[keep] < 0).sum() >= 5
    attack = FABTargeted("l1", eps, n_iter=30)
    adv = tf.function(attack)(model_fn, tf.constant(x), tf.constant(y), SEED).numpy()
    check_inside(adv, x, "l1", eps)
    broken = np.asarray(model_fn(adv)).argmax(-1) != y
    np.testing.assert_array_equal(broken[keep], worst[keep] > 0)


# ---------------------------------------------------------------- Square-L1


def test_eta_l1_pattern():
    for s in (3, 5, 7, 9):
        e = eta_l1(s)
        assert e.shape == (s, s)
        # Two halves of unit L1 norm each before the final normalisation: 1/2 each after it.
        assert e[: s // 2].sum() == pytest.approx(0.5) and e[s // 2 :].sum() == pytest.approx(-0.5)
        assert np.all(e[: s // 2] > 0) and np.all(e[s // 2 :] < 0)
    # s = 5, by hand: the upper 2x5 half has rings 1 (centre), 1/2^4 (the 3 columns around it), 1/3^4 (all).
    e = eta_l1(5)
    assert e[1, 2] / e[0, 0] == pytest.approx(81 * (1 + 1 / 16 + 1 / 81))
    assert e[1, 1] / e[0, 0] == pytest.approx(81 * (1 / 16 + 1 / 81))
    assert e[0, 0] == e[1, 0] == e[0, 4] == e[1, 4]
    # The lower 3x5 half: centre at row 3, rings as above with three rows.
    assert e[3, 2] / e[2, 0] == pytest.approx(81 * (1 + 1 / 16 + 1 / 81))


def reference_l1_update(x, x_best, eps, s, vh, vw, vh2, vw2, sign, transpose):
    """The reference's L1 window update (`attack_single_run`, L1 branch) on one CHW example, float32, with
    the draws given; its `L1_projection` replaced by the NumPy bisection above."""
    f = np.float32
    c = x.shape[0]
    delta = (x_best - x).astype(f)
    n1 = np.abs(delta[:, vh : vh + s, vw : vw + s]).sum(axis=(-2, -1), keepdims=True)
    mask = np.zeros_like(x)
    mask[:, vh : vh + s, vw : vw + s] = 1.0
    mask[:, vh2 : vh2 + s, vw2 : vw2 + s] = 1.0
    norms_image = np.abs(delta).sum()
    norms_windows = np.abs(delta * mask).sum(axis=(-2, -1), keepdims=True)
    pattern = eta_l1(s).T if transpose else eta_l1(s)
    new = pattern.astype(f)[None] * sign[:, None, None] + delta[:, vh : vh + s, vw : vw + s] / (f(1e-12) + n1)
    new = (
        new
        / (f(1e-12) + np.abs(new).sum(axis=(-2, -1), keepdims=True))
        * (np.maximum(f(eps) - norms_image, f(0)) / c + norms_windows)
        * c
    )
    delta[:, vh2 : vh2 + s, vw2 : vw2 + s] = 0.0
    delta[:, vh : vh + s, vw : vw + s] = new
    projected = np_l1_box_projection(delta[None], x[None], eps * (1 - 1e-6)).reshape(delta.shape)
    return x + projected


@pytest.mark.parametrize("s", [3, 5])
def test_l1_window_update_equals_reference_arithmetic(s):
    rng = np.random.default_rng(12)
    b, h, w, c, eps = 6, 10, 9, 3, 2.0
    x = rng.uniform(0.0, 1.0, size=(b, h, w, c)).astype(np.float32)
    d = rng.laplace(size=(b, h, w, c)) * np.array([1.0, 0.2, 3.0])
    d = np_l1_box_projection(d, x, eps * rng.uniform(0.3, 1.0, size=b)).reshape(x.shape)
    x_best = (x + d).astype(np.float32)
    vh, vh2 = rng.integers(0, h - s, size=b), rng.integers(0, h - s, size=b)
    vw, vw2 = rng.integers(0, w - s, size=b), rng.integers(0, w - s, size=b)
    signs = rng.choice([-1.0, 1.0], size=(b, c)).astype(np.float32)
    transpose = np.array([False, True] * (b // 2))
    pattern = np.zeros([7, 7], np.float32)
    pattern[:s, :s] = eta_l1(s)
    ours = l1_window_update(
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
        expected = reference_l1_update(
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
    check_inside(ours, x, "l1", eps)


def test_square_l1_margin_never_increases_and_stays_inside():
    model_fn, kernel, bias = linear_one_direction(4, seed=13)
    x = images(10, seed=14)
    y = tf.argmax(model_fn(x), axis=-1, output_type=tf.int32)
    eps = 0.8
    start, start_margin, _ = Square("l1", eps, n_queries=1).single_run(model_fn, tf.constant(x), y, SEED)
    check_inside(start.numpy(), x, "l1", eps)
    adv, margin, queries = tf.function(Square("l1", eps, n_queries=80).single_run)(model_fn, tf.constant(x), y, SEED)
    assert np.all(margin.numpy() <= start_margin.numpy() + 1e-6)
    np.testing.assert_allclose(margin, margin_of(model_fn(adv), y), rtol=1e-5, atol=1e-5)
    check_inside(adv.numpy(), x, "l1", eps)
    assert np.all(queries.numpy() <= 80)
    # Against the exact worst case: no point gets further past the boundary than the ball allows.
    worst = worst_l1_margin(x, y.numpy(), kernel, bias, eps)
    assert np.all(-margin.numpy() <= worst + 1e-4)


def test_knapsack_helper():
    # Room 0.5 per coordinate; the budget goes to the largest |w| first.
    assert knapsack_l1_gain([1.0, -3.0, 2.0], [0.5, 0.5, 0.5], 0.8) == pytest.approx(3 * 0.5 + 2 * 0.3)
    assert knapsack_l1_gain([1.0, -3.0, 2.0], [0.5, 0.0, 1.0], 0.8) == pytest.approx(1 * 0.5)  # no room
    assert knapsack_l1_gain([1.0, 1.0], [0.5, 0.5], 5.0) == pytest.approx(1.0)  # the box binds
