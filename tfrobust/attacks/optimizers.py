"""Per-step update rules for attacks, and the step-size schedules they use.

An attack optimizer ASCENDS: it is given the gradient g of the loss to maximise at the current iterate and
returns the next (not yet projected) iterate. The interface is two pure functions, so that the state can be
carried through a `tf.while_loop`:

    state = optimizer.init(x_start)                       # tuple of tensors (possibly empty)
    x_next, state = optimizer.update(x, grad, state, step)  # step: int32 scalar tensor, 0-based

Step sizes and learning rates are schedules: callables `step -> float32 scalar`, e.g.
`PiecewiseConstant(boundaries=(5,), values=(0.1, 0.01))`. A plain float is accepted as a constant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import tensorflow as tf

from tfrobust.errors import UserError

Schedule = Callable[[tf.Tensor], tf.Tensor]
ScheduleLike = float | Schedule
OptState = tuple


@dataclasses.dataclass(frozen=True)
class Constant:
    """The schedule that is `value` at every step.

    Example::

        schedule = attacks.Constant(2 / 255)
        float(schedule(tf.constant(7)))                         # 2/255 at every step
        optimizer = attacks.SignGradient(schedule)              # the same steps as SignGradient(2 / 255)
    """

    value: float

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        del step
        return tf.constant(self.value, tf.float32)


@dataclasses.dataclass(frozen=True)
class PiecewiseConstant:
    """values[i] for boundaries[i−1] <= step < boundaries[i] (0-based steps).

    `PiecewiseConstant((5,), (0.1, 0.01))` is 0.1 for steps 0–4 and 0.01 from step 5 on: the reference's
    `optax.piecewise_constant_schedule(0.1, {5: 0.1})` (a scale applies once the step count reaches the
    boundary). Note that Keras' `PiecewiseConstantDecay` switches one step later (`step <= boundary`).

    Example::

        schedule = attacks.PiecewiseConstant(boundaries=(20, 30), values=(0.1, 0.01, 0.001))
        [float(schedule(tf.constant(step))) for step in (0, 19, 20, 30)]   # 0.1, 0.1, 0.01, 0.001
        optimizer = attacks.Adam(schedule)                                 # pgd40_attack's Linf optimizer
    """

    boundaries: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.boundaries) + 1:
            raise UserError(
                f"PiecewiseConstant needs one more value than boundaries, got {len(self.boundaries)} boundaries "
                f"and {len(self.values)} values"
            )
        if any(b2 <= b1 for b1, b2 in zip(self.boundaries, self.boundaries[1:])):
            raise UserError(f"PiecewiseConstant boundaries must increase strictly, got {self.boundaries}")

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.int32)
        boundaries = tf.constant(self.boundaries, tf.int32, shape=[len(self.boundaries)])
        index = tf.reduce_sum(tf.cast(step >= boundaries, tf.int32))
        return tf.gather(tf.constant(self.values, tf.float32), index)


def schedule_value(schedule: ScheduleLike, step: tf.Tensor) -> tf.Tensor:
    """The schedule's value at `step` as a float32 scalar; a plain number is a constant schedule."""
    if callable(schedule):
        return tf.cast(schedule(step), tf.float32)
    return tf.constant(schedule, tf.float32)


class Optimizer(Protocol):
    """Ascent update rule; see the module docstring.

    `init(x_start)` gives the state (a tuple of tensors, carried through the attack's `tf.while_loop`);
    `update(x, grad, state, step)` gives the next, not yet projected, iterate and state.

    Example::

        class MomentumSign:                   # an Optimizer: MI-FGSM's step (Dong et al. 2018)
            def __init__(self, step_size: float, decay: float = 1.0):
                self.step_size, self.decay = step_size, decay

            def init(self, x: tf.Tensor) -> tuple:
                return (tf.zeros_like(x),)

            def update(self, x: tf.Tensor, grad: tf.Tensor, state: tuple, step: tf.Tensor) -> tuple:
                l1 = tf.reduce_sum(tf.abs(grad), axis=[1, 2, 3], keepdims=True)
                momentum = self.decay * state[0] + grad / tf.maximum(l1, 1e-12)
                return x + self.step_size * tf.sign(momentum), (momentum,)

        attack = attacks.PGD(attacks.LinfProjection(8 / 255), attacks.UniformInit("linf", 8 / 255),
                             MomentumSign(2 / 255), attacks.cross_entropy, num_steps=10)
    """

    def init(self, x: tf.Tensor) -> OptState: ...

    def update(self, x: tf.Tensor, grad: tf.Tensor, state: OptState, step: tf.Tensor) -> tuple[tf.Tensor, OptState]: ...


def _per_example_l2(t: tf.Tensor) -> tf.Tensor:
    """‖t_b‖₂ for each example b, shaped to broadcast against t."""
    rank = t.shape.rank
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=list(range(1, rank)), keepdims=True))


@dataclasses.dataclass(frozen=True)
class SignGradient:
    """x ← x + α_t · sign(g): steepest ascent for the Linf norm (FGSM, Goodfellow et al. 2015; PGD, Madry
    et al. 2018). sign(0) = 0, so pixels without gradient stay put.

    Example::

        optimizer = attacks.SignGradient(attacks.PiecewiseConstant((20,), (2 / 255, 0.5 / 255)))
        attack = attacks.PGD(attacks.LinfProjection(8 / 255), attacks.UniformInit("linf", 8 / 255), optimizer,
                             attacks.margin, num_steps=40, keep_best=True)
    """

    step_size: ScheduleLike

    def init(self, x: tf.Tensor) -> OptState:
        del x
        return ()

    def update(self, x: tf.Tensor, grad: tf.Tensor, state: OptState, step: tf.Tensor) -> tuple[tf.Tensor, OptState]:
        alpha = tf.cast(schedule_value(self.step_size, step), x.dtype)
        return x + alpha * tf.sign(grad), state


@dataclasses.dataclass(frozen=True)
class NormalizedGradient:
    """x ← x + α_t · g/‖g‖₂ per example: steepest ascent for the L2 norm (Madry et al. 2018's L2 PGD).

    The 1e-12 floor (as in AutoAttack's L2 APGD, Croce & Hein 2020) leaves an example with zero gradient
    where it is instead of producing NaN.

    Example::

        eps, num_steps = 128 / 255, 20
        optimizer = attacks.NormalizedGradient(2.5 * eps / num_steps)   # Madry et al. 2018's L2 step
        attack = attacks.PGD(attacks.L2Projection(eps), attacks.UniformInit("l2", eps), optimizer,
                             attacks.cross_entropy, num_steps=num_steps)
    """

    step_size: ScheduleLike

    def init(self, x: tf.Tensor) -> OptState:
        del x
        return ()

    def update(self, x: tf.Tensor, grad: tf.Tensor, state: OptState, step: tf.Tensor) -> tuple[tf.Tensor, OptState]:
        alpha = tf.cast(schedule_value(self.step_size, step), x.dtype)
        return x + alpha * grad / tf.maximum(_per_example_l2(grad), 1e-12), state


@dataclasses.dataclass(frozen=True)
class Adam:
    """Elementwise Adam ascent (Kingma & Ba 2015, Algorithm 1, with g ↦ −g for maximisation):

        m ← b1·m + (1 − b1)·g,   v ← b2·v + (1 − b2)·g²,   t ← t + 1
        x ← x + lr_step · (m / (1 − b1^t)) / (sqrt(v / (1 − b2^t)) + eps)

    The attack optimiser of the reference TRADES inner maximisation and PGD-40 (Gowal et al. 2020,
    Rebuffi et al. 2021; docs/method.md, "Inner maximisation"). The first step is ≈ lr·sign(g), so Adam
    behaves like a sign method whose step adapts to the gradient history. State (m, v, t) is carried through
    the attack loop; t counts this optimizer's own updates (the bias correction), `step` only indexes the
    learning-rate schedule.

    eps is 1e-9, the reference's `attacks.Adam(epsilon=1e-9)` (DeepMind's `adversarial_robustness/jax`
    attacks.py, on optax `scale_by_adam`), not Keras's or optax's default 1e-8: the two give different
    steps wherever |g| is below about 1e-5.

    Example::

        optimizer = attacks.Adam(attacks.PiecewiseConstant((5,), (0.1, 0.01)))   # trades_attack's, Linf
        attack = attacks.PGD(attacks.LinfProjection(8 / 255), attacks.UniformInit("linf", 8 / 255), optimizer,
                             attacks.kl_to_target, num_steps=10)
    """

    learning_rate_schedule: ScheduleLike
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-9

    def init(self, x: tf.Tensor) -> OptState:
        return (tf.zeros_like(x), tf.zeros_like(x), tf.constant(0, tf.int32))

    def update(self, x: tf.Tensor, grad: tf.Tensor, state: OptState, step: tf.Tensor) -> tuple[tf.Tensor, OptState]:
        m, v, count = state
        count = count + 1
        t = tf.cast(count, x.dtype)
        m = self.b1 * m + (1.0 - self.b1) * grad
        v = self.b2 * v + (1.0 - self.b2) * tf.square(grad)
        m_hat = m / (1.0 - tf.pow(tf.cast(self.b1, x.dtype), t))
        v_hat = v / (1.0 - tf.pow(tf.cast(self.b2, x.dtype), t))
        lr = tf.cast(schedule_value(self.learning_rate_schedule, step), x.dtype)
        return x + lr * m_hat / (tf.sqrt(v_hat) + self.eps), (m, v, count)
