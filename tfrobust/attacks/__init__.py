"""Adversarial attacks built from small composable parts (projection, init, optimizer, loss).

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
    L1Projection,
    L2Projection,
    LinfProjection,
    Projection,
    clip_to_box,
    make_projection,
    norm_of,
)

__all__ = [
    "ATTACKS", "LOSSES", "PROJECTIONS",
    "PGD", "pgd40_attack", "pgd_at_attack", "trades_attack", "ModelFn",
    "LinfProjection", "L2Projection", "L1Projection", "Projection", "make_projection", "norm_of", "clip_to_box",
    "Init", "UniformInit", "ZeroInit",
    "Optimizer", "SignGradient", "NormalizedGradient", "Adam", "Schedule", "Constant", "PiecewiseConstant",
    "LossFn", "kl_to_target", "cross_entropy", "margin",
]
