"""`AdversarialTrainer`: a `keras.Model` whose `train_step` runs the adversarial inner maximisation.

One TRADES step (Zhang et al. 2019; Rebuffi, Gowal et al. 2021, Sec. 2; docs/method.md, "TRADES step"):

1. clean logits f(x) with batch statistics, moving BatchNorm statistics frozen;
2. the attack (BatchNorm frozen the same way, tape paused) maximises KL(stop_grad(softmax f(x)) || softmax f(x'))
   from a random start in the eps ball; the clean logits of step 1 give its target, so no extra forward
   (with a label-mixing augmentation the target is the mixed labels instead, as the reference does);
3. adversarial logits f(x') in training mode: the only pass that updates the moving statistics;
4. loss = CE(f(x), y) + beta * KL(f(x) || f(x')) + coupled L2 weight decay, gradients through both
   logit sets, divided by the number of replicas (gradients are summed across replicas).

`pgd-at` (Madry et al. 2018) attacks CE towards the labels and trains on CE(f(x'), y); `standard` trains
on CE(f(x), y) with ordinary BatchNorm.

BatchNorm rule for any model (docs/method.md, "BatchNorm during a step"): the clean pass and every attack
iteration run inside a `keras.StatelessScope`. The layers read the real variables (so gradients reach the
trainable ones and BatchNorm normalises with the batch's moments) while every assignment they make (moving
mean and variance of `keras.layers.BatchNormalization`, synchronised or not, tfrobust's `BatchNorm` and its
update counter, a Dropout seed generator) is collected by the scope and dropped. Only the adversarial pass
runs outside it. This needs nothing from the model's layers, so plain Keras models, `keras.applications`
networks and models without BatchNorm follow the reference's rule. The alternatives: a flag on the layer
(`tfrobust.models.batch_norm.frozen_batch_statistics`) covers only tfrobust's layer; saving and restoring the
moving statistics around the frozen passes would assign them on every attack iteration and has to know
every stateful layer. A stateless pass traces the same arithmetic as the flag; the dropped updates are
dead code that the graph optimiser removes. A Dropout layer draws one mask per step, shared by the clean
pass, the attack and the adversarial pass (the seed generator advances once, in the adversarial pass).

Input conventions: the trainer takes images in [0, 1] (integer images are divided by 255) and the eps
ball is in those units. `input_range=(lo, hi)` maps them to lo + (hi - lo) x before the model (e.g.
(0, 255) for `keras.applications` models that rescale inside, (-1, 1) for those that expect it), and
`preprocess` (a Keras layer) runs after that: the attack still works on [0, 1] images. Labels are integer
class ids ([B] or [B, 1]) or one-hot / soft [B, K] vectors, converted once per step to float [B, K].

Randomness: the attack's seed is (seed, optimizer step), so a resumed run draws what an uninterrupted
one would have drawn.

Precision (docs/xla.md, "Precision"). Under `mixed_bfloat16` or `mixed_float16` the model's layers compute
in the low precision while its weights, BatchNorm statistics and logits stay float32; the losses, the
attack's loss, the weight average and the optimizer run in float32. float16 has bfloat16's precision
problem the other way round: a narrow exponent range (smallest normal 6.1e-5, largest 65504), so small
gradients underflow to 0 on the way back through the network. Two scalings handle it:

- the training loss, as Keras's own `train_step` does: `compile` wraps the optimizer in
  `optimizers.StepCountingLossScaleOptimizer` (dynamic loss scaling) when the model computes in float16,
  the step multiplies the loss by the scale before the gradient (`optimizer.scale_loss`), and the
  optimizer divides the gradients by it and skips a step whose gradients overflowed (`faults.FaultGuard`
  lets such a step pass; a non-finite loss still stops training);
- the attack's input gradient (`loss_scaled_logits`): the gradient at the logits is multiplied by a power
  of two S before it enters the float16 network and the input gradient is divided by S in float32, so the
  attack's direction does not lose the pixels whose gradients underflow float16. S is the largest power of
  two at most loss scale / (examples per replica x replicas): the factor that multiplies each example's
  loss in the scaled training loss, whose backward pass (TRADES: beta times the attack's along the
  adversarial logits) the dynamic scale keeps finite. An input-gradient element that overflows anyway
  counts as 0.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfrobust.attacks.pgd import PGD, pgd_at_attack, trades_attack
from tfrobust.errors import UserError
from tfrobust.threat_model import TRAIN_NORMS
from tfrobust.training import losses
from tfrobust.training.distribute import ReplicaShardedInit
from tfrobust.training.faults import NONFINITE_KEY, loss_scaled_code, nonfinite_code
from tfrobust.training.optimizers import StepCountingLossScaleOptimizer

LOSSES = ("trades", "pgd-at", "standard")

# Attack signature shared with tfrobust.attacks: (model_fn, images, target, seed) -> adversarial images.
Attack = Callable[[Callable[[tf.Tensor], tf.Tensor], tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]

# Keras names of the weights under the coupled L2 penalty: the reference decays every parameter named `w`
# (kernels) or `b` (biases) outside BatchNorm (experiment.py, `weight_decay`); BatchNorm, LayerNorm and
# GroupNorm call theirs gamma / beta.
DECAYED_NAMES = ("kernel", "bias", "depthwise_kernel", "pointwise_kernel")


def decayed_variables(network: keras.Model) -> list:
    """Variables under the coupled L2 penalty: the trainable kernels and biases (`DECAYED_NAMES`) of every
    layer, never normalisation scales and offsets. For tfrobust's models: the conv kernels, the dense kernel
    and the dense bias (docs/method.md, "TRADES step")."""
    return [v for v in network.trainable_variables if v.name in DECAYED_NAMES]


def training_attack(
    loss: str,
    norm: str,
    eps: float,
    *,
    num_steps: int = 10,
    optimizer: str | None = None,
    replicas: int = 1,
    unroll: bool = False,
) -> PGD | None:
    """The inner maximisation of `loss` ("trades", "pgd-at"; None for "standard") as `tfrobust train` runs it.

    `trades_attack` / `pgd_at_attack` of `tfrobust.attacks.pgd` (docs/method.md, "Inner maximisation": 10
    Adam steps for Linf). With several replicas the random start is drawn for the global batch and each
    replica takes its rows (`distribute.ReplicaShardedInit`), and `unroll` unrolls the steps (synchronised
    BatchNorm all-reduces inside the attack, which a while loop cannot hold).

    Example::

        attack = training_attack("trades", "linf", 8 / 255)   # 10 Adam steps on KL(clean || adv)
    """
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    if loss == "standard":
        return None
    factory = trades_attack if loss == "trades" else pgd_at_attack
    attack = factory(norm, eps, num_steps=num_steps, optimizer=optimizer)
    if replicas > 1:
        attack = dataclasses.replace(attack, init=ReplicaShardedInit(attack.init, replicas), unroll=unroll)
    return attack


def computes_in_float16(network: keras.Model) -> bool:
    """Whether a layer of `network` computes in float16 (built under a `mixed_float16` policy)."""
    return any(
        getattr(layer, "compute_dtype", None) == "float16" for layer in network._flatten_layers(include_self=True)
    )


def _power_of_two_floor(x: tf.Tensor) -> tf.Tensor:
    """The largest power of two <= x, for a positive normal float32 x: x with its mantissa bits cleared."""
    bits = tf.bitwise.bitwise_and(tf.bitcast(tf.cast(x, tf.float32), tf.int32), tf.constant(0x7F800000, tf.int32))
    return tf.bitcast(bits, tf.float32)


def attack_gradient_scale(loss_scale: tf.Tensor, examples: tf.Tensor) -> tf.Tensor:
    """S of the attack's input gradient under loss scaling (module docstring, "Precision"): the largest power
    of two at most `loss_scale / examples`, `examples` the per-replica batch times the replicas; at least the
    smallest normal float32, so that dividing by it stays finite."""
    ratio = tf.cast(loss_scale, tf.float32) / tf.cast(examples, tf.float32)
    return tf.maximum(_power_of_two_floor(ratio), tf.constant(2.0**-126, tf.float32))


def loss_scaled_logits(
    model_fn: Callable[[tf.Tensor], tf.Tensor], scale: tf.Tensor
) -> Callable[[tf.Tensor], tf.Tensor]:
    """`model_fn` (images -> logits) with float32 logits whose backward pass runs `scale` times larger.

    The forward pass is `model_fn`'s. Backwards, the gradient at the logits is multiplied by `scale` (float32,
    before the cast into a float16 network) and the gradient at the images divided by it in float32, so a
    float16 network's intermediate gradients are `scale` times larger and underflow less; with `scale` a
    power of two nothing else changes where nothing underflows or overflows. Elements of the image gradient
    that overflowed (inf or NaN after the division) count as 0: an attack step is then smaller for those
    pixels rather than NaN. The attack losses cast logits to float32 anyway (`tfrobust.attacks.losses`).

    Example::

        model_fn = loss_scaled_logits(lambda x: model(x, training=False), tf.constant(1024.0))
        x_adv = attack(model_fn, images, target, seed)
    """
    scale = tf.cast(scale, tf.float32)

    @tf.custom_gradient
    def unscale_at_images(images):
        def gradient(upstream):
            unscaled = upstream / scale
            return tf.where(tf.math.is_finite(unscaled), unscaled, tf.zeros_like(unscaled))

        return tf.identity(images), gradient

    @tf.custom_gradient
    def scale_at_logits(logits):
        return tf.identity(logits), lambda upstream: upstream * scale

    def scaled(images: tf.Tensor) -> tf.Tensor:
        return scale_at_logits(tf.cast(model_fn(unscale_at_images(images)), tf.float32))

    return scaled


def _has_synchronized_batch_norm(network: keras.Model) -> bool:
    return any(
        isinstance(layer, keras.layers.BatchNormalization) and getattr(layer, "synchronized", False)
        for layer in network._flatten_layers(include_self=True)
    )


def _plus(gradient: Any, value: tf.Tensor) -> Any:
    """`gradient + value` for a dense gradient or `tf.IndexedSlices`; None stays None."""
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        values = gradient.values + tf.cast(value, gradient.values.dtype)
        return tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)
    return gradient + tf.cast(value, gradient.dtype)


def _accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-example 0/1 correctness against the labels' argmax (soft labels: their top class)."""
    return tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32)


@keras.saving.register_keras_serializable(package="tfrobust")
class AdversarialTrainer(keras.Model):
    """Wraps a Keras model (images -> logits) and trains it adversarially with `compile` and `fit`.

    Defaults are the paper's (Rebuffi, Gowal et al. 2021; docs/method.md, "TRADES step"): TRADES with
    beta 6, Linf eps 8/255, a 10-step attack (`training_attack`: Adam for Linf, normalised-gradient steps
    for L2), coupled L2 weight decay 5e-4 on kernels and biases. `attack=` overrides the attack with any
    callable (model_fn, images, target, seed) -> adversarial images, e.g. an assembled `tfrobust.attacks.PGD`.

    Args:
      model: a built Keras model mapping images to logits [B, K] (not probabilities).
      loss: "trades" (default), "pgd-at" (Madry et al. 2018) or "standard" (no attack).
      eps: radius of the threat model in [0, 1] pixel units (8/255; 128/255 is the paper's L2 radius).
      norm: "linf" or "l2".
      beta: the TRADES trade-off (6).
      attack: a custom attack; None builds `training_attack(loss, norm, eps, ...)`.
      attack_steps, attack_optimizer: steps (10) and optimizer ("adam" / "sign"; None: Adam for Linf,
        normalised-gradient steps for L2) of the built attack.
      weight_decay: coefficient of the coupled L2 term 0.5 * wd * sum w^2 (`decayed_variables`); 0 turns it
        off (e.g. when the optimizer decays). The model's own regularisation losses (`model.losses`) are added.
      input_range: what the model expects for black and white: (0, 1) (default, no change), (0, 255) for
        `keras.applications` models, (-1, 1) for those that expect it. The data stays in [0, 1].
      preprocess: a Keras layer applied after `input_range` (e.g. `keras.layers.Normalization`), fixed.
      labels_as_attack_target: with CutMix / MixUp / RICAP in the pipeline, the TRADES attack maximises the
        divergence from the mixed labels, as the reference does (docs/method.md, "CutMix with TRADES").
      seed: the attack's random starts are a function of (seed, optimizer step).
      xla_per_replica: under a multi-device strategy, XLA-compile each replica's passes, attack and
        gradients (docs/xla.md); the optimizer update stays in the graph.

    Example::

        import keras, tfrobust

        trainer = tfrobust.AdversarialTrainer(model, loss="trades", eps=8 / 255, norm="linf", beta=6.0)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
        averaging = tfrobust.callbacks.WeightAveraging(decay=0.999)
        trainer.fit(dataset, epochs=10, callbacks=[averaging])   # (images in [0, 1], labels) batches
        averaged = averaging.sync_averaged_network()              # the weights to evaluate and export
    """

    def __init__(
        self,
        model: keras.Model,
        loss: str = "trades",
        eps: float = 8 / 255,
        norm: str = "linf",
        beta: float = 6.0,
        *,
        attack: Attack | None = None,
        attack_steps: int = 10,
        attack_optimizer: str | None = None,
        weight_decay: float = 5e-4,
        input_range: Sequence[float] = (0.0, 1.0),
        preprocess: keras.layers.Layer | None = None,
        labels_as_attack_target: bool = False,
        seed: int = 0,
        xla_per_replica: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise UserError(f"AdversarialTrainer wraps a keras.Model, got {type(model).__name__}")
        if loss not in LOSSES:
            raise UserError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        if norm not in TRAIN_NORMS:
            raise UserError(f"adversarial training supports the norms {', '.join(TRAIN_NORMS)}, not {norm!r}")
        self.norm = norm
        self.eps = float(eps)
        if not self.eps > 0 or (self.norm == "linf" and self.eps > 1):
            raise UserError(f"eps is in [0, 1] pixel units (8/255 = {8 / 255:.4f} for Linf), got {eps!r}")
        if len(input_range) != 2 or not float(input_range[0]) < float(input_range[1]):
            raise UserError(f"input_range must be (low, high) with low < high, got {input_range!r}")
        if preprocess is not None and not isinstance(preprocess, keras.layers.Layer):
            raise UserError(
                f"preprocess must be a keras layer (serialisable, e.g. keras.layers.Normalization), got "
                f"{type(preprocess).__name__}: express a rescaling as input_range"
            )
        self.network = model
        self.loss_kind = loss
        self.beta = float(beta)
        self.attack_steps = int(attack_steps)
        self.attack_optimizer = attack_optimizer
        self.weight_decay = float(weight_decay)
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.preprocess = preprocess
        self.seed = int(seed)
        self.labels_as_attack_target = bool(labels_as_attack_target)
        self._custom_attack = attack is not None
        if attack is None:
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            attack = training_attack(
                loss,
                self.norm,
                self.eps,
                num_steps=self.attack_steps,
                optimizer=attack_optimizer,
                replicas=replicas,
                unroll=replicas > 1 and _has_synchronized_batch_norm(model),
            )
        elif loss == "standard":
            raise UserError('loss "standard" trains without an attack: give no attack=')
        self.attack = attack
        self._decayed = decayed_variables(model)
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
        # Nothing to build: the wrapped model is built (checked before `fit`), the trackers are shape-free.
        self.built = model.built

    # ------------------------------------------------------------------ Keras plumbing

    def compile(self, optimizer: Any = "rmsprop", **kwargs: Any) -> None:
        """`keras.Model.compile` with the optimizer (and `jit_compile`, `steps_per_execution`, ...); the loss
        and the metrics are the trainer's own, so `loss=` and `metrics=` are refused.

        A model that computes in float16 gets dynamic loss scaling, as `keras.Model.compile` gives a
        `mixed_float16` model: the optimizer is wrapped in `optimizers.StepCountingLossScaleOptimizer`
        unless it is a `keras.optimizers.LossScaleOptimizer` already or `auto_scale_loss=False`."""
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(key) is not None:
                raise UserError(f"AdversarialTrainer.compile takes no {key}=: the loss is AdversarialTrainer(loss=...)")
        if kwargs.get("jit_compile", "auto") == "auto" and self.distribute_strategy.num_replicas_in_sync > 1:
            # One XLA program cannot span several devices (see `xla_per_replica`).
            kwargs["jit_compile"] = False
        optimizer = keras.optimizers.get(optimizer)
        if (
            kwargs.get("auto_scale_loss", True)
            and optimizer is not None
            and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
            and computes_in_float16(self.network)
        ):
            optimizer = StepCountingLossScaleOptimizer(optimizer)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Recompiles a trainer loaded from a `.keras` file with its saved optimizer (and builds it, so that
        the saved optimizer state loads)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and not self.optimizer.built and self.network.built:
            self.optimizer.build(self.network.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15's version (TF backend, under a strategy) all-reduces a data batch across replicas
        # to trace a symbolic build; under MultiWorkerMirroredStrategy that eager reduce fails. The step
        # needs only a built network and optimizer; the metrics are shape-free trackers.
        if not self.network.built:
            raise UserError(
                "AdversarialTrainer needs a built model: create it with keras.Input(shape) or call "
                "model.build((None, height, width, channels)) first"
            )
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.network.trainable_variables)

    def get_config(self) -> dict[str, Any]:
        if self._custom_attack:
            raise UserError(
                "an AdversarialTrainer with a custom attack= has no config: save its model "
                "(trainer.network.save(...)) or build the attack from loss/norm/eps/attack_steps"
            )
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.network),
            "loss": self.loss_kind,
            "eps": self.eps,
            "norm": self.norm,
            "beta": self.beta,
            "attack_steps": self.attack_steps,
            "attack_optimizer": self.attack_optimizer,
            "weight_decay": self.weight_decay,
            "input_range": list(self.input_range),
            "preprocess": (
                keras.saving.serialize_keras_object(self.preprocess) if self.preprocess is not None else None
            ),
            "labels_as_attack_target": self.labels_as_attack_target,
            "seed": self.seed,
            "xla_per_replica": self.xla_per_replica,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict | None = None) -> AdversarialTrainer:
        config = copy.deepcopy(config)  # deserialising consumes the nested configs
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        preprocess = config.pop("preprocess", None)
        if preprocess is not None:
            preprocess = keras.saving.deserialize_keras_object(preprocess, custom_objects=custom_objects)
        return cls(model, preprocess=preprocess, **config)

    def call(self, inputs, training=False):
        return self._logits(inputs, training=training)

    @property
    def metrics(self):
        tracked = [self.loss_tracker, self.ce_tracker, self.clean_accuracy]
        if self.loss_kind == "trades":
            tracked.append(self.kl_tracker)
        if self.loss_kind != "standard":
            tracked.append(self.adv_accuracy)
        return tracked

    # ------------------------------------------------------------------ inputs

    def _logits(self, images: tf.Tensor, training: bool) -> tf.Tensor:
        """The wrapped model on [0, 1] images, through `input_range` and `preprocess`."""
        low, high = self.input_range
        if (low, high) != (0.0, 1.0):
            images = images * (high - low) + low
        if self.preprocess is not None:
            images = self.preprocess(images, training=False)
        return self.network(images, training=training)

    def _frozen_logits(self, images: tf.Tensor) -> tf.Tensor:
        """Training-mode logits that change no state: batch statistics, no moving-statistics update (module
        docstring, "BatchNorm rule for any model")."""
        with keras.StatelessScope():
            return self._logits(images, training=True)

    def inference_model(self, network: keras.Model | None = None) -> keras.Model:
        """A functional model of [0, 1] images -> logits: `input_range`, `preprocess`, then `network` (default:
        the trained model; pass `averaging.sync_averaged_network()` for the weight average) in inference mode.
        It is the wrapped model itself when there is no input conversion.

        Example::

            averaged = trainer.inference_model(averaging.sync_averaged_network())
            averaged.save("averaged.keras")                  # keras.saving.load_model reloads it (safe mode)
        """
        network = self.network if network is None else network
        if self.input_range == (0.0, 1.0) and self.preprocess is None:
            return network
        inputs = keras.Input(network.input_shape[1:], name="images")
        low, high = self.input_range
        x = keras.layers.Rescaling(scale=high - low, offset=low, name="input_range")(inputs)
        if self.preprocess is not None:
            x = self.preprocess(x)
        return keras.Model(inputs, network(x), name=f"{network.name}_on_unit_images")

    def _num_classes(self, image_shape: tf.TensorShape) -> int:
        try:
            shape = self.network.output_shape
        except (AttributeError, ValueError):  # a subclassed model: ask it
            try:
                shape = tuple(self.network.compute_output_shape(tuple(image_shape)))
            except Exception:  # noqa: BLE001 - any failure means the same: no static class count
                shape = None
        if isinstance(shape, (tuple, list)) and shape and isinstance(shape[0], (tuple, list)):
            raise UserError(f"the model must return one logits tensor [batch, classes], it returns {len(shape)}")
        if shape is None or len(shape) != 2 or shape[-1] is None:
            raise UserError(
                f"the model must return logits of shape [batch, classes], its output shape is {shape}: add a "
                "classification head (e.g. keras.applications with include_top=True, classifier_activation=None)"
            )
        return int(shape[-1])

    def prepare_batch(self, data) -> tuple[tf.Tensor, tf.Tensor]:
        """(images float32 in [0, 1], labels float [B, K]) from a batch (images, labels): integer images are
        divided by 255; integer labels [B] or [B, 1] become one-hot; [B, K] labels must have the model's K.

        Example::

            images, labels = trainer.prepare_batch((uint8_images, integer_labels))
        """
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if labels is None:
            raise UserError("AdversarialTrainer needs (images, labels) batches, got images only")
        if sample_weight is not None:
            raise UserError("AdversarialTrainer does not weight samples: give (images, labels) batches")
        images = tf.convert_to_tensor(images)
        if images.dtype.is_integer:
            images = tf.cast(images, tf.float32) / 255.0
        elif images.dtype != tf.float32:
            images = tf.cast(images, tf.float32)
        if images.shape.rank != 4:
            raise UserError(f"images must be [batch, height, width, channels], got shape {images.shape}")
        labels = tf.convert_to_tensor(labels)
        classes = self._num_classes(images.shape)
        if labels.shape.rank == 2 and labels.shape[-1] == 1 and labels.dtype.is_integer:
            labels = tf.squeeze(labels, -1)
        if labels.shape.rank == 1:
            return images, tf.one_hot(tf.cast(labels, tf.int32), classes, dtype=tf.float32)
        if labels.shape.rank != 2 or labels.dtype.is_integer:
            raise UserError(
                f"labels must be class ids [batch] or one-hot / soft float [batch, classes], got {labels.dtype.name} "
                f"of shape {labels.shape}"
            )
        if labels.shape[-1] != classes:
            raise UserError(f"labels have {labels.shape[-1]} classes but the model's logits have {classes}")
        return images, tf.cast(labels, tf.float32)

    # ------------------------------------------------------------------ the step

    def _loss_scale(self) -> tf.Tensor | None:
        """The dynamic loss scale of this step (float32), None without loss scaling."""
        optimizer = getattr(self, "optimizer", None)  # None before `compile`
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return None
        return tf.convert_to_tensor(optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale, tf.float32)

    def _step_seed(self) -> tf.Tensor:
        """Stateless seed of this step's attack: (run seed, optimizer step), the same on every replica
        (`distribute.ReplicaShardedInit` gives each replica its rows of the global batch's start)."""
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])

    # No AutoGraph: the step has no data-dependent Python control flow (every `if` is on configuration),
    # and converting it (and the attack it calls) once mixed up two converted methods' code objects in
    # AutoGraph's cache ("tf___step_seed() takes 1 positional argument but 2 were given").
    @tf.autograph.experimental.do_not_convert
    def loss_and_gradients(self, images: tf.Tensor, labels: tf.Tensor) -> dict[str, object]:
        """Steps 1-4 of the module docstring: everything of a training step but the optimizer update.

        `images` float32 in [0, 1], `labels` float [B, K] (`prepare_batch`). Returns a dict with "gradients"
        (one per `network.trainable_variables`, of the loss divided by the number of replicas and multiplied
        by the optimizer's loss scale, `optimizer.scale_loss`), "total" (the loss with weight decay, unscaled),
        "parts" (its terms), "clean_logits" (None for PGD-AT), "adv_logits" (None for `standard`),
        "adv_images" (None for `standard`) and "loss_scale" (the dynamic loss scale the gradients carry, None
        without loss scaling). Runs the adversarial forward pass, so the moving BatchNorm statistics are
        updated once.
        """
        labels = tf.cast(labels, tf.float32)
        network = self.network
        adv_images = None
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss_scale = self._loss_scale()
        attack_logits = self._frozen_logits
        if loss_scale is not None:
            # float16 underflow in the attack's backward pass (module docstring, "Precision").
            examples = tf.shape(images)[0] * replicas
            attack_logits = loss_scaled_logits(self._frozen_logits, attack_gradient_scale(loss_scale, examples))
        with tf.GradientTape() as tape:
            if self.loss_kind == "standard":
                clean_logits = self._logits(images, training=True)
                loss, parts = losses.standard_loss(clean_logits, labels)
                adv_logits = None
            else:
                if self.loss_kind == "trades":
                    # The attack target is the stop-gradient clean softmax; the same clean logits feed
                    # the loss, so the clean pass runs once.
                    clean_logits = self._frozen_logits(images)
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
                    adv_images = self.attack(attack_logits, images, target, self._step_seed())
                adv_images = tf.stop_gradient(adv_images)
                adv_logits = self._logits(adv_images, training=True)  # the only pass that updates BN statistics
                if self.loss_kind == "trades":
                    loss, parts = losses.trades_loss(clean_logits, adv_logits, labels, self.beta)
                else:
                    loss, parts = losses.pgd_at_loss(adv_logits, labels)
            total = loss + losses.l2_weight_decay(self._decayed, self.weight_decay)
            if network.losses:  # the model's own regularisers, as Keras's train_step adds them
                total = total + tf.cast(tf.add_n(network.losses), tf.float32)
            # Keras sums gradients across replicas: scale each replica's mean loss by 1 / replicas.
            scaled = total / tf.cast(replicas, tf.float32)
            if getattr(self, "optimizer", None) is not None:
                scaled = self.optimizer.scale_loss(scaled)  # the loss scale under float16, as Keras's train_step
        gradients = tape.gradient(scaled, network.trainable_variables)
        return {
            "gradients": gradients,
            "total": total,
            "parts": parts,
            "clean_logits": clean_logits,
            "adv_logits": adv_logits,
            "adv_images": adv_images,
            "loss_scale": loss_scale,
        }

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        images, labels = self.prepare_batch(data)
        network = self.network
        step = (self._xla_loss_and_gradients or self.loss_and_gradients)(images, labels)
        gradients = step["gradients"]
        # Whether this step's loss and gradients are finite, read by `faults.FaultGuard` after the step.
        nonfinite = nonfinite_code(step["total"], gradients)
        if step["loss_scale"] is not None:
            if self.distribute_strategy.num_replicas_in_sync > 1:
                # Keras's LossScaleOptimizer decides to skip from the first replica's gradients, before they
                # are summed: a NaN on every replica where one replica overflowed makes all of them skip.
                poison = tf.where(nonfinite >= 4.0, tf.constant(float("nan")), tf.constant(0.0))
                gradients = [_plus(g, poison) for g in gradients]
            nonfinite = loss_scaled_code(nonfinite, step["loss_scale"])
        self.optimizer.apply_gradients(zip(gradients, network.trainable_variables))

        parts, clean_logits, adv_logits = step["parts"], step["clean_logits"], step["adv_logits"]
        self.loss_tracker.update_state(step["total"])
        self.ce_tracker.update_state(parts["ce"])
        if "kl" in parts:
            self.kl_tracker.update_state(parts["kl"])
        if clean_logits is None:
            # PGD-AT needs no clean pass for its loss; report clean accuracy with inference statistics.
            clean_logits = self._logits(images, training=False)
        self.clean_accuracy.update_state(_accuracy(clean_logits, labels))
        if adv_logits is not None:
            self.adv_accuracy.update_state(_accuracy(adv_logits, labels))
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
        images, labels = self.prepare_batch(data)
        logits = self._logits(images, training=False)
        self.loss_tracker.update_state(tf.reduce_mean(losses.cross_entropy(logits, labels)))
        self.clean_accuracy.update_state(_accuracy(logits, labels))
        return self._results({"loss": self.loss_tracker.result(), "clean_accuracy": self.clean_accuracy.result()})
