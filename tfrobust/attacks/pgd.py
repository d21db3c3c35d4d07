"""Projected gradient ascent (PGD): the one implementation behind TRADES' inner maximisation, PGD-AT and
the PGD-40 model-selection attack.

An attack is a frozen `PGD` value assembled from small parts, each a named type in this package:

- a projection (`LinfProjection`, `L2Projection`): the threat model, ball ∩ [0, 1];
- an init (`UniformInit`, `ZeroInit`): the starting point;
- an optimizer (`SignGradient`, `NormalizedGradient`, `Adam`) with a step-size schedule (`Constant`,
  `PiecewiseConstant`): the ascent step;
- a loss (`kl_to_target`, `cross_entropy`, `margin`): per-example, to be maximised.

Usage::

    import tensorflow as tf
    from tfrobust import attacks

    # The configured attacks the rest of tfrobust uses (built once, never mutated):
    train_attack = attacks.trades_attack("linf", 8 / 255)     # 10 Adam steps on KL(clean ‖ adv)
    select_attack = attacks.pgd40_attack("linf", 8 / 255)     # margin loss, 40 Adam steps, keep best

    # Or assembled from parts:
    attack = attacks.PGD(
        projection=attacks.LinfProjection(8 / 255),
        init=attacks.UniformInit("linf", 8 / 255),
        optimizer=attacks.SignGradient(2 / 255),
        loss=attacks.cross_entropy,
        num_steps=10)

    # model_fn maps [0, 1] NHWC float32 images to logits; the caller decides training flags/BatchNorm.
    model_fn = lambda images: model(images, training=False)
    seed = tf.constant([0, 42], tf.int32)                     # stateless: same seed, same result
    x_adv = select_attack(model_fn, images, labels_onehot, seed)
    # TRADES: the target is the (stop-gradient) clean softmax, or CutMix's soft labels.
    x_adv = train_attack(model_fn, images, tf.nn.softmax(model_fn(images)), seed)

Every returned point lies in the eps ball around the clean image and in [0, 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from tfrobust.attacks import rng
from tfrobust.attacks.common import ModelFn, as_seed, no_autograph, select_rows
from tfrobust.attacks.init import Init, UniformInit
from tfrobust.attacks.losses import LossFn, cross_entropy, kl_to_target, margin
from tfrobust.attacks.optimizers import Adam, NormalizedGradient, Optimizer, PiecewiseConstant, SignGradient
from tfrobust.attacks.projection import Projection, check_norm, make_projection
from tfrobust.errors import UserError
from tfrobust.threat_model import TRAIN_NORMS

OPTIMIZERS = ("adam", "sign")


@dataclasses.dataclass(frozen=True)
class PGD:
    """Projected gradient ascent on a per-example loss (Madry et al. 2018, eq. 2).

    x_0 = P(init(x)); for k < num_steps: g_k = ∇_x Σ_b loss(model_fn(x_k), target)_b,
    x_{k+1} = P(optimizer step from x_k along g_k), with P the projection onto ball ∩ [0, 1].

    - The loss is summed, not averaged, over the batch, so each example's gradient, and hence its
      adversarial point, does not depend on the batch size (the reference; docs/method.md, "Inner
      maximisation"). This holds as long as `model_fn` treats examples independently (e.g. not BatchNorm
      with batch statistics).
    - `keep_best=True` (evaluation) returns, per example, the iterate with the highest loss among
      x_0 … x_num_steps: the losses of x_0 … x_{N−1} come free with their gradients, x_N costs one extra
      forward pass. `keep_best=False` (training) returns x_N.
    - The loop is a `tf.while_loop`, so the traced graph does not grow with `num_steps`.

    Example::

        import tensorflow as tf
        from tfrobust import attacks

        attack = attacks.PGD(
            projection=attacks.LinfProjection(8 / 255),
            init=attacks.UniformInit("linf", 8 / 255),
            optimizer=attacks.SignGradient(attacks.PiecewiseConstant((10,), (2 / 255, 0.5 / 255))),
            loss=attacks.margin,
            num_steps=20,
            keep_best=True)
        model_fn = lambda x: model(x, training=False)          # [0, 1] images -> logits
        x_adv = attack(model_fn, images, labels, tf.constant([0, 0]))  # labels: class ids or one-hot
    """

    projection: Projection
    init: Init
    optimizer: Optimizer
    loss: LossFn
    num_steps: int
    keep_best: bool = False
    # Unroll the steps in Python instead of a tf.while_loop. Needed when model_fn synchronises across
    # replicas (synchronised BatchNorm under tf.distribute: no all-reduce inside control flow).
    unroll: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.num_steps, int) or self.num_steps < 0:
            raise UserError(f"num_steps must be a non-negative int, got {self.num_steps!r}")
        init_norm, init_eps = getattr(self.init, "norm", None), getattr(self.init, "eps", None)
        if init_norm is not None and (init_norm, init_eps) != (self.projection.norm, self.projection.eps):
            # A start outside the threat model would be silently projected; a mismatch is a config bug.
            raise UserError(
                f"init ({init_norm}, eps={init_eps}) does not match the projection "
                f"({self.projection.norm}, eps={self.projection.eps})"
            )

    @no_autograph
    def __call__(self, model_fn: ModelFn, x: tf.Tensor, target: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Adversarial images for clean images `x` ([B, H, W, C] float32 in [0, 1]).

        Args:
          model_fn: images -> logits [B, K].
          x: clean images.
          target: what the loss compares the logits with: one-hot/soft labels [B, K], integer labels [B], or
            target probabilities (TRADES). Treated as a constant.
          seed: int tensor of shape [2] for the stateless random start.
        """
        x = tf.stop_gradient(tf.convert_to_tensor(x, tf.float32))
        target = tf.stop_gradient(tf.convert_to_tensor(target))
        seed = as_seed(seed)
        # A derived sub-seed, so the start is not the stream a caller gets from `seed` itself.
        init_seed = rng.split(seed, 1)[0]
        x_start = self.projection.project(self.init(x, init_seed), x)

        def loss_and_grad(x_adv: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # Only the input gradient is needed: do not record the model's variables on the tape.
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x_adv)
                losses = self.loss(model_fn(x_adv), target)
                total = tf.reduce_sum(losses)
            # ZERO: a model whose output ignores some input gives a zero step, not a None crash.
            grad = tape.gradient(total, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return losses, grad

        def keep_better(x_adv, losses, best_x, best_loss):
            # Strict '>': ties keep the earlier point; NaN losses never replace a point.
            improved = losses > best_loss
            best_x = select_rows(improved, x_adv, best_x)
            return best_x, tf.where(improved, losses, best_loss)

        def cond(step, *_):
            return step < self.num_steps

        def body(step, x_adv, opt_state, *best):
            losses, grad = loss_and_grad(x_adv)
            x_next, opt_state = self.optimizer.update(x_adv, grad, opt_state, step)
            x_next = self.projection.project(x_next, x)
            if self.keep_best:
                best = keep_better(x_adv, losses, *best)
            return (step + 1, x_next, opt_state, *best)

        loop_vars = (tf.constant(0, tf.int32), x_start, self.optimizer.init(x_start))
        if self.keep_best:
            minus_inf = tf.fill(tf.shape(x_start)[:1], tf.constant(-float("inf"), tf.float32))
            loop_vars += (x_start, minus_inf)
        if self.unroll:
            result = loop_vars
            for _ in range(self.num_steps):
                result = body(*result)
        else:
            result = tf.while_loop(cond, body, loop_vars, maximum_iterations=self.num_steps)
        x_last = result[1]
        if not self.keep_best:
            return x_last
        best_x, best_loss = result[3], result[4]
        last_losses = self.loss(model_fn(x_last), target)
        best_x, _ = keep_better(x_last, last_losses, best_x, best_loss)
        return best_x


def check_pgd_norm(norm: str, owner: str = "PGD") -> str:
    """`norm` when the PGD step rules cover it (Linf, L2: `TRAIN_NORMS`), else `UserError`.

    L1 has no step rule here: its attack is APGD-L1 (`apgd.py`), with sparse sign steps the L1 geometry
    needs; an L2-normalised step projected onto the L1 ball would be a silently weak attack.
    """
    if check_norm(norm) not in TRAIN_NORMS:
        raise UserError(
            f"{owner} implements {', '.join(TRAIN_NORMS)}, not {norm}: the L1 threat model is "
            "attacked by APGD-L1 (tfrobust eval --attack aa, or apgd-ce)"
        )
    return norm


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise UserError(f"num_steps must be a positive int, got {num_steps!r}")


def _default_optimizer(norm: str, optimizer: str | None) -> str:
    """None -> "adam" for linf (the reference), "sign" (normalised-gradient steps) for l2 (docs/method.md,
    "Inner maximisation")."""
    if optimizer is None:
        return "adam" if norm == "linf" else "sign"
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown attack optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    return optimizer


def _training_optimizer(norm: str, eps: float, num_steps: int, optimizer: str | None) -> Optimizer:
    """The inner-maximisation step rule shared by TRADES and PGD-AT.

    adam: lr 0.1 for the first half of the steps (rounded up), then 0.01 — the reference's {5: 0.1} for 10
    steps. sign: Linf steps of eps/4 (the paper's sign-PGD alternative); L2 normalised-gradient steps of
    2.5·eps/num_steps (Madry et al. 2018's rule; eps/4 for 10 steps too).
    """
    if _default_optimizer(norm, optimizer) == "adam":
        return Adam(PiecewiseConstant(((num_steps + 1) // 2,), (0.1, 0.01)))
    if norm == "linf":
        return SignGradient(eps / 4)
    return NormalizedGradient(2.5 * eps / num_steps)


def trades_attack(norm: str, eps: float, num_steps: int = 10, optimizer: str | None = None) -> PGD:
    """TRADES inner maximisation (Zhang et al. 2019; as configured by Rebuffi et al. 2021, docs/method.md,
    "Inner maximisation").

    Maximises KL(target ‖ softmax(model(x'))) from a uniform random start; the caller passes as target the
    stop-gradient clean softmax (or the CutMix soft labels). `optimizer` is "adam" (default for linf) or
    "sign" (default for l2; means normalised-gradient steps for l2). Returns the last iterate.

    Example::

        attack = attacks.trades_attack("linf", 8 / 255)        # 10 Adam steps on the KL
        model_fn = lambda x: model(x, training=False)
        clean_probs = tf.nn.softmax(model_fn(images))          # the target: the clean softmax
        x_adv = attack(model_fn, images, clean_probs, tf.constant([0, 0]))
    """
    check_pgd_norm(norm, "TRADES' inner maximisation")
    _check_steps(num_steps)
    return PGD(
        make_projection(norm, eps),
        UniformInit(norm, eps),
        _training_optimizer(norm, eps, num_steps, optimizer),
        kl_to_target,
        num_steps,
    )


def pgd_at_attack(norm: str, eps: float, num_steps: int = 10, optimizer: str | None = None) -> PGD:
    """PGD adversarial training's inner maximisation (Madry et al. 2018): cross-entropy against the (hard or
    soft) labels, otherwise as `trades_attack`.

    Example::

        attack = attacks.pgd_at_attack("l2", 128 / 255, num_steps=10)   # normalised-gradient steps for L2
        x_adv = attack(lambda x: model(x, training=False), images, labels, tf.constant([0, 0]))
    """
    check_pgd_norm(norm, "PGD-AT's inner maximisation")
    _check_steps(num_steps)
    return PGD(
        make_projection(norm, eps),
        UniformInit(norm, eps),
        _training_optimizer(norm, eps, num_steps, optimizer),
        cross_entropy,
        num_steps,
    )


def pgd40_attack(norm: str, eps: float, optimizer: str | None = None) -> PGD:
    """The model-selection attack (docs/method.md, "Model selection"; the reference's eval attack): margin loss,
    40 steps from a uniform random start, keeping each example's best iterate.

    adam (default for linf): lr 0.1, ×0.1 at step 20 and ×0.01 at step 30. sign (default for l2; a choice,
    the reference is Linf-only): Linf sign steps / L2 normalised-gradient steps of eps/4 (the paper's sign-PGD
    step), with the same ×0.1 at step 20 and ×0.01 at step 30.

    Why not Adam for L2: elementwise Adam's step is ≈ lr·sign(g) whatever the gradient's scale, so on the L2
    sphere it settles on the direction sign(g), not g/‖g‖₂ (the L2 steepest-ascent direction); on a linear
    model it stops a few percent short of the worst case. Normalised-gradient steps converge to g/‖g‖₂, and
    the large first step (eps/4, rather than Madry's constant 2.5·eps/40) lets 20 steps get there.

    Example::

        attack = attacks.pgd40_attack("linf", 8 / 255)
        x_adv = attack(lambda x: model(x, training=False), images, labels, tf.constant([0, 0]))
        robust = tf.argmax(model(x_adv, training=False), axis=-1).numpy() == labels   # labels: class ids
    """
    check_pgd_norm(norm, "PGD-40")
    num_steps = 40
    if _default_optimizer(norm, optimizer) == "adam":
        opt = Adam(PiecewiseConstant((20, 30), (0.1, 0.01, 0.001)))
    else:
        steps = PiecewiseConstant((20, 30), (eps / 4, eps / 40, eps / 400))
        opt = SignGradient(steps) if norm == "linf" else NormalizedGradient(steps)
    return PGD(make_projection(norm, eps), UniformInit(norm, eps), opt, margin, num_steps, keep_best=True)


# name -> factory(norm, eps, ...) for configuration and the CLI.
ATTACKS: dict[str, Callable[..., PGD]] = {
    "trades": trades_attack,
    "pgd_at": pgd_at_attack,
    "pgd40": pgd40_attack,
}
