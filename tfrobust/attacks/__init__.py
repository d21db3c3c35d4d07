"""Adversarial attacks built from small composable parts (projection, init, optimizer, loss).

The evaluation's attacks run as plain functions on a Keras model or any differentiable callable: AutoAttack's
`apgd_ce`, `apgd_t` (`APGD`), `FABTargeted`, `Square`, untargeted `FAB` (AutoAttack plus), and the paper's
`apgd_dlr` and `MultiTargeted`, each a frozen value called as `attack(model_fn, images, labels, seed)`
(labels: class ids or one-hot)::

    attack = attacks.apgd_ce("linf", 8 / 255)                        # 1 restart x 100 iterations
    x_adv = attack(lambda x: model(x, training=False), images, labels, tf.constant([0, 0]))

The whole cascade, every success re-verified: `tfrobust.evaluation.evaluate` and `autoattack`.
`pgd.py` holds the one PGD implementation used both by training's inner maximisation and by evaluation;
see its module docstring for usage. `common.py` holds what the attacks share (`ModelFn`, seeds, target
classes, configuration checks, the loop of runs over target classes and restarts). Conventions: images
float32 NHWC in [0, 1]; `model_fn` maps images to logits; randomness is stateless (`seed`: int tensor of
shape [2]).
"""

from tfrobust.attacks.common import ModelFn
from tfrobust.attacks.init import Init, UniformInit, ZeroInit
from tfrobust.attacks.losses import LOSSES, LossFn, cross_entropy, kl_to_target, margin
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
    L2Projection,
    LinfProjection,
    Projection,
    clip_to_box,
    make_projection,
    norm_of,
)
from tfrobust.attacks.apgd import APGD, apgd_ce, apgd_dlr, apgd_t
from tfrobust.attacks.fab import FAB, FABTargeted
from tfrobust.attacks.multitargeted import MultiTargeted
from tfrobust.attacks.square import Square

__all__ = [
    "ATTACKS", "LOSSES", "PROJECTIONS",
    "PGD", "pgd40_attack", "pgd_at_attack", "trades_attack", "ModelFn",
    "LinfProjection", "L2Projection", "Projection", "make_projection", "norm_of", "clip_to_box",
    "Init", "UniformInit", "ZeroInit",
    "Optimizer", "SignGradient", "NormalizedGradient", "Adam", "Schedule", "Constant", "PiecewiseConstant",
    "LossFn", "kl_to_target", "cross_entropy", "margin",
    "APGD", "apgd_ce", "apgd_dlr", "apgd_t", "FAB", "FABTargeted", "MultiTargeted", "Square",
]
