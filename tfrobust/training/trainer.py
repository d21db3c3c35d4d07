"""`RobustTrainer`: a `keras.Model` whose `train_step` runs the adversarial inner maximisation.

One TRADES step (Zhang et al. 2019; Rebuffi, Gowal et al. 2021, Sec. 2; docs/method.md, "TRADES step"):

1. clean logits f(x) with batch statistics, moving BatchNorm statistics frozen;
2. the attack (BatchNorm frozen the same way, tape paused) maximises KL(stop_grad(softmax f(x)) || softmax f(x'))
   from a random start in the eps ball; the clean logits of step 1 give its target, so no extra forward
   (with a label-mixing augmentation the target is the mixed labels instead, as the reference does);
3. adversarial logits f(x') in training mode: the only pass that updates the moving statistics;
4. loss = CE(f(x), y) + beta * KL(f(x) || f(x')) + coupled L2 weight decay, gradients through both
   logit sets, divided by the number of replicas (gradients are summed across replicas).

`pgd-at` (Madry et al. 2018) attacks CE towards the labels and trains on CE(f(x'), y); `standard` trains
on CE(f(x), y) with ordinary BatchNorm. Labels are one-hot or soft float vectors.

Randomness: the attack's seed is (seed, optimizer step), so a resumed run draws what an uninterrupted
one would have drawn.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from tfrobust.models.batch_norm import frozen_batch_statistics
from tfrobust.training import losses
from tfrobust.training.faults import NONFINITE_KEY, nonfinite_code

LOSSES = ("trades", "pgd-at", "standard")

# Attack signature shared with tfrobust.attacks: (model_fn, images, target, seed) -> adversarial images.
Attack = Callable[[Callable[[tf.Tensor], tf.Tensor], tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def decayed_variables(network: keras.Model) -> list:
    """Variables under the coupled L2 penalty: conv and dense kernels and the dense bias, not BatchNorm."""
    out = []
    for layer in network._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            out.append(layer.kernel)
        elif isinstance(layer, keras.layers.Dense):
            out.append(layer.kernel)
            if layer.use_bias:
                out.append(layer.bias)
    return out


def _accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-example 0/1 correctness against the labels' argmax (soft labels: their top class)."""
    return tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32)


class RobustTrainer(keras.Model):
    """Wraps a network (images in [0,1] -> logits) and trains it adversarially with `fit`."""

    def __init__(
        self,
        network: keras.Model,
        *,
        loss: str,
        attack: Attack | None,
        beta: float = 6.0,
        weight_decay: float = 5e-4,
        seed: int = 0,
        labels_as_attack_target: bool = False,
        xla_per_replica: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
        if loss != "standard" and attack is None:
            raise ValueError(f"loss {loss!r} needs an attack")
        self.network = network
        self.loss_kind = loss
        self.attack = attack
        self.beta = float(beta)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        self.labels_as_attack_target = bool(labels_as_attack_target)
        self._decayed = decayed_variables(network)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.clean_accuracy = keras.metrics.Mean(name="clean_accuracy")
        self.adv_accuracy = keras.metrics.Mean(name="adv_accuracy")
        # Keras's `jit_compile` compiles the whole step, `strategy.run` included, as one XLA program, which
        # XLA refuses when it spans several devices. With `xla_per_replica` each replica runs
        # `loss_and_gradients` (passes, attack, loss, gradients) as its own XLA program, and the optimizer
        # update, which all-reduces the gradients, stays in the graph.
        self.xla_per_replica = bool(xla_per_replica)
        self._xla_loss_and_gradients = (
            tf.function(self.loss_and_gradients, jit_compile=True, autograph=False) if xla_per_replica else None
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15's version (TF backend, under a strategy) all-reduces a data batch across replicas
        # to trace a symbolic build; under MultiWorkerMirroredStrategy that eager reduce fails. Nothing
        # here needs it: `run.build_run` builds the network and the optimizer, and the metrics are
        # shape-free trackers.
        return

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        tracked = [self.loss_tracker, self.ce_tracker, self.clean_accuracy]
        if self.loss_kind == "trades":
            tracked.append(self.kl_tracker)
        if self.loss_kind != "standard":
            tracked.append(self.adv_accuracy)
        return tracked

    def _step_seed(self) -> tf.Tensor:
        """Stateless seed of this step's attack: (run seed, optimizer step), the same on every replica
        (`distribute.ReplicaShardedInit` gives each replica its rows of the global batch's start)."""
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])

    def _attack_fn(self, images: tf.Tensor) -> tf.Tensor:
        # Called inside frozen_batch_statistics: batch statistics, no moving-statistics update.
        return self.network(images, training=True)

    # No AutoGraph: the step has no data-dependent Python control flow (every `if` is on configuration),
    # and converting it (and the attack it calls) once mixed up two converted methods' code objects in
    # AutoGraph's cache ("tf___step_seed() takes 1 positional argument but 2 were given").
    @tf.autograph.experimental.do_not_convert
    def loss_and_gradients(self, images: tf.Tensor, labels: tf.Tensor) -> dict[str, object]:
        """Steps 1-4 of the module docstring: everything of a training step but the optimizer update.

        Returns a dict with "gradients" (one per `network.trainable_variables`, of the loss divided by the
        number of replicas), "total" (the loss with weight decay), "parts" (its terms), "clean_logits"
        (None for PGD-AT), "adv_logits" (None for `standard`) and "adv_images" (None for `standard`).
        Runs the adversarial forward pass, so the moving BatchNorm statistics are updated once.
        """
        labels = tf.cast(labels, tf.float32)
        network = self.network
        adv_images = None
        with tf.GradientTape() as tape:
            if self.loss_kind == "standard":
                clean_logits = network(images, training=True)
                loss, parts = losses.standard_loss(clean_logits, labels)
                adv_logits = None
            else:
                if self.loss_kind == "trades":
                    # The attack target is the stop-gradient clean softmax; the same clean logits feed
                    # the loss, so the clean pass runs once.
                    with frozen_batch_statistics(network):
                        clean_logits = network(images, training=True)
                    if self.labels_as_attack_target:
                        # CutMix/MixUp/RICAP (docs/method.md, "CutMix with TRADES"): the attack maximises the
                        # divergence from the mixed labels; the loss's KL stays KL(clean || adv).
                        target = labels
                    else:
                        target = tf.stop_gradient(tf.nn.softmax(tf.cast(clean_logits, tf.float32)))
                else:
                    clean_logits = None
                    target = labels
                with tape.stop_recording():
                    with frozen_batch_statistics(network):
                        adv_images = self.attack(self._attack_fn, images, target, self._step_seed())
                adv_images = tf.stop_gradient(adv_images)
                adv_logits = network(adv_images, training=True)  # the only pass that updates BN statistics
                if self.loss_kind == "trades":
                    loss, parts = losses.trades_loss(clean_logits, adv_logits, labels, self.beta)
                else:
                    loss, parts = losses.pgd_at_loss(adv_logits, labels)
            total = loss + losses.l2_weight_decay(self._decayed, self.weight_decay)
            # Keras sums gradients across replicas: scale each replica's mean loss by 1 / replicas.
            scaled = total / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)
        gradients = tape.gradient(scaled, network.trainable_variables)
        return {"gradients": gradients, "total": total, "parts": parts, "clean_logits": clean_logits,
                "adv_logits": adv_logits, "adv_images": adv_images}

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        images, labels = data[0], tf.cast(data[1], tf.float32)
        network = self.network
        step = (self._xla_loss_and_gradients or self.loss_and_gradients)(images, labels)
        self.optimizer.apply_gradients(zip(step["gradients"], network.trainable_variables))

        parts, clean_logits, adv_logits = step["parts"], step["clean_logits"], step["adv_logits"]
        self.loss_tracker.update_state(step["total"])
        self.ce_tracker.update_state(parts["ce"])
        if "kl" in parts:
            self.kl_tracker.update_state(parts["kl"])
        if clean_logits is None:
            # PGD-AT needs no clean pass for its loss; report clean accuracy with inference statistics.
            clean_logits = network(images, training=False)
        self.clean_accuracy.update_state(_accuracy(clean_logits, labels))
        if adv_logits is not None:
            self.adv_accuracy.update_state(_accuracy(adv_logits, labels))
        # Whether this step's loss and gradients are finite, read by `faults.FaultGuard` after the step.
        nonfinite = nonfinite_code(step["total"], step["gradients"])
        return self._results({**{m.name: m.result() for m in self.metrics}, NONFINITE_KEY: nonfinite})

    def _get_metrics_result_or_logs(self, logs):
        # `fit` logs an epoch with the metrics' results when the step's outputs have the metrics' names,
        # else with the last step's outputs; the non-finite flag is not a metric, so it is left out here.
        if isinstance(logs, dict):
            logs = {key: value for key, value in logs.items() if key != NONFINITE_KEY}
        return super()._get_metrics_result_or_logs(logs)

    @staticmethod
    def _results(results: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        # Keras 3.15 reduces a multi-worker step's outputs with `axis=0`, which fails on scalars; the
        # metric values are already global (and equal on every replica), so shape [1] reduces to them.
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            return {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        images, labels = data[0], tf.cast(data[1], tf.float32)
        logits = self.network(images, training=False)
        self.loss_tracker.update_state(tf.reduce_mean(losses.cross_entropy(logits, labels)))
        self.clean_accuracy.update_state(_accuracy(logits, labels))
        return self._results({"loss": self.loss_tracker.result(), "clean_accuracy": self.clean_accuracy.result()})
