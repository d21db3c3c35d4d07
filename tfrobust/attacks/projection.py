"""Threat models: projection onto the eps ball around the clean image, intersected with [0, 1].

Projected gradient methods (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks", eq. 2) keep every iterate feasible by projecting it back onto the allowed set
S(x) = {x' : ‖x' − x‖ ≤ eps} ∩ [0, 1]^d after each step. Images are float32 NHWC in [0, 1]; every function
here works on any tensor whose first axis is the batch.
"""

from __future__ import annotations

import dataclasses
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
    """Per-example norm of a perturbation: `linf` = max_i |δ_i|, `l2` = sqrt(Σ_i δ_i²). Shape [B].

    Example::

        distances = attacks.norm_of(x_adv - images, "l2")       # [B]
        assert float(tf.reduce_max(distances)) <= 128 / 255 + 1e-5
    """
    flat = _flat(delta)
    if check_norm(norm) == "linf":
        return tf.reduce_max(tf.abs(flat), axis=1)
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


# name -> projection type; build with PROJECTIONS[norm](eps).
PROJECTIONS: dict[str, type] = {"linf": LinfProjection, "l2": L2Projection}


def make_projection(norm: str, eps: float) -> Projection:
    """The projection for a threat model named by `norm` ("linf" or "l2").

    Example::

        projection = attacks.make_projection("l2", 128 / 255)   # attacks.L2Projection(128 / 255)
        x_feasible = projection.project(x_adv, images)
    """
    return PROJECTIONS[check_norm(norm)](eps)
