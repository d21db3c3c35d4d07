"""Per-example losses that attacks MAXIMISE: pure functions `(logits [B, K], target) -> [B]`.

`target` is a float [B, K] distribution (one-hot labels, soft labels after CutMix/label smoothing, or a
model's probabilities); integer class ids of shape [B] are accepted too and one-hot encoded. Logits are
computed in float32 (cast here, so mixed-precision models do not put the attack's loss in float16).

These functions do not stop gradients into `target`: the attack treats the target as a constant anyway,
and the TRADES training loss may want gradients through both arguments of the KL term.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def as_distribution(target: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """float32 [B, K] from one-hot/soft labels or integer class ids [B]."""
    target = tf.convert_to_tensor(target)
    if target.dtype.is_integer:
        return tf.one_hot(target, tf.shape(logits)[-1], dtype=tf.float32)
    return tf.cast(target, tf.float32)


def kl_to_target(logits: tf.Tensor, target_probs: tf.Tensor) -> tf.Tensor:
    """KL(target ‖ softmax(logits)) = Σ_k t_k (log t_k − log softmax(z)_k), per example.

    TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and Accuracy", eq. 5):
    the attack maximises KL(f(x) ‖ f(x')) with f(x) the clean softmax held fixed; under CutMix the reference
    uses the mixed soft labels as the target instead (docs/method.md, "CutMix with TRADES"). 0·log 0 = 0
    via `xlogy`, so one-hot targets are fine.

    Example::

        clean_probs = tf.nn.softmax(model(images, training=False))
        kl = attacks.kl_to_target(model(x_adv, training=False), clean_probs)   # [B], 0 where x_adv == images
    """
    logits = tf.cast(logits, tf.float32)
    t = as_distribution(target_probs, logits)
    return tf.reduce_sum(tf.math.xlogy(t, t) - t * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """−Σ_k y_k log softmax(z)_k per example, for one-hot or soft labels: the PGD-AT inner loss (Madry et
    al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks").

    Example::

        losses = attacks.cross_entropy(model(images, training=False), labels)   # [B]; ids [B] or one-hot [B, K]
    """
    logits = tf.cast(logits, tf.float32)
    y = as_distribution(labels, logits)
    return -tf.reduce_sum(y * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def margin(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """max_{i≠y} z_i − z_y per example: positive exactly when the example is misclassified.

    The logit-margin loss of Carlini & Wagner 2017 ("Towards Evaluating the Robustness of Neural Networks",
    f_6 with κ = 0, sign flipped for maximisation); the reference PGD-40 model-selection attack maximises
    it (docs/method.md, "Model selection"). y is the argmax of `labels` (exactly the class for one-hot labels).

    Example::

        margins = attacks.margin(model(x_adv, training=False), labels)   # [B]
        fooled = margins > 0                                             # exactly the misclassified points
    """
    logits = tf.cast(logits, tf.float32)
    y = as_distribution(labels, logits)
    is_true = tf.one_hot(tf.argmax(y, axis=-1), tf.shape(logits)[-1], on_value=True, off_value=False)
    true_logit = tf.reduce_sum(tf.where(is_true, logits, 0.0), axis=-1)
    best_other = tf.reduce_max(tf.where(is_true, tf.constant(-float("inf"), tf.float32), logits), axis=-1)
    return best_other - true_logit


# name -> loss; for configuration and for the cascade that later attacks build.
LOSSES: dict[str, LossFn] = {"kl": kl_to_target, "cross_entropy": cross_entropy, "margin": margin}
