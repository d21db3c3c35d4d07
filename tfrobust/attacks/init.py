"""Starting points for iterative attacks.

A random start inside the threat model (Madry et al. 2018, sec. 3 / appendix) avoids the gradient-masking
trap of starting exactly at the clean point; TRADES' inner maximisation and the reference PGD-40 both start
uniformly in the eps ball and then clip to [0, 1] (docs/method.md, "Inner maximisation").

Randomness is stateless: an init takes `seed`, an int32/int64 tensor of shape [2], and draws with
`tfrobust.attacks.rng` (Philox, the same numbers with and without XLA). Same seed, same start, eager,
graph or XLA-compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import tensorflow as tf

from tfrobust.attacks import rng
from tfrobust.attacks.projection import (
    check_eps,
    check_norm,
    clip_to_box,
    l1_box_projection,
)


class Init(Protocol):
    """`init(x, seed) -> x_start`: a point inside the threat model around `x`, already clipped to [0, 1].

    `seed` is an int tensor of shape [2]; the same seed gives the same start.

    Example::

        class RandomCorner:                   # an Init: a random corner of the Linf ball, in [0, 1]
            def __init__(self, eps: float):
                self.eps = eps

            def __call__(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
                signs = tf.sign(tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0))
                return tf.clip_by_value(x + self.eps * signs, 0.0, 1.0)

        attack = attacks.PGD(attacks.LinfProjection(8 / 255), RandomCorner(8 / 255),
                             attacks.SignGradient(2 / 255), attacks.cross_entropy, num_steps=10)
    """

    def __call__(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor: ...


@dataclasses.dataclass(frozen=True)
class ZeroInit:
    """Starts at the clean image (Kurakin et al. 2017's basic iterative method; also FAB and APGD restarts).

    Example::

        basic_iterative = attacks.PGD(attacks.LinfProjection(8 / 255), attacks.ZeroInit(),
                                      attacks.SignGradient(1 / 255), attacks.cross_entropy, num_steps=10)
    """

    def __call__(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        del seed  # deterministic
        return tf.identity(x)


@dataclasses.dataclass(frozen=True)
class UniformInit:
    """Uniform sample from the eps ball around x, then clipped to [0, 1] (Madry et al. 2018).

    - linf: δ_i ~ U[−eps, eps] independently per pixel (uniform in the Linf ball).
    - l2: uniform in the L2 ball of dimension d: direction u = g/‖g‖₂ with g ~ N(0, I), radius
      r = eps · U^(1/d) with U ~ U[0, 1] (the ball's volume grows like r^d, so this inverse-CDF radius makes
      the density uniform; Muller 1959 / standard "uniform in a ball" sampling). For image-sized d nearly all
      samples lie close to the sphere.
    - l1: uniform in the L1 ball: direction u = l/‖l‖₁ with l_i i.i.d. Laplace(0, 1) (|l|/‖l‖₁ is
      Dirichlet(1, ..., 1), uniform on the simplex, and the signs pick the orthant), radius eps · U^(1/d)
      as for L2.

    Clipping to [0, 1] keeps the point inside the ball because x ∈ [0, 1] (it only shrinks |δ_i|).

    Example::

        init = attacks.UniformInit("l2", 128 / 255)
        x_start = init(images, tf.constant([0, 1]))   # uniform in the L2 ball around images, clipped to [0, 1]
    """

    norm: str
    eps: float

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps)

    def __call__(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        eps = tf.cast(self.eps, x.dtype)
        if self.norm == "linf":
            delta = rng.uniform(tf.shape(x), seed, -1.0, 1.0, dtype=x.dtype) * eps
            return clip_to_box(x + delta)
        direction_seed, radius_seed = tf.unstack(rng.split(seed, 2))
        batch = tf.shape(x)[0]
        if self.norm == "l1":
            magnitude_seed, sign_seed = tf.unstack(rng.split(direction_seed, 2))
            shape = [batch, tf.size(x) // batch]
            # Laplace: a random sign times Exp(1) by inversion, −log(1 − v) finite because v ∈ [0, 1).
            g = -tf.math.log1p(-rng.uniform(shape, magnitude_seed, dtype=x.dtype))
            g = tf.where(rng.uniform(shape, sign_seed, dtype=x.dtype) < 0.5, -g, g)
            direction = g / tf.maximum(tf.reduce_sum(tf.abs(g), axis=1, keepdims=True), 1e-12)
        else:
            g = rng.normal([batch, tf.size(x) // batch], direction_seed, dtype=x.dtype)
            # A Gaussian vector is 0 with probability 0; the floor only guards the division.
            direction = g / tf.maximum(tf.norm(g, axis=1, keepdims=True), 1e-12)
        dim = tf.cast(tf.shape(g)[1], x.dtype)
        u = rng.uniform([batch, 1], radius_seed, dtype=x.dtype)
        radius = eps * tf.pow(u, 1.0 / dim)
        delta = tf.reshape(direction * radius, tf.shape(x))
        return clip_to_box(x + delta)


def l1_normal_start(x: tf.Tensor, eps: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """APGD-L1's random start: x + P(t) with t ~ N(0, I) and P the projection onto the L1 ball of radius
    eps ∩ [0, 1]^d (fra31/auto-attack, `autoattack/autopgd_base.py`: `attack_single_run` without an initial
    point, and `decr_eps_pgd` at 3·eps). With ‖t‖₁ ≈ 0.8·d far above eps, the projection soft-thresholds t
    to its largest coordinates: a sparse start on the ball's surface."""
    t = rng.normal(tf.shape(x), seed, dtype=x.dtype)
    return clip_to_box(x + l1_box_projection(t, x, eps))
