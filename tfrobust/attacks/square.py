"""Square attack: score-based (gradient-free) random search, the last attack of AutoAttack.

Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient black-box adversarial
attack via random search" (ECCV), Algorithms 1-3; implemented after the reference code in AutoAttack
(github.com/fra31/auto-attack, `autoattack/square.py`, `SquareAttack`, loss "margin"), which fixes the
details below. Because it never uses a gradient, Square is AutoAttack's check against gradient masking:
a model on which Square breaks points that APGD could not is likely masking gradients.

Per example, minimising the margin m(x') = z_y − max_{i≠y} z_i:

- start: Linf x + eps·s with s ∈ {−1, +1} constant along each image column and channel (vertical
  stripes); L2 a 5×5 grid of the "eta" squares with random signs, scaled to ‖δ‖₂ = eps; clipped to [0, 1];
  L1 the same grid of the L1 pattern (`eta_l1`: ring weights 1/(ring+1)⁴, unit L1 norm) projected onto the
  L1 ball of radius eps·(1 − 1e-6) ∩ [0, 1] (the reference's `L1_projection`);
- iteration i (0-based, the reference's `i_iter`): the square side is s_i = round(sqrt(p_i·h·w)) (Linf at
  least 1; L2 and L1 at least 3 and odd), computed as the reference does, sqrt(p_i·n_features/c) with
  n_features = c·h·w; p_i = `p_selection(i)`: p_init (0.8) halved after iterations 10, 50, 200, 500,
  1000, 2000, 4000, 6000 and 8000, i.e. p_init / 2^k with k the number of those boundaries that i
  exceeds. AutoAttack builds Square with `resc_schedule=False` (`autoattack.py`, standard and plus
  versions, Linf and L2), so a 5000-query run uses the iteration itself and never reaches the last two
  halvings; `rescale_schedule=True` is the reference class's own default (`resc_schedule=True`), which
  rescales the iteration to int(i / n_queries · 10000) so that any budget goes through the whole
  schedule;
- Linf candidate: the current best point with one s×s window set to ±2·eps per channel, projected onto
  ball ∩ [0, 1]; L2 candidate: the reference's mass-moving update between two windows, on the sphere
  (`l2_window_update`: window norms per channel, over height and width, as the reference's
  `attack_single_run` L2 branch); L1 candidate: the same update with L1 window sums, projected onto the
  L1 ball ∩ [0, 1] instead of rescaled (`l1_window_update`, the reference's L1 branch, which only its
  newer versions have);
- a candidate replaces the current point only when its margin is lower (strictly); a point stops being
  queried once its margin is ≤ 0 (misclassified).

Queries: the start costs one query per example, each iteration one more for the points still robust;
`n_queries` bounds the total per example (so a run makes n_queries − 1 iterations; the reference makes
n_queries iterations after the start, one query more).

Difference from AutoAttack's port (chosen, documented): the window position, the signs and the eta
transposition are drawn per example, as in the original Square code (Andriushchenko et al.'s
`square_attack` repository); AutoAttack's port draws one window per iteration for the whole batch. Per
example draws make each example's result independent of which other points share its batch.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tfrobust.attacks import rng
from tfrobust.attacks.common import (
    ModelFn,
    as_seed,
    check_counts,
    class_ids,
    flat_norm,
    no_autograph,
    rank,
    run_targets,
    select_rows,
)
from tfrobust.attacks.losses import margin
from tfrobust.attacks.projection import (
    check_eps,
    check_norm,
    l1_box_projection,
    make_projection,
)
from tfrobust.errors import UserError

# Iterations after which p halves (the reference's `p_selection`; with `rescale_schedule`, rescaled ones).
P_BOUNDARIES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(i: int, n_queries: int, p_init: float = 0.8, rescale: bool = False) -> float:
    """The fraction of pixels changed at iteration i (0-based), as the reference's `p_selection(i_iter)`.

    fra31/auto-attack `autoattack/square.py`, `SquareAttack.p_selection`: with `resc_schedule` the
    iteration is first rescaled to int(i / n_queries · 10000); p = p_init / 2^k, k the number of
    `P_BOUNDARIES` strictly below that iteration. AutoAttack uses `rescale=False`.
    """
    it = int(i / n_queries * 10000) if rescale else i
    return p_init / 2 ** sum(it > b for b in P_BOUNDARIES)


def margin_of(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """z_y − max_{i≠y} z_i per example: positive exactly when correctly classified (−losses.margin)."""
    return -margin(logits, y)


def _eta_rectangles(x: int, y: int, power: int = 2) -> np.ndarray:
    """Concentric rings of an x×y rectangle with weights 1/(ring+1)^power, unit L2 norm (power 2, the L2
    pattern) or unit L1 norm (power 4, the L1 pattern): the reference's `eta_rectangles`."""
    delta = np.zeros([x, y])
    x_c, y_c = x // 2 + 1, y // 2 + 1
    c0, c1 = x_c - 1, y_c - 1
    for counter in range(max(x_c, y_c)):
        rows = slice(max(c0, 0), min(c0 + 2 * counter + 1, x))
        cols = slice(max(0, c1), min(c1 + 2 * counter + 1, y))
        delta[rows, cols] += 1.0 / (counter + 1) ** power
        c0 -= 1
        c1 -= 1
    norm = np.sqrt((delta**2).sum()) if power == 2 else np.abs(delta).sum()
    return delta / norm if norm > 0 else delta


def eta(s: int) -> np.ndarray:
    """The reference's L2 square pattern of side s (before its random transposition): two stacked
    rectangles of concentric rings with weights 1/(ring+1)², opposite signs, unit L2 norm."""
    delta = np.zeros([s, s])
    delta[: s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s)
    return delta / np.sqrt((delta**2).sum())


def eta_l1(s: int) -> np.ndarray:
    """The reference's L1 square pattern of side s (`eta` with norm 'L1', before its random transposition):
    two stacked rectangles of concentric rings with weights 1/(ring+1)⁴, each of unit L1 norm, opposite
    signs, unit L1 norm in all."""
    delta = np.zeros([s, s])
    delta[: s // 2] = _eta_rectangles(s // 2, s, power=4)
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s, power=4)
    return delta / np.abs(delta).sum()


# The window pattern of each norm with windows (Linf moves whole windows by ±2·eps instead).
PATTERNS = {"l2": eta, "l1": eta_l1}


def _side(p: float, h: int, w: int, c: int, norm: str) -> int:
    """The window side for fraction p, the reference's arithmetic: round(sqrt(p · n_features / c)) with
    n_features = c·h·w (Python's round: half to even), at least 1 (Linf) or at least 3 and odd (L2, L1)."""
    s = int(round(math.sqrt(p * (c * h * w) / c)))
    limit = min(h, w)
    if norm == "linf":
        return min(max(s, 1), limit)
    s = max(s, 3)
    if s % 2 == 0:
        s += 1
    # Tiny images (below the reference's 32×32): keep the window inside the image, odd.
    if s > limit:
        s = limit if limit % 2 else limit - 1
    return max(s, 1)


def side_schedule(
    n_iter: int, n_queries: int, h: int, w: int, c: int, norm: str, p_init: float = 0.8, rescale: bool = False
) -> list[tuple[float, int]]:
    """(p_i, window side s_i) for iterations i = 0 .. n_iter − 1 (see `p_schedule` and `_side`)."""
    out = []
    for i in range(n_iter):
        p = p_schedule(i, n_queries, p_init, rescale)
        out.append((p, _side(p, h, w, c, norm)))
    return out


def window_mask(vh: tf.Tensor, vw: tf.Tensor, side: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """[b, h, w, 1] float mask of the side×side windows with top-left corners (vh, vw) ([b] int32)."""
    rows = tf.range(h)[None, :]
    cols = tf.range(w)[None, :]
    in_h = (rows >= vh[:, None]) & (rows < vh[:, None] + side)
    in_w = (cols >= vw[:, None]) & (cols < vw[:, None] + side)
    return tf.cast(in_h[:, :, None, None] & in_w[:, None, :, None], tf.float32)


def linf_window_update(
    x: tf.Tensor, x_best: tf.Tensor, eps: float, side: tf.Tensor, vh: tf.Tensor, vw: tf.Tensor, signs: tf.Tensor
) -> tf.Tensor:
    """The Linf candidate (reference `attack_single_run`, Linf branch): x_best with the window at (vh, vw)
    moved by 2·eps·sign per channel (`signs` [b, 1, 1, c] of ±1), clipped to the eps ball, then [0, 1]."""
    h, w = int(x.shape[1]), int(x.shape[2])
    m1 = window_mask(vh, vw, side, h, w)
    return make_projection("linf", eps).project(x_best + m1 * 2.0 * eps * signs, x)


def l2_window_update(
    x: tf.Tensor,
    x_best: tf.Tensor,
    eps: float,
    side: tf.Tensor,
    corners: tuple[tf.Tensor, ...],
    signs: tf.Tensor,
    transpose: tf.Tensor,
    pattern: tf.Tensor,
) -> tf.Tensor:
    """The L2 candidate, the reference's arithmetic (fra31/auto-attack `square.py`, `attack_single_run`,
    L2 branch), per example with its own draws.

    With δ = x_best − x, window 1 at (vh, vw) and window 2 at (vh2, vw2) (`corners`, [b] int32 each),
    `signs` [b, 1, 1, c] of ±1, `transpose` [b] bool (the reference transposes eta half the time) and
    `pattern` [S, S] holding eta(side) in its top-left side×side corner:

        n1 = ‖δ[window 1]‖ per channel (over height and width);  ‖δ‖, ‖δ·max(mask1, mask2)‖ over everything
        new = eta·sign + δ[window 1] / (1e-12 + n1)
        new = new / (1e-12 + ‖new‖ per channel) · sqrt(max(eps² − ‖δ‖², 0) / c + ‖δ·max(mask1, mask2)‖²)
        δ[window 2] = 0;  δ[window 1] = new;  x_new = clip(x + δ / (‖δ‖ + 1e-12) · eps, 0, 1).
    """
    h, w, c = (int(d) for d in x.shape[1:])
    vh, vw, vh2, vw2 = corners
    m1 = window_mask(vh, vw, side, h, w)
    m2 = window_mask(vh2, vw2, side, h, w)
    eta_img = _place(pattern, vh, vw, transpose, h, w) * m1  # the eta pattern in window 1, [b, h, w, 1]

    eps = tf.constant(eps, tf.float32)
    delta = x_best - x
    # Per channel: reduced over height and width only (the reference's sum(dim=(-2, -1)) in NCHW).
    norms_window_1 = tf.sqrt(tf.reduce_sum(tf.square(delta * m1), axis=[1, 2], keepdims=True))
    norms_image = flat_norm(delta, "l2")
    norms_windows = flat_norm(delta * tf.maximum(m1, m2), "l2")
    new = eta_img * signs + delta * m1 / (1e-12 + norms_window_1)
    new_norm = tf.sqrt(tf.reduce_sum(tf.square(new), axis=[1, 2], keepdims=True))
    budget = tf.sqrt(tf.maximum(tf.square(eps) - tf.square(norms_image), 0.0) / c + tf.square(norms_windows))
    new = new / (1e-12 + new_norm) * budget
    delta = delta * (1.0 - m2)
    delta = delta * (1.0 - m1) + new * m1
    return tf.clip_by_value(x + delta / (flat_norm(delta, "l2") + 1e-12) * eps, 0.0, 1.0)


def l1_window_update(
    x: tf.Tensor,
    x_best: tf.Tensor,
    eps: float,
    side: tf.Tensor,
    corners: tuple[tf.Tensor, ...],
    signs: tf.Tensor,
    transpose: tf.Tensor,
    pattern: tf.Tensor,
) -> tf.Tensor:
    """The L1 candidate, the reference's arithmetic (fra31/auto-attack `square.py`, `attack_single_run`, L1
    branch), per example with its own draws; arguments as `l2_window_update`, `pattern` holding eta_l1.

    With δ = x_best − x, all window sums per channel over height and width:

        n1 = Σ|δ[window 1]|;  ‖δ‖₁ over everything;  n12 = Σ|δ·max(mask1, mask2)|
        new = eta·sign + δ[window 1] / (1e-12 + n1)
        new = new / (1e-12 + Σ|new|) · (max(eps − ‖δ‖₁, 0) / c + n12) · c
        δ[window 2] = 0;  δ[window 1] = new;  x_new = x + δ + (P(δ) − δ)

    with P the projection onto the L1 ball of radius eps·(1 − 1e-6) ∩ [0, 1] (`l1_box_projection`; the
    reference's margin below eps absorbs the rounding of x + δ), clipped to [0, 1] against that rounding.
    """
    h, w, c = (int(d) for d in x.shape[1:])
    vh, vw, vh2, vw2 = corners
    m1 = window_mask(vh, vw, side, h, w)
    m2 = window_mask(vh2, vw2, side, h, w)
    eta_img = _place(pattern, vh, vw, transpose, h, w) * m1
    delta = x_best - x
    norms_window_1 = tf.reduce_sum(tf.abs(delta * m1), axis=[1, 2], keepdims=True)
    norms_image = flat_norm(delta, "l1")
    norms_windows = tf.reduce_sum(tf.abs(delta * tf.maximum(m1, m2)), axis=[1, 2], keepdims=True)
    new = eta_img * signs + delta * m1 / (1e-12 + norms_window_1)
    new_norm = tf.reduce_sum(tf.abs(new), axis=[1, 2], keepdims=True)
    new = new / (1e-12 + new_norm) * (tf.maximum(eps - norms_image, 0.0) / c + norms_windows) * c
    delta = delta * (1.0 - m2)
    delta = delta * (1.0 - m1) + new * m1
    return _onto_l1_ball(x, delta, eps)


def _onto_l1_ball(x: tf.Tensor, delta: tf.Tensor, eps: float) -> tf.Tensor:
    """x + δ + (P(δ) − δ), P onto the L1 ball of radius eps·(1 − 1e-6) ∩ [0, 1], clipped to [0, 1]."""
    correction = l1_box_projection(delta, x, eps * (1.0 - 1e-6)) - delta
    return tf.clip_by_value(x + delta + correction, 0.0, 1.0)


def _place(pattern: tf.Tensor, vh: tf.Tensor, vw: tf.Tensor, transpose: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """[b, h, w, 1]: `pattern`'s top-left corner placed at (vh, vw), transposed where `transpose` (to be
    masked by the window)."""
    b = tf.shape(vh)[0]
    s_max = int(pattern.shape[0])
    li = tf.clip_by_value(tf.range(h)[None, :] - vh[:, None], 0, s_max - 1)  # [b, h]
    lj = tf.clip_by_value(tf.range(w)[None, :] - vw[:, None], 0, s_max - 1)  # [b, w]
    li_g = tf.broadcast_to(li[:, :, None], [b, h, w])
    lj_g = tf.broadcast_to(lj[:, None, :], [b, h, w])
    idx = tf.where(transpose[:, None, None, None], tf.stack([lj_g, li_g], -1), tf.stack([li_g, lj_g], -1))
    return tf.gather_nd(pattern, idx)[..., None]


@dataclasses.dataclass(frozen=True)
class Square:
    """The Square attack (see the module docstring); AutoAttack standard: `Square(norm, eps, 5000)`.

    Call: `attack(model_fn, x, labels, seed) -> x_adv` (labels one-hot [B, K] or ids [B]); per example the
    point of lowest margin found (misclassified when the attack succeeded). `single_run` also returns
    the final margins and the queries used.

    Example::

        square = attacks.Square("linf", 8 / 255, n_queries=5000)   # no gradients: any scoring model_fn
        model_fn = lambda x: model(x, training=False)
        x_adv = tf.function(square)(model_fn, images, labels, tf.constant([0, 3]))   # one graph
        one_run = tf.function(square.single_run)                  # every example, with its statistics
        x_best, margins, queries = one_run(model_fn, images, tf.constant(labels, tf.int32), tf.constant([0, 3]))
    """

    norm: str
    eps: float
    n_queries: int = 5000
    p_init: float = 0.8
    n_restarts: int = 1
    # The reference's `resc_schedule`; AutoAttack sets it False (see the module docstring).
    rescale_schedule: bool = False
    # Every tensor at the batch's shape, the examples that leave a run masked instead of dropped, as XLA
    # needs (`common.run_targets`, "Fixed shapes"); the same per-example results.
    fixed_shape: bool = False

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps)
        check_counts("Square", n_queries=self.n_queries, n_restarts=self.n_restarts)
        if not 0 < self.p_init <= 1:
            raise UserError(f"Square p_init must be in (0, 1], got {self.p_init!r}")
        if not isinstance(self.rescale_schedule, bool):
            raise UserError(f"Square rescale_schedule must be True or False, got {self.rescale_schedule!r}")
        if not isinstance(self.fixed_shape, bool):
            raise UserError(f"Square fixed_shape must be True or False, got {self.fixed_shape!r}")

    def notes(self, num_classes: int) -> tuple[str, ...]:
        return ()

    @no_autograph
    def __call__(self, model_fn: ModelFn, x: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(x, tf.float32)
        y = class_ids(labels)
        # Square's own test, as in its iterations: a margin of 0 (a tie) counts as broken.
        robust = tf.greater(margin_of(model_fn(x), y), 0.0)

        def run(xs, ys, target, restart, run_seed, live=None):
            adv, margin, _ = self.single_run(model_fn, xs, ys, run_seed, live)
            return adv, margin <= 0.0

        return run_targets(run, x, y, robust, seed, n_restarts=self.n_restarts, fixed_shape=self.fixed_shape)

    @no_autograph
    def single_run(
        self, model_fn: ModelFn, x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor, live: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One run on every example: (best point, its margin, queries used per example).

        An iteration draws a window per example still above margin 0, in the order of those examples.
        With `fixed_shape` every row is computed and the rows of the others discarded; each example takes
        the draws of its `rank` among the remaining ones, the draws it has without fixed shapes. `live`
        ([b] bool, fixed shapes only): the rows to attack.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        seed = as_seed(seed)
        if x.shape.rank != 4 or None in x.shape[1:]:
            raise UserError("Square needs NHWC images of known height, width and channels")
        h, w, c = (int(d) for d in x.shape[1:])
        eps = tf.constant(self.eps, tf.float32)
        batch = tf.shape(x)[0]
        n_iter = self.n_queries - 1
        sides = [
            side
            for _, side in side_schedule(n_iter, self.n_queries, h, w, c, self.norm, self.p_init, self.rescale_schedule)
        ]
        side_t = tf.constant(sides or [1], tf.int32)

        init_seed, loop_seed = tf.unstack(rng.split(seed, 2))
        if self.norm == "linf":
            stripes = tf.sign(rng.uniform([batch, 1, w, c], init_seed, -1.0, 1.0))
            x_best = tf.clip_by_value(x + eps * stripes, 0.0, 1.0)
        elif self.norm == "l2":
            x_best = self._l2_init(x, init_seed, h, w, c)
        else:
            x_best = _onto_l1_ball(x, self._grid(x, init_seed, h, w, c, eta_l1), self.eps)
        margin = margin_of(model_fn(x_best), y)
        queries = tf.ones([batch], tf.int32)

        def corner(u, size, s):
            # The reference's random_int(0, size − s): floor(U·(size − s)) ∈ [0, size − s).
            return tf.cast(tf.floor(u * tf.cast(size - s, tf.float32)), tf.int32)

        if self.norm != "linf":
            eta_sides = sorted(set(sides)) or [1]
            s_max = max(eta_sides)
            table = np.zeros([s_max + 1, s_max, s_max], np.float32)
            for s in eta_sides:
                table[s, :s, :s] = PATTERNS[self.norm](s)
            eta_table = tf.constant(table)

        def candidate(xs, xb, i, it_seed, order=None):
            b = tf.shape(xs)[0]
            s = side_t[i]
            u = rng.uniform([b, 5], it_seed)
            signs = tf.sign(rng.uniform([b, 1, 1, c], rng.fold_in(it_seed, 1), -1.0, 1.0))
            if order is not None:  # fixed shapes: row j takes the draws of row order[j]
                u, signs = tf.gather(u, order), tf.gather(signs, order)
            vh, vw = corner(u[:, 0], h, s), corner(u[:, 1], w, s)
            if self.norm == "linf":
                return linf_window_update(xs, xb, self.eps, s, vh, vw, signs)
            corners = (vh, vw, corner(u[:, 2], h, s), corner(u[:, 3], w, s))
            update = l2_window_update if self.norm == "l2" else l1_window_update
            return update(xs, xb, self.eps, s, corners, signs, u[:, 4] > 0.5, tf.gather(eta_table, s))

        def body(i, x_best, margin, queries):
            idx = tf.where(margin > 0.0)[:, 0]
            xs, xb, ys = tf.gather(x, idx), tf.gather(x_best, idx), tf.gather(y, idx)
            x_new = candidate(xs, xb, i, rng.fold_in(loop_seed, i))
            m_new = margin_of(model_fn(x_new), ys)
            m_old = tf.gather(margin, idx)
            better = m_new < m_old  # strict: a candidate is accepted only when the margin drops
            x_best = tf.tensor_scatter_nd_update(x_best, idx[:, None], select_rows(better, x_new, xb))
            margin = tf.tensor_scatter_nd_update(margin, idx[:, None], tf.where(better, m_new, m_old))
            queries = tf.tensor_scatter_nd_add(queries, idx[:, None], tf.ones_like(idx, tf.int32))
            return i + 1, x_best, margin, queries

        def cond(i, x_best, margin, queries):
            return tf.logical_and(i < n_iter, tf.reduce_any(margin > 0.0))

        if self.fixed_shape:
            live = tf.ones([batch], tf.bool) if live is None else tf.convert_to_tensor(live, tf.bool)

            def body(i, x_best, margin, queries):
                active = tf.logical_and(live, margin > 0.0)
                x_new = candidate(x, x_best, i, rng.fold_in(loop_seed, i), rank(active))
                m_new = margin_of(model_fn(x_new), y)
                better = tf.logical_and(active, m_new < margin)
                x_best = select_rows(better, x_new, x_best)
                margin = tf.where(better, m_new, margin)
                return i + 1, x_best, margin, queries + tf.cast(active, tf.int32)

            def cond(i, x_best, margin, queries):
                return tf.logical_and(i < n_iter, tf.reduce_any(tf.logical_and(live, margin > 0.0)))

        _, x_best, margin, queries = tf.while_loop(
            cond, body, (tf.constant(0, tf.int32), x_best, margin, queries), maximum_iterations=max(n_iter, 0)
        )
        return x_best, margin, queries

    def _l2_init(self, x: tf.Tensor, seed: tf.Tensor, h: int, w: int, c: int) -> tf.Tensor:
        """The reference's L2 start: a grid of eta(s) squares, s = h // 5, with random signs per example,
        channel and square (and a random transposition each), normalised to ‖δ‖₂ = eps, clipped."""
        delta = self._grid(x, seed, h, w, c, eta)
        eps = tf.constant(self.eps, tf.float32)
        return tf.clip_by_value(x + delta / (flat_norm(delta, "l2") + 1e-12) * eps, 0.0, 1.0)

    def _grid(self, x: tf.Tensor, seed: tf.Tensor, h: int, w: int, c: int, pattern_of) -> tf.Tensor:
        """The reference's L2 and L1 starting perturbation δ: a grid of `pattern_of(s)` squares (eta or
        eta_l1), s = h // 5, with random signs per example, channel and square and a random transposition
        each. The L1 start is then x + δ projected onto the ball (`_onto_l1_ball`), not rescaled."""
        s = max(h // 5, 1)
        n_h = 5 if h >= 5 else h
        n_w = 5 if w >= 5 else w
        start_h, start_w = (h - s * n_h) // 2, (w - s * n_w) // 2
        pattern = pattern_of(s)
        blocks, blocks_t = [], []
        for bh in range(n_h):
            for bw in range(n_w):
                vh, vw = start_h + bh * s, start_w + bw * s
                img = np.zeros([h, w])
                img_t = np.zeros([h, w])
                img[vh : vh + s, vw : vw + s] = pattern[: max(0, min(s, h - vh)), : max(0, min(s, w - vw))]
                img_t[vh : vh + s, vw : vw + s] = pattern.T[: max(0, min(s, h - vh)), : max(0, min(s, w - vw))]
                blocks.append(img)
                blocks_t.append(img_t)
        blocks = tf.constant(np.stack(blocks), tf.float32)  # [n, h, w]
        blocks_t = tf.constant(np.stack(blocks_t), tf.float32)
        n = int(blocks.shape[0])
        batch = tf.shape(x)[0]
        sign_seed, flip_seed = tf.unstack(rng.split(seed, 2))
        signs = tf.sign(rng.uniform([batch, n, c], sign_seed, -1.0, 1.0))
        flip = tf.cast(rng.uniform([batch, n], flip_seed) > 0.5, tf.float32)
        return tf.einsum("nhw,bnc->bhwc", blocks, signs * (1.0 - flip)[..., None]) + tf.einsum(
            "nhw,bnc->bhwc", blocks_t, signs * flip[..., None]
        )
