"""The threat model in one place: the norms, their default radii, the checks of a radius, and how an
evaluation picks its threat model from the options given and the model's metadata.

A threat model is a norm and a radius eps on images in [0, 1]: the adversary may move an image anywhere in
{x' : ‖x' − x‖_p ≤ eps} ∩ [0, 1]^d (Rebuffi et al. 2021, Section 2: S_p = {δ : ‖δ‖_p ≤ ε}; Madry et al.
2018). The default radii are the paper's (its abstract: Linf 8/255 and L2 128/255 on CIFAR-10;
docs/method.md, "Inner maximisation", row eps) and, for L1, the radius 12 of Croce & Hein 2021 ("Mind the
box: l1-APGD for sparse adversarial attacks on image classifiers", CIFAR-10), the one AutoAttack's L1
version is run at (docs/method.md, "Evaluation").

L1 is a threat model of the evaluation only: training's inner maximisation implements Linf and L2
(`TRAIN_NORMS`).

This module is the lowest layer of tfrobust next to `tfrobust.errors`: it imports no TensorFlow, so the
configuration (`tfrobust.config`), the importer, the attacks and the evaluation all take their norms,
defaults and checks from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tfrobust.errors import UserError

NORMS = ("linf", "l2", "l1")
# The norms training can use (config.TrainConfig.norm): the inner maximisation has no L1 step rule.
TRAIN_NORMS = ("linf", "l2")
# The paper's radii (Rebuffi et al. 2021, abstract); L1: Croce & Hein 2021's CIFAR-10 radius.
DEFAULT_EPS = {"linf": 8.0 / 255.0, "l2": 128.0 / 255.0, "l1": 12.0}
# Largest radius an option may ask for. Linf: at 1 the ball already holds the whole [0, 1] box. L2: 64 is
# past the diagonal of a 32x32x3 box (sqrt(3072) = 55.4), so it admits every meaningful CIFAR radius while
# catching a radius given in pixel units by mistake. L1: 3072 is the L1 diameter of a 32x32x3 box (every
# coordinate moved by 1); a larger radius holds the whole box of any 32x32 colour image.
MAX_EPS = {"linf": 1.0, "l2": 64.0, "l1": 3072.0}


def check_norm(norm: str) -> str:
    """Returns `norm` when it names a supported threat model, else raises `UserError`."""
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}; choose from: {', '.join(NORMS)}")
    return norm


def check_eps(norm: str, eps: float) -> float:
    """`eps` as a float when 0 < eps <= MAX_EPS[norm] (a radius on [0, 1] images), else `UserError`.

    The range check of every user-given radius (training, evaluation, import). A Linf radius above 1 is
    most likely one in pixel units (8 for 8/255): the message says so.
    """
    eps = float(eps)
    limit = MAX_EPS[check_norm(norm)]
    if not 0.0 < eps <= limit:  # also rejects NaN
        raise UserError(
            f"--eps {eps:g} is out of range for {norm}: images are in [0, 1], use 0 < eps <= {limit:g}"
            + (" (did you mean a value like 8/255 = 0.0314?)" if norm == "linf" and eps > 1 else "")
        )
    return eps


def check_radius(eps: float) -> float:
    """`eps` when it is a non-negative number, else `UserError`: the argument check of an attack's radius.

    Looser than `check_eps`: an attack at radius 0 returns the clean image (the audit's eps sweep starts at
    0 × eps), and the attacks do not bound the radius from above.
    """
    if not eps >= 0:  # also rejects NaN
        raise UserError(f"eps must be a non-negative number, got {eps!r}")
    return eps


def resolve(norm: str, eps: float | None = None) -> tuple[str, float]:
    """(norm, eps) checked, eps defaulting to the norm's `DEFAULT_EPS`."""
    check_norm(norm)
    return norm, check_eps(norm, DEFAULT_EPS[norm] if eps is None else eps)


def resolve_threat_model(
    meta: Mapping[str, Any], dataset: str | None, norm: str | None, eps: float | None
) -> tuple[str, str, float, dict]:
    """(dataset, norm, eps, training config) of an evaluation: the options given, else the model's metadata.

    `meta` is an exported model's metadata (`tfrobust.export`: "dataset", "norm", "eps",
    "training_config"). A norm given without an eps takes that norm's default radius (the metadata's eps
    belongs to the training norm); with neither, the metadata's norm and eps, else Linf 8/255. Raises
    `UserError` for a model without metadata and no dataset, an unknown norm, or an eps out of range
    (`check_eps`).
    """
    training = meta.get("training_config", {})
    dataset = dataset or meta.get("dataset", {}).get("name")
    if dataset is None:
        raise UserError("this model carries no tfrobust metadata: give --dataset (and --norm/--eps)")
    norm, eps = model_threat_model(meta, norm, eps)
    return dataset, norm, eps, training


def model_threat_model(meta: Mapping[str, Any], norm: str | None, eps: float | None) -> tuple[str, float]:
    """(norm, eps) checked: the ones given, else the model's metadata ("norm", "eps"), else Linf 8/255.

    A norm given without an eps takes that norm's default radius (the metadata's eps belongs to the
    training norm). The threat model of `resolve_threat_model` and of `tfrobust.evaluation.evaluate`, which
    takes its data from the caller rather than from the metadata's dataset.
    """
    if eps is None and norm is None:
        eps = meta.get("eps")
    return resolve(norm or meta.get("norm", "linf"), eps)
