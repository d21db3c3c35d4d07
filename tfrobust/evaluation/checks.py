"""Checks against a false sense of security, and what the CPU kernels of this process are.

AutoAttack's `checks.py` (fra31/auto-attack), reported as warnings in the evaluation's result: a model
whose outputs differ between identical calls (a randomised defence: a deterministic attack evaluation
over-estimates its robustness, `check_randomized`); Square (gradient-free) breaking more than 0.2% of the
points the gradient attacks of the same cascade left robust (gradient masking, `check_square`). tfrobust
adds a randomised model whose random draws start over in every new `tf.function` (the clean pass, the
attacks and the re-verification would share draws instead of making independent ones,
`check_random_streams`). An attack that runs fewer targets than configured because the model has few
classes reports it itself (its `notes`).

`onednn_enabled` and `onednn_warning` say whether TensorFlow runs its oneDNN CPU kernels, which decides the
CPU speed of every attack; the report records it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfrobust.evaluation.cascades import GRADIENT_STAGES, LogitsFn

# Square lowering robust accuracy by more than this fraction of the examples triggers the warning (the
# reference's alpha = 0.002, i.e. 0.2 points).
SQUARE_MASKING_THRESHOLD = 0.002
# Largest difference of L2-normalised outputs between identical calls still taken as deterministic (the
# reference's `check_randomized`, alpha = 1e-4).
RANDOMNESS_TOLERANCE = 1e-4


def check_randomized(predict: LogitsFn, images: tf.Tensor, first: np.ndarray, calls: int = 4) -> str | None:
    """A warning when the model's outputs change between identical calls, else None.

    AutoAttack's `check_randomized` (fra31/auto-attack, `autoattack/checks.py`): outputs are compared
    after L2 normalisation (so the check ignores the logits' scale), against `RANDOMNESS_TOLERANCE`; any
    change of the predicted classes counts too. `first` is the output of one call already made; `calls`
    more are made (the reference makes 5 in all). A randomised defence (dropout or noise at inference)
    makes a deterministic attack evaluation meaningless: its robustness must be evaluated with EOT, and
    the warning names AutoAttack's version for it, `--attack aa-rand` (the reference's message says
    `version="rand"`).
    """

    def normalised(out: np.ndarray) -> np.ndarray:
        out = out.astype(np.float64)
        return out / (np.linalg.norm(out, axis=-1, keepdims=True) + 1e-10)

    outputs = [np.asarray(first)] + [np.asarray(predict(images)) for _ in range(calls)]
    reference = normalised(outputs[0])
    differ = max(float(np.linalg.norm(normalised(o) - reference, axis=-1).max()) for o in outputs[1:])
    classes_change = any(np.any(o.argmax(-1) != outputs[0].argmax(-1)) for o in outputs[1:])
    if differ > RANDOMNESS_TOLERANCE or classes_change:
        return (
            f"the model's outputs differ between identical calls (largest difference of normalised outputs "
            f"{differ:.3g}): it looks like a randomised defence (dropout/noise at inference?); this "
            "deterministic evaluation is not reliable for it: evaluate it with `--attack aa-rand` "
            "(AutoAttack's rand version: APGD-CE and APGD-DLR with expectation over transformation, 20 "
            'calls per step; Python: attack="aa-rand")'
        )
    return None


def check_random_streams(logits_fn: LogitsFn, images: tf.Tensor) -> str | None:
    """A warning when a randomised model's draws start over in each new `tf.function`, else None.

    The evaluation runs the model in several functions (the clean pass, each attack, the re-verification),
    and AutoAttack's rand version assumes that every call is an independent draw (the reference's PyTorch
    models draw from one global generator). TensorFlow's op-seeded random ops (`tf.random.normal` and the
    like, outside a `tf.random.Generator`) break that under a global seed (`tf.random.set_seed`,
    `keras.utils.set_random_seed`): the first random op of every function gets the same seed and starts
    the same stream, so an attack's draws can repeat those of the clean pass or of the verification instead
    of being independent of them. The sign: two calls in one function differ, and the first call of a
    second function equals the first call of the first. A `tf.random.Generator` or Keras's `SeedGenerator`
    (one state shared by every function) passes.

    Example::

        gen = tf.random.Generator.from_seed(0)
        noisy = lambda x: model(x + 0.03 * gen.normal(tf.shape(x)))   # independent draws: None
        check_random_streams(noisy, x_test[:8])
    """
    first, second = tf.function(logits_fn), tf.function(logits_fn)
    a = np.asarray(first(images))
    if np.array_equal(a, np.asarray(first(images))):
        return None  # deterministic within a function: nothing to repeat
    if not np.array_equal(a, np.asarray(second(images))):
        return None
    return (
        "the model's random draws start over in every new tf.function (random ops seeded from the global "
        "seed of tf.random.set_seed): the clean pass, the attacks and the re-verification see the same noise "
        "sequence instead of the independent draws AutoAttack's rand version assumes; draw the "
        "randomness from a tf.random.Generator or keras.random.SeedGenerator (one state for every function)"
    )


def check_square(stage_names: Sequence[str], clean_accuracy: float, robust_after_stage: Sequence[float]) -> str | None:
    """A warning when Square lowered robust accuracy below what the gradient attacks before it reached.

    AutoAttack's `check_square_sr`: in a cascade Square attacks only the points every gradient attack
    left robust, so whatever it breaks, they missed; more than `SQUARE_MASKING_THRESHOLD` (0.2 points) of
    the examples suggests gradient masking, and the robust accuracy of the gradient attacks alone is not
    to be trusted.
    """
    for index, name in enumerate(stage_names):
        if name != "square" or not any(s in GRADIENT_STAGES for s in stage_names[:index]):
            continue
        before = robust_after_stage[index - 1] if index else clean_accuracy
        drop = before - robust_after_stage[index]
        if drop > SQUARE_MASKING_THRESHOLD:
            return (
                f"Square (gradient-free) lowered the robust accuracy by {100 * drop:.2f} points after the "
                "gradient attacks: a sign of gradient masking; the evaluation may be unreliable, consider "
                "more Square queries/restarts or an adaptive attack"
            )
    return None


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (None where TF cannot say).

    It decides the CPU speed of every attack (a WRN's forward + input gradient ran 1.7x faster with it on
    a 2-vCPU AMD EPYC Zen3, benchmarks/README.md), and `import tfrobust` can only turn it on
    when imported before TensorFlow; the report records it so that a timing can be explained.
    """
    try:
        from tensorflow.python.util import (
            _pywrap_util_port,  # private, hence the fallback
        )

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def onednn_warning() -> str | None:
    """A warning when TF runs on CPU without oneDNN only because it was imported before tfrobust.

    The silent case this catches: a script that imports TensorFlow first gets TF's slower default kernels
    on CPUs without AVX512-VNNI (the benchmark that first compared tfrobust with the reference did). An
    explicit TF_ENABLE_ONEDNN_OPTS=0, or a GPU, gets no warning.
    """
    import os

    if onednn_enabled() is not False or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return None
    if tf.config.list_physical_devices("GPU"):
        return None
    return (
        "TensorFlow runs without its oneDNN CPU kernels because it was imported before tfrobust: attacks "
        "may run ~1.7x slower; import tfrobust first, or set TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads"
    )
