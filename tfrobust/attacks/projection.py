"""Threat models: projection onto the eps ball around the clean image, intersected with [0, 1].

Projected gradient methods (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks", eq. 2) keep every iterate feasible by projecting it back onto the allowed set
S(x) = {x' : ‖x' − x‖ ≤ eps} ∩ [0, 1]^d after each step. Images are float32 NHWC in [0, 1]; every function
here works on any tensor whose first axis is the batch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar, Protocol

import tensorflow as tf

from tfrobust.threat_model import check_norm, check_radius

# The attacks' argument check of eps (any non-negative radius; `tfrobust.threat_model.check_radius`), under
# the name the attack modules import.
check_eps = check_radius


def _flat(t: tf.Tensor) -> tf.Tensor:
    """[B, ...] -> [B, D]; lets the per-example reductions ignore the image rank."""
    return tf.reshape(t, [tf.shape(t)[0], -1])


def norm_of(delta: tf.Tensor, norm: str) -> tf.Tensor:
    """Per-example norm of a perturbation: `linf` = max_i |δ_i|, `l2` = sqrt(Σ_i δ_i²), `l1` = Σ_i |δ_i|.
    Shape [B].

    Example::

        distances = attacks.norm_of(x_adv - images, "l2")       # [B]
        assert float(tf.reduce_max(distances)) <= 128 / 255 + 1e-5
    """
    flat = _flat(delta)
    norm = check_norm(norm)
    if norm == "linf":
        return tf.reduce_max(tf.abs(flat), axis=1)
    if norm == "l1":
        return tf.reduce_sum(tf.abs(flat), axis=1)
    return tf.norm(flat, ord=2, axis=1)


def clip_to_box(x: tf.Tensor) -> tf.Tensor:
    """Clips to the valid image range [0, 1]."""
    return tf.clip_by_value(x, 0.0, 1.0)


class Projection(Protocol):
    """Maps any point to a point of the threat model's feasible set around the clean image `x`.

    `norm` names the threat model and `eps` its radius; `PGD` checks that its init agrees with them.

    Example::

        class MaskedLinf:                     # a Projection: the Linf ball on the pixels of `mask` only
            norm = "linf"

            def __init__(self, eps: float, mask: tf.Tensor):   # mask: [1, H, W, 1] of 0/1
                self.eps, self.mask = eps, mask

            def project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
                delta = tf.clip_by_value(x_adv - x, -self.eps, self.eps) * self.mask
                return tf.clip_by_value(x + delta, 0.0, 1.0)

        attack = attacks.PGD(MaskedLinf(8 / 255, mask), attacks.UniformInit("linf", 8 / 255),
                             attacks.SignGradient(2 / 255), attacks.cross_entropy, num_steps=10)
    """

    norm: ClassVar[str]
    eps: float

    def project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor: ...


@dataclasses.dataclass(frozen=True)
class LinfProjection:
    """Projection onto {‖x' − x‖∞ ≤ eps} ∩ [0, 1]^d (Madry et al. 2018).

    For the Linf ball the box and the ball are both coordinate-wise intervals, so clipping to one and then
    the other is the exact Euclidean projection onto their intersection. Implemented as clips of `x_adv`
    itself (not `x + clip(x_adv − x)`) so that a coordinate that is already feasible is returned bit-exact.

    Example::

        projection = attacks.LinfProjection(8 / 255)
        x_feasible = projection.project(x_adv, images)   # within 8/255 of images, in [0, 1]
    """

    eps: float
    norm: ClassVar[str] = "linf"

    def __post_init__(self) -> None:
        check_eps(self.eps)

    def project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        eps = tf.cast(self.eps, x.dtype)
        inside_ball = tf.minimum(tf.maximum(x_adv, x - eps), x + eps)
        return clip_to_box(inside_ball)


@dataclasses.dataclass(frozen=True)
class L2Projection:
    """Projection onto the L2 ball of radius eps around x, then clipping to [0, 1].

    δ ← δ · min(1, eps / ‖δ‖₂) per example, then x + δ is clipped to [0, 1]. Because x ∈ [0, 1], clipping
    only shrinks each |δ_i|, so the result stays inside the ball. This is the usual PGD approximation of the
    projection onto ball ∩ box (Madry et al. 2018; Croce & Hein 2020, AutoAttack), not the exact Euclidean
    projection onto the intersection (which needs an iterative solver); it is idempotent up to rounding.

    Example::

        projection = attacks.L2Projection(128 / 255)
        x_feasible = projection.project(x_adv, images)   # L2 distance to images at most 128/255, in [0, 1]
    """

    eps: float
    norm: ClassVar[str] = "l2"

    def __post_init__(self) -> None:
        check_eps(self.eps)

    def project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        eps = tf.cast(self.eps, x.dtype)
        delta = _flat(x_adv - x)
        norms = tf.norm(delta, ord=2, axis=1, keepdims=True)
        # eps / max(‖δ‖, eps) == min(1, eps/‖δ‖) without dividing by zero for δ = 0; divide_no_nan makes
        # eps = 0 give δ = 0 instead of 0/0.
        factor = tf.math.divide_no_nan(eps, tf.maximum(norms, eps))
        delta = tf.reshape(delta * factor, tf.shape(x))
        return clip_to_box(x + delta)


# Bisection steps on the soft threshold α before its exact solve (`l1_box_projection`): they leave a bracket
# 2^-20 of max|δ_i| wide. A row whose bracket still holds two distinct knot values keeps halving its own
# bracket, `L1_BISECTION_ROUND` steps at a time, up to `L1_BISECTION_MAX_STEPS` in all: a Square-L1
# candidate just outside the ball has its root near 0, among its pattern's many distinct knots of 1e-12, and
# needs about 20 more; a row left with two after that takes the sorted construction.
L1_BISECTION_STEPS = 20
L1_BISECTION_ROUND = 8
L1_BISECTION_MAX_STEPS = 64
# Coordinates per example from which `l1_box_projection` runs as one XLA program (CIFAR's 3072 and larger;
# tiny test images stay TensorFlow ops). A per-example threshold, so a row's path never depends on its batch.
L1_COMPILED_MIN_COORDINATES = 1024


def _l1_mass(a: tf.Tensor, room: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """g(α) = Σ_i min(max(a_i − α, 0), room_i), per row: the L1 norm of the soft-thresholded, box-clipped δ."""
    return tf.reduce_sum(tf.clip_by_value(a - alpha, 0.0, room), axis=1, keepdims=True)


def _l1_shrinking(start: tf.Tensor, a: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """−g'(t⁺): the number of coordinates with start_i <= t < a_i, those that shrink as α grows past t."""
    return tf.reduce_sum(tf.cast((start <= t) & (a > t), a.dtype), axis=1, keepdims=True)


def _l1_threshold_sorted(a: tf.Tensor, room: tf.Tensor, start: tf.Tensor, g0: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
    """α with g(α) = eps from all 2D knots sorted: g at every knot by a cumulative sum, then interpolated on
    the segment where g crosses eps (the reference's construction; it bisects over the knot index)."""
    knots = tf.concat([start, a], axis=1)  # [B, 2D]
    kinds = tf.concat([tf.ones_like(a), -tf.ones_like(a)], axis=1)  # +1: starts shrinking, -1: reaches 0
    order = tf.argsort(knots, axis=1, stable=True)
    t = tf.gather(knots, order, batch_dims=1)
    slope = tf.cumsum(tf.gather(kinds, order, batch_dims=1), axis=1)  # shrinking coordinates on [t_k, t_k+1]
    steps = slope[:, :-1] * (t[:, 1:] - t[:, :-1])
    g = g0 - tf.concat([tf.zeros_like(g0), tf.cumsum(steps, axis=1)], axis=1)  # g(t_k)
    # The last knot with g(t_k) > eps (g is non-increasing).
    k = tf.maximum(tf.reduce_sum(tf.cast(g > eps, tf.int32), axis=1, keepdims=True) - 1, 0)
    t_k = tf.gather(t, k, batch_dims=1)
    return t_k + tf.math.divide_no_nan(tf.gather(g, k, batch_dims=1) - eps, tf.gather(slope, k, batch_dims=1))


def l1_box_projection(
    delta: tf.Tensor,
    x: tf.Tensor,
    eps: float | tf.Tensor,
    *,
    bisection_steps: int = L1_BISECTION_STEPS,
    max_bisection_steps: int = L1_BISECTION_MAX_STEPS,
) -> tf.Tensor:
    """The exact Euclidean projection of the perturbation δ onto {d : ‖d‖₁ ≤ eps, x + d ∈ [0, 1]^D}.

    What the reference's `L1_projection` (fra31/auto-attack, `autoattack/autopgd_base.py`; Croce & Hein
    2021, "Mind the box: l1-APGD for sparse adversarial attacks on image classifiers", sec. 3.1) computes:
    the problem separates per coordinate once the ball's constraint gets a multiplier α ≥ 0, and the
    solution is soft-thresholding followed by clipping to the box,

        d_i = sign(δ_i) · min(max(|δ_i| − α, 0), b_i),   b_i = 1 − x_i if δ_i ≥ 0 else x_i,

    with α = 0 when the box-clipped δ already lies in the ball, else the α at which ‖d‖₁ = eps. g(α) = Σ_i
    min(max(|δ_i| − α, 0), b_i) is piecewise linear and non-increasing, with knots at max(|δ_i| − b_i, 0)
    (the coordinate leaves the box face) and |δ_i| (it reaches 0). The reference sorts the 2D knots and
    bisects over their index. Sorting dominates its cost (on a CPU it takes longer than the network's
    forward pass on the same batch), so here `bisection_steps` halvings of [0, max|δ_i|] on α itself
    (one pass over δ each) leave a bracket [lo, hi] around the root; g is linear between knots, so with at
    most one distinct knot value v inside the bracket α is solved exactly on the segment [lo, v] or [v, hi]
    that holds it: α = b + (g(b) − eps) / #{i : start_i ≤ b < |δ_i|}. A row whose bracket still holds two
    distinct knot values halves its own bracket further, `L1_BISECTION_ROUND` steps at a time, up to
    `max_bisection_steps` in all, and one still holding two after that takes the sorted construction
    (`_l1_threshold_sorted`); so the result is exact either way and depends on its own row only.

    `delta`, `x`: tensors of the same shape [B, ...] (x in [0, 1]); `eps` a scalar or a [B] tensor. The
    knots, sums and α are computed in float64: the reference's float32 result exceeds eps by up to 4e-4
    on 3x32x32 images, beyond the evaluation's 1e-6 tolerance on the radius, this one by about 2e-7
    (docs/method.md, "APGD"). Returns the projected perturbation in δ's dtype and shape.

    Images of at least `L1_COMPILED_MIN_COORDINATES` coordinates are projected by one XLA program
    (`_l1_project_rows_compiled`): the halvings are passes over δ that TensorFlow's kernels run one op at a
    time (2.7x slower on 86 CIFAR images). A batch whose size is known only at run time is padded with
    zero rows to the next multiple of a quarter of the power of two at or below it, so that a run whose
    survivors shrink compiles a few shapes, not one per size; a zero row projects to zero, and every row is
    computed alone, so padding changes no result.
    """
    shape, dtype = tf.shape(delta), delta.dtype
    coordinates = delta.shape[1:].num_elements()  # None when the image's shape is not static
    y, xf = (tf.reshape(t, [-1, coordinates]) if coordinates else _flat(t) for t in (delta, x))
    eps = tf.cast(eps, tf.float64)
    eps = tf.broadcast_to(tf.reshape(eps, [-1, 1]), [tf.shape(y)[0], 1])
    if coordinates is None or coordinates < L1_COMPILED_MIN_COORDINATES:
        return tf.reshape(_l1_project_rows(y, xf, eps, bisection_steps, max_bisection_steps), shape)
    project = _l1_project_rows_compiled(dtype.name, xf.dtype.name, bisection_steps, max_bisection_steps)
    rows = y.shape[0]
    if rows is not None:  # a static batch compiles once as it is
        return tf.reshape(project(y, xf, eps), shape)
    rows = tf.shape(y)[0]
    extra = _padded_rows(rows) - rows
    pad = [[0, extra], [0, 0]]
    d = project(tf.pad(y, pad), tf.pad(xf, pad), tf.pad(eps, pad, constant_values=1.0))
    return tf.reshape(d[:rows], shape)


def _padded_rows(rows: tf.Tensor) -> tf.Tensor:
    """`rows` rounded up to a multiple of a quarter of the largest power of two <= rows (at least 1)."""
    powers = tf.constant([2**k for k in range(31)], tf.int32)
    below = tf.gather(powers, tf.maximum(tf.searchsorted(powers, [rows], side="right")[0] - 1, 0))
    step = tf.maximum(below // 4, 1)
    return (rows + step - 1) // step * step


@functools.cache
def _l1_project_rows_compiled(dtype: str, x_dtype: str, bisection_steps: int, max_bisection_steps: int):
    """`_l1_project_rows` as one XLA program per input shape (`l1_box_projection`)."""
    specs = [
        tf.TensorSpec([None, None], dtype),
        tf.TensorSpec([None, None], x_dtype),
        tf.TensorSpec([None, 1], tf.float64),
    ]

    @tf.function(jit_compile=True, input_signature=specs)
    def project(y: tf.Tensor, xf: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        return _l1_project_rows(y, xf, eps, bisection_steps, max_bisection_steps)

    return project


def _l1_project_rows(
    delta: tf.Tensor, x: tf.Tensor, eps: tf.Tensor, bisection_steps: int, max_bisection_steps: int
) -> tf.Tensor:
    """`l1_box_projection` of [B, D] rows (eps [B, 1] float64), in δ's dtype."""
    dtype = delta.dtype
    y = tf.cast(delta, tf.float64)
    xf = tf.cast(x, tf.float64)
    a = tf.abs(y)
    room = tf.maximum(tf.where(y >= 0.0, 1.0 - xf, xf), 0.0)  # how far coordinate i may move in δ_i's direction
    start = tf.maximum(a - room, 0.0)  # α where coordinate i starts to shrink below its box face
    g0 = tf.reduce_sum(tf.minimum(a, room), axis=1, keepdims=True)  # g(0): the box-clipped δ
    knots = tf.concat([start, a], axis=1)

    def halve(lo, g_lo, hi, steps, frozen=None):
        # Bisection: g(lo) > eps >= g(hi) throughout (g(max|δ_i|) = 0); `frozen` rows keep their bracket.
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            g_mid = _l1_mass(a, room, mid)
            above = g_mid > eps
            new = (tf.where(above, mid, lo), tf.where(above, g_mid, g_lo), tf.where(above, hi, mid))
            lo, g_lo, hi = new if frozen is None else (tf.where(frozen, old, n) for old, n in zip((lo, g_lo, hi), new))
        return lo, g_lo, hi

    def knots_inside(lo, hi):
        # The smallest and largest knot value strictly inside (lo, hi): inf and -inf when there is none.
        inside = (knots > lo) & (knots < hi)
        v = tf.reduce_min(tf.where(inside, knots, tf.constant(float("inf"), tf.float64)), axis=1, keepdims=True)
        v_max = tf.reduce_max(tf.where(inside, knots, tf.constant(float("-inf"), tf.float64)), axis=1, keepdims=True)
        return v, v_max

    lo, g_lo, hi = halve(tf.zeros_like(g0), g0, tf.reduce_max(a, axis=1, keepdims=True), bisection_steps)
    v, v_max = knots_inside(lo, hi)
    inside_ball = g0 <= eps  # α = 0: these rows need no bracket
    rounds = max(max_bisection_steps - bisection_steps, 0) // L1_BISECTION_ROUND

    def more_steps(r, lo, g_lo, hi, v, v_max):
        # Only the rows with two distinct knot values inside move, so a row's α depends on the row alone.
        lo, g_lo, hi = halve(lo, g_lo, hi, L1_BISECTION_ROUND, frozen=(v_max <= v) | inside_ball)
        return (r + 1, lo, g_lo, hi, *knots_inside(lo, hi))

    if rounds:
        _, lo, g_lo, hi, v, v_max = tf.while_loop(
            lambda r, lo, g_lo, hi, v, v_max: tf.logical_and(r < rounds, tf.reduce_any((v_max > v) & ~inside_ball)),
            more_steps,
            (tf.constant(0), lo, g_lo, hi, v, v_max),
            maximum_iterations=rounds,
        )
    # At most one distinct knot value v inside (lo, hi) in the solved rows.
    solved = (v_max <= v) | inside_ball
    no_knot = tf.math.is_inf(v)
    g_v = _l1_mass(a, room, tf.where(no_knot, lo, v))
    past_v = tf.logical_not(no_knot) & (g_v > eps)  # the root lies in [v, hi], else in [lo, v]
    base, g_base = tf.where(past_v, v, lo), tf.where(past_v, g_v, g_lo)
    alpha = tf.minimum(base + tf.math.divide_no_nan(g_base - eps, _l1_shrinking(start, a, base)), hi)
    alpha = tf.cond(
        tf.reduce_all(solved),
        lambda: alpha,
        lambda: tf.where(solved, alpha, _l1_threshold_sorted(a, room, start, g0, eps)),
    )
    alpha = tf.where(g0 > eps, tf.maximum(alpha, 0.0), 0.0)
    d = tf.sign(y) * tf.minimum(tf.maximum(a - alpha, 0.0), room)
    return tf.cast(d, dtype)


@dataclasses.dataclass(frozen=True)
class L1Projection:
    """The exact projection onto {‖x' − x‖₁ ≤ eps} ∩ [0, 1]^d (`l1_box_projection`).

    Unlike the L2 case, clipping to the box after scaling into the ball would not be the projection (nor
    the reference's): the L1 projection onto the intersection soft-thresholds with the box bounds taken
    into account, so the mass the box cuts off is spent on the other coordinates.

    Example::

        projection = attacks.L1Projection(12.0)            # AutoAttack's CIFAR-10 L1 radius
        x_feasible = projection.project(x_adv, images)     # L1 distance to images at most 12, in [0, 1]
    """

    eps: float
    norm: ClassVar[str] = "l1"

    def __post_init__(self) -> None:
        check_eps(self.eps)

    def project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return clip_to_box(x + l1_box_projection(x_adv - x, x, self.eps))


# name -> projection type; build with PROJECTIONS[norm](eps).
PROJECTIONS: dict[str, type] = {"linf": LinfProjection, "l2": L2Projection, "l1": L1Projection}


def make_projection(norm: str, eps: float) -> Projection:
    """The projection for a threat model named by `norm` ("linf", "l2" or "l1").

    Example::

        projection = attacks.make_projection("l2", 128 / 255)   # attacks.L2Projection(128 / 255)
        x_feasible = projection.project(x_adv, images)
    """
    return PROJECTIONS[check_norm(norm)](eps)
