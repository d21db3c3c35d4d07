"""The evaluation's attack registry: stages (one configured attack each) and cascades (stages in order).

Stages are named entries of `STAGES` (a plain dict: name -> factory(norm, eps) of a frozen attack);
cascades (`CASCADES`, the CLI's --attack) are tuples of stage names: `aa` (AutoAttack standard), `aa+mt`
(the paper's), `mt` and each single attack; AutoAttack's `aa-plus` and `aa-rand` and the stages they
configure their own way are the block at the end (the custom lists: `versions.resolve_attack`).

The registry lives in the evaluation package, not in `tfrobust.attacks`: the attacks are building blocks
with every knob open (iterations, restarts, targets, losses), while a stage is one evaluation's choice of
those knobs (AutoAttack's standard version, the paper's AA+MT) and a cascade is an evaluation protocol;
only the evaluation (`engine.Evaluator`, the gradient-masking check in `checks.py`) and the commands built
on it use them, and training's attacks have their own registry (`tfrobust.attacks.pgd.ATTACKS`).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfrobust.attacks.apgd import APGD
from tfrobust.attacks.fab import FAB, FABTargeted
from tfrobust.attacks.multitargeted import MultiTargeted
from tfrobust.attacks.pgd import pgd40_attack
from tfrobust.attacks.square import Square

# Images [B, H, W, C] in [0, 1] -> logits [B, classes], in inference mode.
LogitsFn = Callable[[tf.Tensor], tf.Tensor]
# An attack: (model_fn, images, one-hot labels, seed) -> adversarial images.
StageAttack = Callable[[LogitsFn, tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]

# Stage name -> factory(norm, eps) returning a configured attack: a frozen dataclass, built once per
# Evaluator and never mutated. The configurations are AutoAttack's standard version (Croce & Hein 2020;
# github.com/fra31/auto-attack, `autoattack.py`, version="standard") and the paper's AA+MT (docs/method.md,
# "Cascades").
STAGES: dict[str, Callable[[str, float], StageAttack]] = {
    # Model selection's attack (docs/method.md, "Model selection"): margin loss, Adam 0.1 (x0.1 at 20, x0.01
    # at 30), 40 steps.
    "pgd40": pgd40_attack,
    # AutoAttack standard: APGD-CE 1 restart x 100; APGD-T 9 targets x 1 restart x 100; FAB-T 9 targets x 100;
    # Square 5000 queries. L1 (`set_version("standard")` with norm "L1"): APGD-CE 5 restarts and APGD-T 5
    # targets, both with the 3·eps, 2·eps, eps schedule (`use_largereps`); FAB-T and Square as above.
    "apgd-ce": lambda norm, eps: APGD(
        norm, eps, "ce", n_iter=100, n_restarts=5 if norm == "l1" else 1, use_largereps=norm == "l1"
    ),
    "apgd-t": lambda norm, eps: APGD(
        norm,
        eps,
        "dlr-targeted",
        n_iter=100,
        n_restarts=1,
        n_target_classes=5 if norm == "l1" else 9,
        use_largereps=norm == "l1",
    ),
    "apgd-dlr": lambda norm, eps: APGD(norm, eps, "dlr", n_iter=100, n_restarts=1, use_largereps=norm == "l1"),
    "fab-t": lambda norm, eps: FABTargeted(norm, eps, n_iter=100, n_target_classes=9, n_restarts=1),
    "square": lambda norm, eps: Square(norm, eps, n_queries=5000, n_restarts=1),
    # The paper's AA+MT: APGD-CE 5 x 100, APGD-DLR 5 x 100, MultiTargeted 10 restarts x 200 steps (top-9).
    "apgd-ce-5x100": lambda norm, eps: APGD(norm, eps, "ce", n_iter=100, n_restarts=5),
    "apgd-dlr-5x100": lambda norm, eps: APGD(norm, eps, "dlr", n_iter=100, n_restarts=5),
    "mt": lambda norm, eps: MultiTargeted(norm, eps, n_restarts=10, n_steps=200, n_target_classes=9),
}

# Stages that follow the model's gradient; Square breaking points they left robust suggests gradient
# masking (AutoAttack's `check_square_sr`).
GRADIENT_STAGES = frozenset(
    {"pgd40", "apgd-ce", "apgd-t", "apgd-dlr", "fab-t", "apgd-ce-5x100", "apgd-dlr-5x100", "mt"}
)

# A cascade name (the CLI's --attack) -> its stages, in order.
CASCADES: dict[str, tuple[str, ...]] = {
    # AutoAttack, standard version (docs/method.md, "Cascades"): robust accuracy after each of the four attacks;
    # with norm "l1" the reference's L1 standard version (the "apgd-ce" and "apgd-t" stages above).
    "aa": ("apgd-ce", "apgd-t", "fab-t", "square"),
    # The paper's evaluation (Rebuffi et al. 2021, "AA+MT").
    "aa+mt": ("apgd-ce-5x100", "apgd-dlr-5x100", "mt"),
    "mt": ("mt",),
    "apgd-ce": ("apgd-ce",),
    "apgd-t": ("apgd-t",),
    "apgd-dlr": ("apgd-dlr",),
    "fab-t": ("fab-t",),
    "square": ("square",),
    "pgd40": ("pgd40",),
}


# ---- AutoAttack's versions: plus, rand, and the attacks a custom list names ----------------------------------
# The reference's `set_version` (fra31/auto-attack, `autoattack/autoattack.py`) configures each attack per
# version; a stage named plainly ("apgd-ce", "fab", ...) is the attack as the standard version configures it,
# a stage "NAME@VERSION" the attack as VERSION configures it (docs/method.md, "AutoAttack versions").
# None of these depends on the norm: plus and rand set the same counts for Linf, L2 and L1 (and never the L1
# `use_largereps` schedule); the reference warns that plus with L1 is untested (`VERSION_NORM_NOTES`).
STAGES.update(
    {
        # Untargeted FAB; standard's configuration (`fab.n_restarts = 1`), 100 iterations.
        "fab": lambda norm, eps: FAB(norm, eps, n_iter=100, n_restarts=1),
        # plus: `apgd.n_restarts = 5` (APGD-CE and APGD-DLR), `fab.n_restarts = 5`, APGD-T 9 targets x 1 restart.
        "apgd-ce@plus": lambda norm, eps: APGD(norm, eps, "ce", n_iter=100, n_restarts=5),
        "apgd-dlr@plus": lambda norm, eps: APGD(norm, eps, "dlr", n_iter=100, n_restarts=5),
        "fab@plus": lambda norm, eps: FAB(norm, eps, n_iter=100, n_restarts=5),
        "apgd-t@plus": lambda norm, eps: APGD(norm, eps, "dlr-targeted", n_iter=100, n_restarts=1, n_target_classes=9),
        # rand: `apgd.n_restarts = 1`, `apgd.eot_iter = 20` (APGD-CE and APGD-DLR).
        "apgd-ce@rand": lambda norm, eps: APGD(norm, eps, "ce", n_iter=100, n_restarts=1, eot_iter=20),
        "apgd-dlr@rand": lambda norm, eps: APGD(norm, eps, "dlr", n_iter=100, n_restarts=1, eot_iter=20),
    }
)
GRADIENT_STAGES = GRADIENT_STAGES | {
    "fab",
    "apgd-ce@plus",
    "apgd-dlr@plus",
    "fab@plus",
    "apgd-t@plus",
    "apgd-ce@rand",
    "apgd-dlr@rand",
}
CASCADES.update(
    {
        # plus: APGD-CE, APGD-DLR, FAB, Square, APGD-T, FAB-T, in the reference's order (`attacks_to_run`).
        # Square and FAB-T are configured as in the standard version (5000 queries; 9 targets x 1 restart: the
        # reference's `fab-t` branch sets `fab.n_restarts = 1`).
        "aa-plus": ("apgd-ce@plus", "apgd-dlr@plus", "fab@plus", "square", "apgd-t@plus", "fab-t"),
        # rand: APGD-CE and APGD-DLR, 1 restart x 100 iterations, each gradient averaged over 20 calls (EOT).
        "aa-rand": ("apgd-ce@rand", "apgd-dlr@rand"),
        "fab": ("fab",),
    }
)
# The reference's name of each stage's attack (its `attacks_to_run` entries), for the report.
REFERENCE_ATTACKS = {
    "apgd-ce": "apgd-ce",
    "apgd-t": "apgd-t",
    "apgd-dlr": "apgd-dlr",
    "fab": "fab",
    "fab-t": "fab-t",
    "square": "square",
    "apgd-ce@plus": "apgd-ce",
    "apgd-dlr@plus": "apgd-dlr",
    "fab@plus": "fab",
    "apgd-t@plus": "apgd-t",
    "apgd-ce@rand": "apgd-ce",
    "apgd-dlr@rand": "apgd-dlr",
}
# ---- end of AutoAttack's versions ----------------------------------------------------------------------------
