"""FAB-T: the targeted Fast Adaptive Boundary attack (minimum-norm), the third attack of AutoAttack; and
FAB, its untargeted version (AutoAttack's `plus` version).

Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack" (ICML),
Algorithm 1 and sec. 3.1-3.3; the targeted version and every constant below follow the reference code
in AutoAttack (github.com/fra31/auto-attack, `autoattack/fab_base.py` `FABAttack.attack_single_run` and
`autoattack/fab_projections.py` `projection_linf` / `projection_l2` / `projection_l1`), configured as
AutoAttack's standard version runs it: 9 target classes (the k-th largest clean logit after the true
class) × 1 restart × 100 iterations, no random start on the first restart.

One iteration at the current point x_k, for the original point x and target t:

- linearise g = f_t − f_y at x_k: the hyperplane π = {z : ⟨∇g(x_k), z − x_k⟩ + g(x_k) = 0};
- d₁, d₂: the minimum-norm steps that move x_k and x respectively onto π inside the box [0, 1]^d (the
  box-constrained projections, exact for Linf, L2 and L1: a sort plus a binary search over the coordinates,
  sec. 3.3 of the paper; for L1 a fractional knapsack, `projection_l1`);
- α = clamp(‖d₁‖ / (‖d₁‖ + ‖d₂‖), 0, α_max = 0.1); x_{k+1} = clip((1 − α)(x_k + η d₁) + α(x + η d₂))
  with overshoot η = 1.05 — the bias towards x keeps the point close to the original;
- if x_{k+1} is misclassified: remember it when its norm ‖x_{k+1} − x‖ is the smallest so far, then step
  back towards x: x_{k+1} ← x + β(x_{k+1} − x), β = 0.9.

Untargeted FAB (`FAB`; the reference's `FABAttack.attack_single_run` with `targeted=False`) linearises,
at every iteration, the boundary of the class k ≠ y closest in the linear approximation, k = argmin_k
|f_k − f_y| / ‖∇f_k − ∇f_y‖_q (q the dual norm: L1 for Linf, L2 for L2), and then steps exactly as above.

A run succeeds for an example only when the smallest misclassified point found has norm ≤ eps; FAB is a
minimum-norm attack, so a success further away does not count. Returned: that point, else the clean image.
In a cascade an example stops as soon as it has a success within eps (`single_run(stop_at=eps)`): the
reference goes on shrinking its norm, which cannot change the outcome.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import tensorflow as tf

from tfrobust.attacks import rng
from tfrobust.attacks.common import (
    ModelFn,
    as_seed,
    check_counts,
    clean_pass,
    correctly_classified,
    flat_norm,
    no_autograph,
    run_targets,
    select_rows,
    target_count,
    target_notes,
    top_targets,
)
from tfrobust.attacks.projection import check_eps, check_norm
from tfrobust.errors import UserError


def _binary_search(num: int, test: Callable[[tf.Tensor], tf.Tensor], n: tf.Tensor) -> tf.Tensor:
    """The reference's bisection: lb = 0, ub = num − 1, ceil(log2 num) halvings; keeps lb where test holds."""
    lb = tf.zeros([n], tf.float32)
    ub = tf.fill([n], float(num - 1))
    for _ in range(max(int(math.ceil(math.log2(num))), 0) if num > 1 else 0):
        mid = tf.floor((lb + ub) / 2.0)
        ok = test(tf.cast(mid, tf.int32))
        lb = tf.where(ok, mid, lb)
        ub = tf.where(ok, ub, mid)
    return tf.cast(lb, tf.int32)


def projection_linf(t: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Minimum-Linf-norm step d with ⟨w, t + d⟩ = b and t + d ∈ [0, 1]^D, per row of t [n, D].

    The reference's `projection_linf`: the solution moves every coordinate by ±λ towards the side w
    points to, clipped at the box; the coordinates saturate in the order of their distance to the box
    boundary p, so a sort of p and a bisection over the cumulative sums find λ. When the hyperplane is
    out of reach inside the box the result is the box corner in w's direction.
    """
    n = tf.shape(t)[0]
    dim = int(t.shape[1])
    sign = tf.where(tf.reduce_sum(w * t, axis=1) - b >= 0, 1.0, -1.0)
    w = w * sign[:, None]
    b = b * sign
    a = tf.cast(w < 0, tf.float32)
    nonzero = tf.cast(tf.not_equal(w, 0.0), tf.float32)
    d = (a - t) * nonzero
    p = a - t * (2.0 * a - 1.0)
    indp = tf.argsort(p, axis=1, stable=True)
    b = b - tf.reduce_sum(w * t, axis=1)
    b0 = tf.reduce_sum(w * d, axis=1)
    indp2 = tf.reverse(indp, axis=[1])
    ws = tf.gather(w, indp2, batch_dims=1)
    bs2 = -ws * tf.gather(d, indp2, batch_dims=1)
    s = tf.cumsum(tf.abs(ws), axis=1)
    sb = tf.cumsum(bs2, axis=1) + b0[:, None]
    p_min = tf.gather(p, indp[:, 0], batch_dims=1)
    b2 = sb[:, -1] - s[:, -1] * p_min
    c_l = b - b2 > 0
    c2 = tf.logical_and(b - b0 > 0, b - b2 <= 0)

    def test(mid):
        indcurr = tf.gather(indp, dim - 1 - mid, batch_dims=1)
        b2m = tf.gather(sb, mid, batch_dims=1) - tf.gather(s, mid, batch_dims=1) * tf.gather(p, indcurr, batch_dims=1)
        return b - b2m > 0

    lb = _binary_search(dim, test, n)
    lmbd_l = tf.maximum(tf.math.divide_no_nan(b - sb[:, -1], -s[:, -1]), 0.0)[:, None]
    d_l = (2.0 * a - 1.0) * lmbd_l
    lmbd_2 = tf.maximum(
        tf.math.divide_no_nan(b - tf.gather(sb, lb, batch_dims=1), -tf.gather(s, lb, batch_dims=1)), 0.0
    )[:, None]
    d_2 = tf.minimum(lmbd_2, d) * a + tf.maximum(-lmbd_2, d) * (1.0 - a)
    d = select_rows(c_l, d_l, select_rows(c2, d_2, d))
    return d * nonzero


def projection_l2(t: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Minimum-L2-norm step d with ⟨w, t + d⟩ = b and t + d ∈ [0, 1]^D, per row of t [n, D].

    The reference's `projection_l2`: the solution is d_i = clip(−α w_i) to the box for one α ≥ 0; the
    coordinates hit the box in the order of r_i (the α at which coordinate i saturates), so a sort of r and
    a bisection over the cumulative sums find α.
    """
    n = tf.shape(t)[0]
    dim = int(t.shape[1])
    big = 1e12
    c = tf.reduce_sum(w * t, axis=1) - b
    flip = c < 0
    w = select_rows(flip, -w, w)
    c = tf.where(flip, -c, c)
    small = tf.abs(w) < 1e-8
    w_safe = tf.where(small, 1.0, w)
    r = tf.clip_by_value(tf.maximum(t / w_safe, (t - 1.0) / w_safe), -big, big)
    r = tf.where(small, big, r)
    r = tf.where(tf.equal(r, -big), big, r)
    indr = tf.argsort(r, axis=1, stable=True)
    rs = tf.gather(r, indr, batch_dims=1)
    rs2 = tf.concat([rs[:, 1:], tf.zeros([n, 1])], axis=1)
    rs = tf.where(tf.equal(rs, big), 0.0, rs)
    rs2 = tf.where(tf.equal(rs2, big), 0.0, rs2)
    w3s = tf.gather(tf.square(w), indr, batch_dims=1)
    w5 = tf.reduce_sum(w3s, axis=1, keepdims=True)
    ws = w5 - tf.cumsum(w3s, axis=1)
    keep = tf.cast(tf.logical_not(small), tf.float32)
    d = -(r * w) * keep
    s = tf.concat([-w5 * rs[:, :1], tf.cumsum((-rs2 + rs) * ws, axis=1) - w5 * rs[:, :1]], axis=1)
    c4 = s[:, 0] + c < 0
    c3 = tf.reduce_sum(d * w, axis=1) + c > 0
    c2 = tf.logical_and(tf.logical_not(c4), tf.logical_not(c3))

    lb = _binary_search(dim, lambda mid: tf.gather(s, mid, batch_dims=1) + c > 0, n)
    alpha4 = tf.math.divide_no_nan(c, w5[:, 0])
    d4 = -alpha4[:, None] * w
    ws_lb = tf.gather(ws, lb, batch_dims=1)
    alpha2 = tf.math.divide_no_nan(tf.gather(s, lb, batch_dims=1) + c, ws_lb) + tf.gather(rs, lb, batch_dims=1)
    alpha2 = tf.where(tf.equal(ws_lb, 0.0), 0.0, alpha2)
    c5 = tf.cast(alpha2[:, None] > r, tf.float32)
    d2 = d * c5 - alpha2[:, None] * w * (1.0 - c5)
    d = select_rows(c4, d4, select_rows(c2, d2, d))
    return d * keep


def projection_l1(t: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Minimum-L1-norm step d with ⟨w, t + d⟩ = b and t + d ∈ [0, 1]^D, per row of t [n, D].

    The reference's `projection_l1` (fra31/auto-attack, `autoattack/fab_projections.py`; Croce & Hein 2020,
    FAB, sec. 3.3): a fractional knapsack. With c = ⟨w, t⟩ − b ≥ 0 (w and c negated where c < 0), moving
    coordinate i towards the box face w points away from changes ⟨w, d⟩ at the rate |w_i| per unit of L1
    norm, by at most −min(w_i t_i, −w_i (1 − t_i)); the cheapest solution takes the coordinates in order
    of decreasing |w_i| (a stable sort of 1/|w_i|), moves each to its face while c stays positive, and the
    next one only as far as it takes to reach the hyperplane. When even every coordinate at its face does
    not reach it, d moves every coordinate with w_i ≠ 0 to its face (the box corner); coordinates with
    |w_i| ≤ 1e-8 never move.

    The reference finds the coordinate that stops short by ceil(log2 D) halvings of the D + 1 cumulative
    sums, one halving short of converging when D is a power of 2; counting the positive sums finds it
    exactly, which is the reference's result whenever its bisection converges (D = 3072 for CIFAR).
    """
    c = tf.reduce_sum(w * t, axis=1) - b
    flip = c < 0
    w = select_rows(flip, -w, w)
    c = tf.where(flip, -c, c)
    order = tf.argsort(tf.minimum(1.0 / tf.abs(w), 1e12), axis=1, stable=True)
    corner = (tf.cast(w < 0, tf.float32) - t) * tf.cast(tf.not_equal(w, 0.0), tf.float32)
    reach = tf.gather(tf.minimum(-w * t, w * (1.0 - t)), order, batch_dims=1)
    sums = tf.cumsum(tf.concat([c[:, None], reach], axis=1), axis=1)  # c left after the first j coordinates
    reachable = sums[:, -1] < 0
    # Position (in the order) of the coordinate that stops short: the last j whose sum is still positive.
    # (Clamped to D − 1 for the unreachable rows, whose sums are all positive and which take the corner.)
    stop = tf.clip_by_value(tf.reduce_sum(tf.cast(sums > 0, tf.int32), axis=1) - 1, 0, int(t.shape[1]) - 1)
    stop_index = tf.gather(order, stop[:, None], batch_dims=1)[:, 0]
    partial = -tf.math.divide_no_nan(
        tf.gather(sums, stop[:, None], batch_dims=1)[:, 0], tf.gather(w, stop_index[:, None], batch_dims=1)[:, 0]
    )
    rank = tf.argsort(order, axis=1, stable=True)  # position of each coordinate in the order
    full = tf.cast(rank < stop[:, None], tf.float32)
    is_stop = tf.cast(tf.equal(rank, stop[:, None]), tf.float32)
    d_reachable = corner * full + partial[:, None] * is_stop
    d = select_rows(reachable, d_reachable, corner)
    return d * tf.cast(tf.abs(w) > 1e-8, tf.float32)


PROJECTIONS = {"linf": projection_linf, "l2": projection_l2, "l1": projection_l1}


# ---- Untargeted FAB (AutoAttack's `plus` version: `fab`) ----------------------------------------------------

# The dual norm ‖·‖_q (1/p + 1/q = 1) that measures a gradient in the distance to a linearised boundary,
# |f_k − f_y| / ‖∇f_k − ∇f_y‖_q (the reference's `dist1` in `fab_base.py` `attack_single_run`), per norm.
DUAL_NORMS = {
    "linf": lambda g: tf.reduce_sum(tf.abs(g), axis=-1),
    "l2": lambda g: tf.sqrt(tf.reduce_sum(tf.square(g), axis=-1)),
    "l1": lambda g: tf.reduce_max(tf.abs(g), axis=-1),
}


def closest_boundary(model_fn: ModelFn, x1: tf.Tensor, y: tf.Tensor, norm: str) -> tuple[tf.Tensor, tf.Tensor]:
    """(f_k − f_y [n], ∇(f_k − f_y) [n, D]) at x1 for the class k ≠ y whose linearised decision boundary is
    closest in `norm`: the untargeted FAB step's hyperplane.

    The reference (fra31/auto-attack, `fab_pt.py` `get_diff_logits_grads_batch` and `fab_base.py`
    `attack_single_run`; Croce & Hein 2020, FAB, eq. 4): the Jacobian of every logit, df_k = f_k − f_y and
    dg_k = ∇f_k − ∇f_y, df_y set to 1e10 so that y is never chosen, k = argmin_k |df_k| / (1e-12 +
    ‖dg_k‖_q) with q the dual norm (`DUAL_NORMS`), the first on a tie. The Jacobian is one
    `batch_jacobian` ([n, K, D] floats); the examples do not interact in inference mode.
    """
    n = tf.shape(x1)[0]
    dim = 1
    for size in x1.shape[1:]:
        dim *= int(size)
    with tf.GradientTape(watch_accessed_variables=False) as tape:  # input gradients only
        tape.watch(x1)
        logits = tf.cast(model_fn(x1), tf.float32)
    classes = int(logits.shape[-1])
    jacobian = tf.reshape(
        tape.batch_jacobian(logits, x1, unconnected_gradients=tf.UnconnectedGradients.ZERO), [n, classes, dim]
    )
    df = logits - tf.gather(logits, y, batch_dims=1)[:, None]
    dg = jacobian - tf.gather(jacobian, y, batch_dims=1)[:, None, :]
    df = tf.where(tf.one_hot(y, classes) > 0, 1e10, df)
    distance = tf.abs(df) / (1e-12 + DUAL_NORMS[norm](dg))
    closest = tf.argmin(distance, axis=1, output_type=tf.int32)
    return tf.gather(df, closest, batch_dims=1), tf.gather(dg, closest, batch_dims=1)


def _check_fixed_shape(fixed_shape: bool) -> None:
    if not isinstance(fixed_shape, bool):
        raise UserError(f"FAB fixed_shape must be True or False, got {fixed_shape!r}")


@dataclasses.dataclass(frozen=True)
class FABTargeted:
    """FAB-T (see the module docstring). AutoAttack standard: `FABTargeted(norm, eps)`.

    Call: `attack(model_fn, x, labels, seed) -> x_adv`; per example a misclassified point within eps, or
    the clean image. `n_restarts > 1` adds restarts from a random point at half the eps radius (the
    reference's `use_rand_start` for restarts after the first).

    Example::

        attack = attacks.FABTargeted("linf", 8 / 255)   # 9 target classes x 1 restart x 100 iterations
        x_adv = attack(lambda x: model(x, training=False), images, labels, tf.constant([0, 2]))
    """

    norm: str
    eps: float
    n_iter: int = 100
    n_target_classes: int = 9
    n_restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    # Every tensor at the batch's shape, the examples that leave a run masked instead of dropped, as XLA
    # needs (`common.run_targets`, "Fixed shapes"); the same per-example results.
    fixed_shape: bool = False

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps)
        check_counts("FAB", n_iter=self.n_iter, n_target_classes=self.n_target_classes, n_restarts=self.n_restarts)
        _check_fixed_shape(self.fixed_shape)

    def num_targets(self, num_classes: int) -> int:
        return target_count(self.n_target_classes, num_classes)

    def notes(self, num_classes: int) -> tuple[str, ...]:
        return target_notes("FAB-T", self.num_targets(num_classes), self.n_target_classes, num_classes)

    @no_autograph
    def __call__(self, model_fn: ModelFn, x: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        x, y, logits = clean_pass(model_fn, x, labels, "FAB")
        targets = top_targets(logits, y, self.num_targets(logits.shape[-1]))

        def run(xs, ys, target, restart, run_seed, live=None):
            # The reference's `use_rand_start=(counter > 0)`: the first restart of a target starts at x.
            adv, dist = self.single_run(
                model_fn, xs, ys, target, run_seed, random_start=tf.greater(restart, 0), stop_at=self.eps, live=live
            )
            return adv, dist <= self.eps

        return run_targets(
            run,
            x,
            y,
            correctly_classified(logits, y),
            seed,
            n_restarts=self.n_restarts,
            targets=targets,
            fixed_shape=self.fixed_shape,
        )

    @no_autograph
    def single_run(
        self,
        model_fn: ModelFn,
        x: tf.Tensor,
        y: tf.Tensor,
        target: tf.Tensor | None,
        seed: tf.Tensor,
        random_start: tf.Tensor | bool = False,
        stop_at: float | None = None,
        live: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One FAB-T run towards `target` on every example: (smallest misclassified point found or the
        clean image, its norm or +inf). `target` None: untargeted FAB (`FAB`), each step towards the
        closest linearised decision boundary among all classes (`closest_boundary`).

        `stop_at`: an example leaves the run as soon as it has a misclassified point within this norm (the
        cascade passes eps: further iterations could only shrink a norm that already counts as a
        success, so the run's success flags are the reference's; the returned point is the first one found
        within eps instead of the smallest). None runs every example for all iterations (minimum norm).

        With `fixed_shape`, an example that leaves the run is masked (its row computed and discarded)
        instead of dropped; `live` ([b] bool, fixed shapes only) marks the rows to attack.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        batch = tf.shape(x)[0]
        per_example = [-1] + [1] * (x.shape.rank - 1)
        project = PROJECTIONS[self.norm]
        dim = 1
        for size in x.shape[1:]:
            dim *= int(size)  # static: the projections sort over the D coordinates
        eps = tf.constant(self.eps, tf.float32)

        if self.norm == "linf":
            t = rng.uniform(tf.shape(x), as_seed(seed), -1.0, 1.0)
        else:  # L2 and L1: a Gaussian direction, scaled to its norm (the reference's `use_rand_start`)
            t = rng.normal(tf.shape(x), as_seed(seed))
        x_rand = tf.clip_by_value(x + eps * t / flat_norm(t, self.norm) * 0.5, 0.0, 1.0)
        x1 = tf.where(tf.convert_to_tensor(random_start), x_rand, x)

        def body(i, out_adv, out_best, s):
            x_c, x1, y_s, t_s = s["x"], s["x1"], s["y"], s.get("target")
            n = tf.shape(x_c)[0]
            if t_s is None:
                df, w = closest_boundary(model_fn, x1, y_s, self.norm)
            else:
                with tf.GradientTape(watch_accessed_variables=False) as tape:  # input gradient only
                    tape.watch(x1)
                    logits = tf.cast(model_fn(x1), tf.float32)
                    df = tf.gather(logits, t_s, batch_dims=1) - tf.gather(logits, y_s, batch_dims=1)
                    total = tf.reduce_sum(df)
                dg = tape.gradient(total, x1, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                w = tf.reshape(dg, [n, dim])
            x1_flat = tf.reshape(x1, [n, dim])
            b = -df + tf.reduce_sum(w * x1_flat, axis=1)
            # Both projections in one batched call, as the reference does.
            d3 = project(tf.concat([x1_flat, tf.reshape(x_c, [n, dim])], 0), tf.concat([w, w], 0), tf.concat([b, b], 0))
            d1 = tf.reshape(d3[:n], tf.shape(x_c))
            d2 = tf.reshape(d3[n:], tf.shape(x_c))
            a0 = tf.maximum(flat_norm(d3, self.norm), 1e-8)
            a1 = tf.reshape(a0[:n], per_example)
            a2 = tf.reshape(a0[n:], per_example)
            alpha = tf.clip_by_value(a1 / (a1 + a2), 0.0, self.alpha_max)
            x1 = tf.clip_by_value((x1 + self.eta * d1) * (1.0 - alpha) + (x_c + d2 * self.eta) * alpha, 0.0, 1.0)
            is_adv = tf.not_equal(tf.cast(tf.argmax(model_fn(x1), axis=-1), tf.int32), y_s)
            dist = tf.reshape(flat_norm(x1 - x_c, self.norm), [-1])
            closer = tf.logical_and(is_adv, dist < s["best"])
            best = tf.where(closer, dist, s["best"])
            if self.fixed_shape:  # rows never move; the rows out of the run are not recorded
                hit = tf.logical_and(closer, s["live"])
                out_adv = select_rows(hit, x1, out_adv)
                out_best = tf.where(hit, dist, out_best)
            else:
                where = tf.boolean_mask(s["index"], closer)[:, None]
                out_adv = tf.tensor_scatter_nd_update(out_adv, where, tf.boolean_mask(x1, closer))
                out_best = tf.tensor_scatter_nd_update(out_best, where, tf.boolean_mask(dist, closer))
            x1 = select_rows(is_adv, x_c + (x1 - x_c) * self.beta, x1)
            s = dict(s, x1=x1, best=best)
            if stop_at is not None:
                keep = best > stop_at
                if self.fixed_shape:
                    s = dict(s, live=tf.logical_and(s["live"], keep))
                else:
                    s = {k: tf.boolean_mask(v, keep) for k, v in s.items()}
            return i + 1, out_adv, out_best, s

        def cond(i, out_adv, out_best, s):
            left = tf.reduce_any(s["live"]) if self.fixed_shape else tf.size(s["index"]) > 0
            return tf.logical_and(i < self.n_iter, left)

        active = dict(index=tf.range(batch), x=x, x1=x1, y=y, best=tf.fill([batch], float("inf")))
        if target is not None:
            active["target"] = target
        if self.fixed_shape:
            active["live"] = tf.ones([batch], tf.bool) if live is None else tf.convert_to_tensor(live, tf.bool)
        invariants = {k: tf.TensorShape([None]).concatenate(v.shape[1:]) for k, v in active.items()}
        out_best = tf.fill([batch], float("inf"))
        _, adv, best, _ = tf.while_loop(
            cond,
            body,
            (tf.constant(0, tf.int32), x, out_best, active),
            shape_invariants=(tf.TensorShape([]), x.shape, out_best.shape, invariants),
            maximum_iterations=self.n_iter,
        )
        return adv, best


@dataclasses.dataclass(frozen=True)
class FAB:
    """Untargeted FAB: each step towards the closest linearised decision boundary among all classes
    (`closest_boundary`), otherwise FAB-T's run (`FABTargeted.single_run` with no target).

    AutoAttack's `plus` version runs it as `fab` with 5 restarts × 100 iterations (`set_version("plus")`:
    `fab.n_restarts = 5`, `targeted = False`); its standard configuration of the attack (a `custom` list
    naming `fab`) has 1 restart. Restarts after the first start at a random point of radius eps/2. A run
    succeeds for an example when its smallest misclassified point has norm ≤ eps (the reference's
    `perturb`: `acc_curr = max(acc_curr, res > eps)`).

    Call: `attack(model_fn, x, labels, seed) -> x_adv`; per example a misclassified point within eps, or
    the clean image.

    Example::

        attack = attacks.FAB("l2", 0.5, n_restarts=5)   # AutoAttack plus's untargeted FAB
        x_adv = attack(lambda x: model(x, training=False), images, labels, tf.constant([0, 3]))
    """

    norm: str
    eps: float
    n_iter: int = 100
    n_restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    fixed_shape: bool = False  # as FAB-T's

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps)
        check_counts("FAB", n_iter=self.n_iter, n_restarts=self.n_restarts)
        _check_fixed_shape(self.fixed_shape)

    def notes(self, num_classes: int) -> tuple[str, ...]:
        """Untargeted FAB runs on any model of two or more classes: nothing to say."""
        return ()

    # FAB-T's run, shared: with target None it attacks the closest boundary.
    single_run = FABTargeted.single_run

    @no_autograph
    def __call__(self, model_fn: ModelFn, x: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        x, y, logits = clean_pass(model_fn, x, labels, "FAB")

        def run(xs, ys, target, restart, run_seed, live=None):
            # The reference's `use_rand_start=(counter > 0)`: the first restart starts at x.
            adv, dist = self.single_run(
                model_fn, xs, ys, None, run_seed, random_start=tf.greater(restart, 0), stop_at=self.eps, live=live
            )
            return adv, dist <= self.eps

        return run_targets(
            run,
            x,
            y,
            correctly_classified(logits, y),
            seed,
            n_restarts=self.n_restarts,
            fixed_shape=self.fixed_shape,
        )
