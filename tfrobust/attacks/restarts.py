"""Shared plumbing of the evaluation attacks (APGD, Square, MultiTargeted, FAB): labels, target classes,
and the loop of runs (restarts × targets) that attacks only the points no earlier run has broken.

Every evaluation attack follows the reference AutoAttack code (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", github.com/fra31/auto-attack):
a point that is misclassified on its clean input is never attacked; each run (a restart, or one target
class) starts again from the clean image and attacks only the points still robust; per example, the
first run that finds a misclassified point supplies the returned adversarial example; points never
broken come back as their clean image. Running only on the survivors is what makes a cascade cheap: on a
robust model most points fall in the first run.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from tfrobust.attacks import rng
from tfrobust.attacks.projection import norm_of
from tfrobust.errors import UserError

# (run index r [int32 scalar], clean images of the survivors [b, ...], their labels [b] int32, the
#  targets of the survivors [b, T] int32, seed [2]) -> (adversarial images [b, ...], broken [b] bool)
RunFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def as_seed(seed: tf.Tensor) -> tf.Tensor:
    """An int32/int64 [2] seed tensor for the `tf.random.stateless_*` functions."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return seed


def class_ids(labels: tf.Tensor) -> tf.Tensor:
    """int32 [B] class ids from one-hot/soft labels [B, K] (argmax) or from class ids [B]."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 1:
        return tf.cast(labels, tf.int32)
    return tf.cast(tf.argmax(labels, axis=-1), tf.int32)


def top_targets(logits: tf.Tensor, y: tf.Tensor, num_targets: int) -> tf.Tensor:
    """[B, num_targets] int32: the classes other than y ordered by decreasing clean logit.

    APGD-T's k-th target is the k-th largest clean logit after the true class (the reference sorts the
    clean output and takes position −(k+1); for a correctly classified point the largest is y). Masking y
    out first gives the same classes for the points the cascade attacks and a sensible answer for the
    others. Ties break towards the lower class index (`tf.math.top_k` is stable).
    """
    logits = tf.cast(logits, tf.float32)
    if num_targets == 0:
        return tf.zeros([tf.shape(logits)[0], 0], tf.int32)
    masked = tf.where(tf.one_hot(y, tf.shape(logits)[-1]) > 0, tf.constant(-float("inf")), logits)
    return tf.math.top_k(masked, k=num_targets).indices


@tf.autograph.experimental.do_not_convert
def run_on_survivors(
    x: tf.Tensor, y: tf.Tensor, targets: tf.Tensor, robust: tf.Tensor, num_runs: int, run: RunFn, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Runs `run` `num_runs` times, each time on the still-robust points only; returns (adv, robust).

    Run r gets the seed `rng.fold_in(seed, r)`, so runs draw independent random starts and the
    result depends only on the seed. The loop over runs is a `tf.while_loop` (the traced graph holds one
    copy of the attack whatever the number of runs); an empty survivor set skips the run.
    """
    if num_runs == 0:
        # Nothing to run (e.g. a loss the model's classes cannot define): do not even trace `run`.
        return x, robust
    seed = as_seed(seed)
    batch_shape = [-1] + [1] * (x.shape.rank - 1)

    def body(r, adv, robust):
        idx = tf.where(robust)[:, 0]

        def attack():
            adv_s, broken_s = run(r, tf.gather(x, idx), tf.gather(y, idx), tf.gather(targets, idx),
                                  rng.fold_in(seed, r))
            old = tf.gather(adv, idx)
            new_adv = tf.tensor_scatter_nd_update(
                adv, idx[:, None], tf.where(tf.reshape(broken_s, batch_shape), adv_s, old))
            new_robust = tf.tensor_scatter_nd_update(robust, idx[:, None], tf.logical_not(broken_s))
            return new_adv, new_robust

        adv, robust = tf.cond(tf.size(idx) > 0, attack, lambda: (adv, robust))
        return r + 1, adv, robust

    _, adv, robust = tf.while_loop(
        lambda r, *_: r < num_runs, body, (tf.constant(0, tf.int32), x, robust), maximum_iterations=num_runs)
    return adv, robust


def flat_norm(t: tf.Tensor, norm: str) -> tf.Tensor:
    """Per-example norm shaped [B, 1, ..., 1] to broadcast against `t` (projection.norm_of, reshaped)."""
    return tf.reshape(norm_of(t, norm), [-1] + [1] * (t.shape.rank - 1))


def check_counts(owner: str, **counts: int) -> None:
    """Each count (iterations, restarts, targets...) of an attack's configuration is a positive int."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{owner} {name} must be a positive int, got {value!r}")


def target_notes(owner: str, used: int, requested: int, num_classes: int) -> tuple[str, ...]:
    """The report's note when a targeted attack runs fewer targets than configured (few classes)."""
    if used < requested:
        return (f"{owner} uses {used} target classes instead of {requested}: the model has only "
                f"{num_classes} classes",)
    return ()
