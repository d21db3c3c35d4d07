"""Training losses as pure functions of logits and labels (labels one-hot or soft, float [B, K]).

- `trades_loss`: Zhang et al. 2019 (TRADES), as used by Rebuffi, Gowal et al. 2021 (Sec. 2, beta = 6):
  CE(f(x), y) + beta * mean_i KL(softmax(f(x_i)) || softmax(f(x'_i))). Gradients flow through both the
  clean and the adversarial logits (docs/method.md, "TRADES step"). With soft (CutMix/MixUp) labels the CE
  uses them.
- `pgd_at_loss`: Madry et al. 2018, CE(f(x'), y).
- `standard_loss`: CE(f(x), y), non-robust training (the pseudo-labelling classifier of the paper).
- `l2_weight_decay`: the reference's *coupled* L2 penalty 0.5 * wd * sum ||w||^2 over conv and dense
  kernels and the dense bias, added to the loss (Keras optimizers' `weight_decay` is decoupled: not the same).
"""

from __future__ import annotations

from collections.abc import Iterable

import tensorflow as tf


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-example softmax cross-entropy with one-hot or soft labels; float32 whatever the logits' dtype."""
    logits = tf.cast(logits, tf.float32)
    return -tf.reduce_sum(tf.cast(labels, tf.float32) * tf.nn.log_softmax(logits), axis=-1)


def kl_divergence(p_logits: tf.Tensor, q_logits: tf.Tensor) -> tf.Tensor:
    """Per-example KL(softmax(p) || softmax(q)), computed from log-probabilities for stability."""
    log_p = tf.nn.log_softmax(tf.cast(p_logits, tf.float32))
    log_q = tf.nn.log_softmax(tf.cast(q_logits, tf.float32))
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def trades_loss(
    clean_logits: tf.Tensor, adv_logits: tf.Tensor, labels: tf.Tensor, beta: float
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """TRADES: mean CE(clean, labels) + beta * mean KL(clean || adv). Returns (loss, its parts)."""
    ce = tf.reduce_mean(cross_entropy(clean_logits, labels))
    kl = tf.reduce_mean(kl_divergence(clean_logits, adv_logits))
    return ce + beta * kl, {"ce": ce, "kl": kl}


def pgd_at_loss(adv_logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """PGD adversarial training (Madry et al. 2018): mean CE on the adversarial points."""
    ce = tf.reduce_mean(cross_entropy(adv_logits, labels))
    return ce, {"ce": ce}


def standard_loss(clean_logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Non-robust training: mean CE on the clean points."""
    ce = tf.reduce_mean(cross_entropy(clean_logits, labels))
    return ce, {"ce": ce}


def l2_weight_decay(variables: Iterable[tf.Variable], coefficient: float) -> tf.Tensor:
    """Coupled L2 regularisation 0.5 * coefficient * sum_w ||w||^2 (reference: wd 5e-4 on kernels)."""
    terms = [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables]
    if not terms:
        return tf.constant(0.0)
    return 0.5 * coefficient * tf.add_n(terms)
