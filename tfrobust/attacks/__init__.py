"""Adversarial attacks built from small composable parts (projection, init, optimizer, loss).

The evaluation's attacks run as plain functions on a Keras model or any differentiable callable: AutoAttack's
`apgd_ce`, `apgd_t` (`APGD`), `FABTargeted`, `Square`, untargeted `FAB` (AutoAttack plus), and the paper's
`apgd_dlr` and `MultiTargeted`, each a frozen value called as `attack(model_fn, images, labels, seed)`
(labels: class ids or one-hot). The whole cascade, every success re-verified: `tfrobust.evaluation.evaluate`
and `autoattack`.

`PGD` is the one PGD implementation used both by training's inner maximisation (`trades_attack`,
`pgd_at_attack`) and by model selection (`pgd40_attack`); it is assembled from parts, as the attacks of
DeepMind's `adversarial_robustness/jax/attacks.py` are: a projection (`LinfProjection`, `L2Projection`,
`make_projection`; any `Projection`), an init (`UniformInit`, `ZeroInit`; any `Init`), an optimizer
(`SignGradient`, `NormalizedGradient`, `Adam`; any `Optimizer`) with a step-size schedule (`Constant`,
`PiecewiseConstant`), and a per-example loss to maximise (`kl_to_target`, `cross_entropy`, `margin`).
`norm_of` measures perturbations. Conventions: images float32 NHWC in [0, 1]; `model_fn` maps images to
logits; randomness is stateless (`seed`: int tensor of shape [2]).

The attacks' loops are `tf.while_loop`s, which run op by op when called eagerly: wrap an attack in
`tf.function` (as `tfrobust.evaluate` does) to run it as one graph, traced once per input shape and
`model_fn`.

Registries and type aliases (public names without a docstring of their own):

- `ATTACKS`: {"trades": trades_attack, "pgd_at": pgd_at_attack, "pgd40": pgd40_attack}, each built as
  `ATTACKS[name](norm, eps)`;
- `LOSSES`: {"kl": kl_to_target, "cross_entropy": cross_entropy, "margin": margin};
- `PROJECTIONS`: {"linf": LinfProjection, "l2": L2Projection}, each built as `PROJECTIONS[norm](eps)`;
- `ModelFn`: `Callable[[tf.Tensor], tf.Tensor]`, images [B, H, W, C] -> logits [B, K]; the caller fixes
  training flags and BatchNorm (e.g. `lambda x: model(x, training=False)`);
- `LossFn`: `Callable[[tf.Tensor, tf.Tensor], tf.Tensor]`, (logits [B, K], target) -> per-example loss [B],
  to be maximised; the target is one-hot or soft labels [B, K], class ids [B], or probabilities;
- `Schedule`: `Callable[[tf.Tensor], tf.Tensor]`, step (int32 scalar, 0-based) -> float32 scalar; a plain
  float is a constant schedule wherever a schedule is taken.

The plumbing the attacks share (seeds, target classes, configuration checks, the loop of runs over target
classes and restarts) is internal and stays in its modules: `common.py`, `rng.py` and the attacks' own
helpers (`apgd.checkpoints`, `square.p_schedule`, `projection.clip_to_box`, ...).

Example::

    import tensorflow as tf
    from tfrobust import attacks

    model_fn = lambda x: model(x, training=False)       # [0, 1] images -> logits
    apgd_ce = tf.function(attacks.apgd_ce("linf", 8 / 255))
    x_adv = apgd_ce(model_fn, images, labels, tf.constant([0, 0]))

    attack = attacks.PGD(                               # assembled from parts
        projection=attacks.make_projection("linf", 8 / 255),
        init=attacks.UniformInit("linf", 8 / 255),
        optimizer=attacks.Adam(attacks.PiecewiseConstant((20, 30), (0.1, 0.01, 0.001))),
        loss=attacks.LOSSES["margin"],
        num_steps=40,
        keep_best=True)
    x_adv = attack(model_fn, images, labels, tf.constant([0, 1]))
    assert float(tf.reduce_max(attacks.norm_of(x_adv - images, "linf"))) <= 8 / 255 + 1e-6
"""

from tfrobust.attacks.apgd import APGD, apgd_ce, apgd_dlr, apgd_t
from tfrobust.attacks.common import ModelFn
from tfrobust.attacks.fab import FAB, FABTargeted
from tfrobust.attacks.init import Init, UniformInit, ZeroInit
from tfrobust.attacks.losses import LOSSES, LossFn, cross_entropy, kl_to_target, margin
from tfrobust.attacks.multitargeted import MultiTargeted
from tfrobust.attacks.optimizers import (
    Adam,
    Constant,
    NormalizedGradient,
    Optimizer,
    PiecewiseConstant,
    Schedule,
    SignGradient,
)
from tfrobust.attacks.pgd import ATTACKS, PGD, pgd40_attack, pgd_at_attack, trades_attack
from tfrobust.attacks.projection import (
    PROJECTIONS,
    L1Projection,
    L2Projection,
    LinfProjection,
    Projection,
    make_projection,
    norm_of,
)
from tfrobust.attacks.square import Square

__all__ = [
    "ATTACKS",
    "LOSSES",
    "PROJECTIONS",
    "PGD",
    "pgd40_attack",
    "pgd_at_attack",
    "trades_attack",
    "ModelFn",
    "LinfProjection",
    "L2Projection",
    "L1Projection",
    "Projection",
    "make_projection",
    "norm_of",
    "Init",
    "UniformInit",
    "ZeroInit",
    "Optimizer",
    "SignGradient",
    "NormalizedGradient",
    "Adam",
    "Schedule",
    "Constant",
    "PiecewiseConstant",
    "LossFn",
    "kl_to_target",
    "cross_entropy",
    "margin",
    "APGD",
    "apgd_ce",
    "apgd_dlr",
    "apgd_t",
    "FAB",
    "FABTargeted",
    "MultiTargeted",
    "Square",
]
