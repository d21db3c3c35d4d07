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
from tfrobust.attacks.projection import check_eps, check_norm, clip_to_box


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
        g = rng.normal([batch, tf.size(x) // batch], direction_seed, dtype=x.dtype)
        # A Gaussian vector is 0 with probability 0; the floor only guards the division.
        direction = g / tf.maximum(tf.norm(g, axis=1, keepdims=True), 1e-12)
        dim = tf.cast(tf.shape(g)[1], x.dtype)
        u = rng.uniform([batch, 1], radius_seed, dtype=x.dtype)
        radius = eps * tf.pow(u, 1.0 / dim)
        delta = tf.reshape(direction * radius, tf.shape(x))
        return clip_to_box(x + delta)
