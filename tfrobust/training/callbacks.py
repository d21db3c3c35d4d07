"""Keras callbacks of a training run: weight averaging, model selection, checkpointing, run metadata.

Order matters and `run.py` keeps it: `WeightAveraging` (after every step), then `ModelSelection` (reads
the averages, adds validation metrics to the epoch's logs), then `TrainingCheckpoint` (saves everything,
selection state included), then the CSV/TensorBoard loggers (which see the validation metrics).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tfrobust.errors import UserError
from tfrobust.numerics import full_float32
from tfrobust.training import checkpoint as ckpt
from tfrobust.training.schedules import ema_decay


class WeightAveraging(keras.callbacks.Callback):
    """Exponential moving average of the network's trainable weights (Rebuffi, Gowal et al. 2021, Sec. 4).

    After update t (t = 0, 1, ...): avg <- d_t * avg + (1 - d_t) * w with d_t = min(decay, (1+t)/(10+t)),
    the reference's warm-up (docs/method.md, "Weight averaging"; `utils.py` `ema_update`). `decay` is the
    paper's tau: 0.999 without added data (default), 0.995 with generated data. Only trainable weights are
    averaged; the averaged model uses the raw model's BatchNorm statistics, as the reference evaluates it.
    Keras's optimizer `use_ema` differs (no warm-up), hence this callback.

    `network`: the model to average. Without it the callback averages the model that `fit` trains (the
    wrapped model of an `AdversarialTrainer`), from the first `fit` on; later `fit` calls continue the same
    average. Given, create the callback under the distribution strategy's scope: its variables must be
    mirrored like the model's (without it, the callback enters the model's strategy scope itself).

    Example::

        averaging = tfrobust.callbacks.WeightAveraging(decay=0.999)
        trainer.fit(dataset, epochs=10, callbacks=[averaging])
        averaged = averaging.sync_averaged_network()   # averaged weights + raw BatchNorm statistics
    """

    def __init__(self, network: keras.Model | None = None, decay: float = 0.999):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise UserError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.network: keras.Model | None = None
        if network is not None:
            self._attach(network)

    def _attach(self, network: keras.Model) -> None:
        """Creates the averages (from the current weights) and the averaged network for `network`."""
        self.network = network
        # Initialise from a numpy copy: a keras.Variable built from another variable's `.value` would
        # share its storage (the "average" would silently be the raw weight).
        self.averages = [
            keras.Variable(np.array(w.numpy()), trainable=False, name=f"ema_{i}")
            for i, w in enumerate(network.trainable_weights)
        ]
        self.num_updates = keras.Variable(0, dtype="int64", trainable=False, name="ema_num_updates")
        # A second network that holds averaged weights + raw BatchNorm statistics for validation/export.
        self.averaged_network = keras.models.clone_model(network)
        self._check_alignment()
        self._update = tf.function(self._update_averages)

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        if self.network is None:
            from tfrobust.training.trainer import AdversarialTrainer

            network = model.network if isinstance(model, AdversarialTrainer) else model
            with model.distribute_strategy.scope():
                self._attach(network)

    def _check_attached(self) -> None:
        if self.network is None:
            raise UserError("WeightAveraging has no network yet: pass it to fit(callbacks=[...]) or give network=")

    def _check_alignment(self) -> None:
        pairs = zip(self.averaged_network.weights, self.network.weights)
        if len(self.averaged_network.weights) != len(self.network.weights) or any(
            a.path != b.path or a.shape != b.shape for a, b in pairs
        ):
            raise RuntimeError("clone_model did not reproduce the network's weights in order")

    def _update_averages(self) -> None:
        decay = ema_decay(self.num_updates, self.decay)
        for average, weight in zip(self.averages, self.network.trainable_weights):
            average.assign(decay * average + (1.0 - decay) * tf.cast(weight.value, average.dtype))
        self.num_updates.assign_add(1)

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def sync_averaged_network(self) -> keras.Model:
        """Copies averages (trainable) and raw BatchNorm statistics into `averaged_network`; returns it."""
        self._check_attached()
        averages = iter(self.averages)
        for target, source in zip(self.averaged_network.weights, self.network.weights):
            target.assign(next(averages).value if source.trainable else source.value)
        return self.averaged_network

    def state_variables(self) -> list:
        self._check_attached()
        return [*self.averages, self.num_updates]

    def state_by_key(self) -> dict[str, keras.Variable]:
        """The averaging state keyed for a checkpoint: each average under the path of the network variable
        it averages (the averages' own names, `ema_0`, ..., are positions), and the update count under
        `num_updates`."""
        keys = [*ckpt.by_path(self.network.trainable_weights, "network's trainable weights"), "num_updates"]
        if len(set(keys)) != len(keys):
            raise UserError("cannot checkpoint the weight averages: a network variable has the path 'num_updates'")
        return dict(zip(keys, self.state_variables()))


class ModelSelection(keras.callbacks.Callback):
    """Every `every` epochs (and at the last), clean and PGD-40 accuracy of raw and averaged weights.

    docs/method.md, "Model selection": robust accuracy on held-out *training* images picks the best averaged
    model, never the test set (`select_on`; a non-robust `--loss standard` run selects on clean accuracy,
    since its PGD-40 accuracy is ~0 and would pick an arbitrary early epoch). Adds `val_{raw,avg}_{clean,pgd40}_accuracy` to every epoch's logs (NaN on
    epochs without evaluation, so CSV columns stay fixed) and keeps the best averaged weights: in `best_path`
    (an npz) when given, else in memory; `restore_best` loads them.

    What it measures: `evaluate(model) -> {"clean_accuracy", "robust_accuracy"}`, or, with `validation_data`
    (a `tf.data.Dataset` of (images in [0, 1], labels) batches, labels integer or one-hot), the reference's
    PGD-40 (`tfrobust.attacks.pgd40_attack`: margin loss, 40 Adam steps) at `norm` / `eps` (default: those of
    the `AdversarialTrainer` being fitted, through its `input_range` / `preprocess`), seeded by `seed`.
    `jit_compile`: PGD-40 and its verdicts under XLA (`tfrobust.evaluation.Evaluator(jit_compile=...)`);
    None follows the training step of the `AdversarialTrainer` being fitted (its `jit_compile`, or
    `xla_per_replica`: `tfrobust train --jit-compile` as resolved) where a GPU or TPU is present, and is off
    on CPUs and for any other model.
    `total_epochs` defaults to `fit`'s `epochs`. Put it after the `WeightAveraging` it reads.

    Example::

        averaging = tfrobust.callbacks.WeightAveraging(decay=0.999)
        selection = tfrobust.callbacks.ModelSelection(averaging, validation_data=held_out.batch(256))
        trainer.fit(dataset, epochs=10, callbacks=[averaging, selection])
        best = selection.restore_best()   # the averaged network with the best PGD-40 weights
    """

    def __init__(
        self,
        averaging: WeightAveraging,
        evaluate: Callable[[keras.Model], dict[str, float]] | None = None,
        *,
        validation_data: tf.data.Dataset | None = None,
        norm: str | None = None,
        eps: float | None = None,
        seed: int = 0,
        every: int = 1,
        total_epochs: int | None = None,
        best_path: str | None = None,
        select_on: str = "val_avg_pgd40_accuracy",
        jit_compile: bool | None = None,
    ):
        super().__init__()
        if select_on not in self.KEYS:
            raise UserError(f"select_on must be one of {self.KEYS}, got {select_on!r}")
        if (evaluate is None) == (validation_data is None):
            raise UserError("ModelSelection needs exactly one of evaluate= and validation_data=")
        self.select_on = select_on
        self.averaging = averaging
        self.evaluate = evaluate if evaluate is not None else self._pgd40_accuracy
        self.validation_data = validation_data
        self.norm, self.eps, self.seed = norm, eps, int(seed)
        if jit_compile is not None and not isinstance(jit_compile, bool):
            raise UserError(f"ModelSelection jit_compile must be None, True or False, got {jit_compile!r}")
        self.jit_compile = jit_compile
        self._evaluator = None
        self._logits_fns: dict[int, Callable] = {}
        self.every = int(every)
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self.best_path = best_path
        self.best = {"epoch": -1, select_on: -math.inf}
        self.best_weights: list[np.ndarray] | None = None
        self.latest: dict[str, float] = {}

    KEYS = ("val_raw_clean_accuracy", "val_raw_pgd40_accuracy", "val_avg_clean_accuracy", "val_avg_pgd40_accuracy")

    def _resolved_jit(self, trainer: keras.Model | None) -> bool:
        """`jit_compile`, or None: XLA where the fitted trainer's training step is XLA-compiled (one program or
        one per replica) and TensorFlow sees a GPU or TPU. Not on CPUs, whatever the step: Keras's own
        `jit_compile="auto"` compiles a CPU step too, and XLA's CPU backend runs PGD-40 slower than the
        plain graph (docs/xla.md)."""
        from tfrobust.evaluation import resolve_jit_compile

        if self.jit_compile is not None:
            return self.jit_compile
        if trainer is None:
            return False
        step_xla = bool(getattr(trainer, "jit_compile", False)) or bool(getattr(trainer, "xla_per_replica", False))
        return step_xla and resolve_jit_compile("auto")

    def _pgd40_accuracy(self, model: keras.Model) -> dict[str, float]:
        """Clean and PGD-40 accuracy of `model` on `validation_data` (tfrobust.evaluation's `Evaluator`)."""
        from tfrobust.evaluation import Evaluator, keras_logits_fn
        from tfrobust.training.trainer import AdversarialTrainer

        trainer = self.model if isinstance(self.model, AdversarialTrainer) else None
        if self._evaluator is None:
            norm = self.norm or (trainer.norm if trainer is not None else None)
            eps = self.eps if self.eps is not None else (trainer.eps if trainer is not None else None)
            if norm is None or eps is None:
                raise UserError(
                    "ModelSelection(validation_data=...) outside an AdversarialTrainer needs norm= and eps="
                )
            self._evaluator = Evaluator(["pgd40"], norm=norm, eps=eps, jit_compile=self._resolved_jit(trainer))
            self.validation_data = _one_hot_batches(self.validation_data, model)
        if id(model) not in self._logits_fns:
            # One logits function per model, so the evaluator traces its attack once per model.
            self._logits_fns[id(model)] = keras_logits_fn(trainer.inference_model(model) if trainer else model)
        result = self._evaluator.run(self._logits_fns[id(model)], self.validation_data, seed=self.seed)
        return {"clean_accuracy": result.clean_accuracy, "robust_accuracy": result.robust_accuracy}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        done = epoch + 1
        total = self.total_epochs if self.total_epochs is not None else self.params.get("epochs")
        if self.every <= 0 or (done % self.every != 0 and done != total):
            logs.update({key: float("nan") for key in self.KEYS})
            return
        with full_float32():  # PGD-40 and its verdicts in full float32, TF32 off (tfrobust.numerics)
            raw = self.evaluate(self.averaging.network)
            averaged = self.evaluate(self.averaging.sync_averaged_network())
        metrics = {
            "val_raw_clean_accuracy": raw["clean_accuracy"],
            "val_raw_pgd40_accuracy": raw["robust_accuracy"],
            "val_avg_clean_accuracy": averaged["clean_accuracy"],
            "val_avg_pgd40_accuracy": averaged["robust_accuracy"],
        }
        logs.update(metrics)
        self.latest = {"epoch": done, **metrics}
        if metrics[self.select_on] > self.best.get(self.select_on, -math.inf):
            self.best = {"epoch": done, **metrics}
            if self.best_path is not None:
                weights = ckpt.by_path(self.averaging.averaged_network.weights, "network")
                ckpt.save_arrays(
                    self.best_path, {"network": _values(weights)}, {"best": self.best}, what="best weights"
                )
            else:
                self.best_weights = [np.array(w.numpy()) for w in self.averaging.averaged_network.weights]
        print(
            f"\nepoch {done}: validation clean/PGD-40 raw {metrics['val_raw_clean_accuracy']:.4f}/"
            f"{metrics['val_raw_pgd40_accuracy']:.4f}, averaged {metrics['val_avg_clean_accuracy']:.4f}/"
            f"{metrics['val_avg_pgd40_accuracy']:.4f} (best averaged at epoch {self.best['epoch']})",
            flush=True,
        )

    def restore_best(self, network: keras.Model | None = None) -> keras.Model:
        """Loads the best averaged weights into `network` (default: the averaged network); returns it."""
        network = self.averaging.averaged_network if network is None else network
        if self.best["epoch"] < 0:
            raise UserError("ModelSelection has not evaluated an epoch yet: no best weights")
        if self.best_path is not None:
            load_best_weights(self.best_path, network)
        else:
            for variable, value in zip(network.weights, self.best_weights):
                variable.assign(value)
        return network


def _one_hot_batches(dataset: tf.data.Dataset, model: keras.Model) -> tf.data.Dataset:
    """(images float32 in [0, 1], one-hot float labels) batches, as the evaluator takes them."""
    classes = int(model.output_shape[-1])

    def convert(images, labels):
        images = tf.cast(images, tf.float32) / 255.0 if images.dtype.is_integer else tf.cast(images, tf.float32)
        if labels.shape.rank == 2 and labels.shape[-1] == 1 and labels.dtype.is_integer:
            labels = tf.squeeze(labels, -1)
        if labels.shape.rank == 1:
            labels = tf.one_hot(tf.cast(labels, tf.int32), classes)
        elif labels.shape[-1] != classes:
            raise UserError(f"validation labels have {labels.shape[-1]} classes but the model's logits have {classes}")
        return images, tf.cast(labels, tf.float32)

    return dataset.map(convert)


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state atomically at the end of every epoch (see `checkpoint.py`).

    Besides the variables, the state records the optimizer steps done, the samples per epoch
    (`epoch_examples`, which with the batch size gives every epoch's boundary) and the optimizer's class,
    which `restore` checks: a checkpoint of another update rule or epoch length cannot continue this run.
    `save` with `epoch_step` > 0 writes a mid-epoch checkpoint (`tfrobust.training.faults.Preemption`):
    `epoch` epochs and `epoch_step` steps of the next one done.
    """

    def __init__(
        self, path: str, averaging: WeightAveraging, selection: ModelSelection, *, epoch_examples: int | None = None
    ):
        super().__init__()
        self.path = path
        self.averaging = averaging
        self.selection = selection
        self.epoch_examples = epoch_examples

    def on_train_begin(self, logs=None):
        checkpoint_groups(self.model, self.averaging)  # a model whose variables share a path fails now

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def save(
        self, epochs_done: int, *, epoch_step: int = 0, extra_groups: dict[str, dict[str, keras.Variable]] | None = None
    ) -> None:
        """Writes the state after `epochs_done` epochs and `epoch_step` steps of the next, with
        `extra_groups` (a mid-epoch checkpoint's training metrics) beside the usual groups."""
        optimizer = self.model.optimizer
        variables = {**checkpoint_groups(self.model, self.averaging), **(extra_groups or {})}
        groups = {group: _values(group_variables) for group, group_variables in variables.items()}
        state = {
            "epoch": int(epochs_done),
            "epoch_step": int(epoch_step),
            "best": _jsonable(self.selection.best),
            "latest": self.selection.latest,
            "steps": int(optimizer.iterations.numpy()),
            "optimizer": type(optimizer).__name__,
            "epoch_examples": self.epoch_examples,
        }
        ckpt.save_arrays(self.path, groups, state, what="checkpoint")


class SampleCounts(keras.callbacks.Callback):
    """Adds `real_samples` and `generated_samples` (rows consumed this epoch) to every epoch's logs.

    With generated data (`tfrobust.data.mixing`) every batch holds a fixed number of original and
    generated rows, so an epoch's counts are exact: rows per step times `epoch_steps(epoch)` (epochs differ
    by a step, see `run.py`). Must come before the CSV/TensorBoard loggers.
    """

    def __init__(self, real_per_step: int, generated_per_step: int, epoch_steps: Callable[[int], int]):
        super().__init__()
        self.real_per_step = int(real_per_step)
        self.generated_per_step = int(generated_per_step)
        self.epoch_steps = epoch_steps

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            steps = int(self.epoch_steps(epoch))
            logs["real_samples"] = self.real_per_step * steps
            logs["generated_samples"] = self.generated_per_step * steps


def checkpoint_groups(model: keras.Model, averaging: WeightAveraging) -> dict[str, dict[str, keras.Variable]]:
    """The variables of a training checkpoint by group and key (`checkpoint.py`): the network's by path,
    the weight averages by the path of the weight each averages, the optimizer's by path (a slot's path
    names its network variable)."""
    return {
        "network": ckpt.by_path(averaging.network.weights, "network"),
        "averaging": averaging.state_by_key(),
        "optimizer": ckpt.by_path(model.optimizer.variables, "optimizer"),
    }


def _values(variables: dict[str, keras.Variable]) -> dict:
    return {key: variable.value for key, variable in variables.items()}


def _jsonable(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def restore(
    path: str,
    model: keras.Model,
    averaging: WeightAveraging,
    selection: ModelSelection,
    *,
    epoch_examples: int | None = None,
) -> int:
    """Loads a `TrainingCheckpoint` into a run from `run.build_run` (optimizer already built); returns the
    number of epochs done. Refuses a checkpoint of another optimizer class or (when `epoch_examples` is
    given) another epoch length: its momenta or its step count would not mean the same thing here."""
    return restore_position(path, model, averaging, selection, epoch_examples=epoch_examples)[0]


def restore_position(
    path: str,
    model: keras.Model,
    averaging: WeightAveraging,
    selection: ModelSelection,
    *,
    epoch_examples: int | None = None,
) -> tuple[int, int, dict[str, np.ndarray]]:
    """`restore`, returning (epochs done, steps done of the next epoch, the training metrics' saved state):
    a mid-epoch checkpoint (`TrainingCheckpoint.save` with `epoch_step`) continues at that step, its
    metrics restored by `tfrobust.training.faults.Preemption` once `fit` has reset them."""
    groups, state = ckpt.load_arrays(path)
    optimizer = type(model.optimizer).__name__
    if state.get("optimizer") != optimizer:
        raise UserError(
            f"checkpoint {path} was written with the optimizer {state.get('optimizer')!r}, this run "
            f"uses {optimizer!r} (another tfrobust version): it cannot continue this run"
        )
    if epoch_examples is not None and state.get("epoch_examples") != epoch_examples:
        raise UserError(
            f"checkpoint {path} counts {state.get('epoch_examples')} samples per epoch, this run "
            f"{epoch_examples}: it cannot continue this run"
        )
    for group in ("network", "averaging", "optimizer"):
        if group not in groups:
            raise UserError(f"unreadable checkpoint {path}: no {group!r} arrays")
    variables = checkpoint_groups(model, averaging)
    names = {"network": "network", "averaging": "weight averages", "optimizer": "optimizer"}
    for group, what in names.items():  # every group fits before any variable changes
        ckpt.check_group(variables[group], groups[group], what, path)
    for group, what in names.items():
        ckpt.assign_group(variables[group], groups[group], what, path)
    best = state.get("best") or {}
    if best.get("epoch", -1) >= 0:
        selection.best = best
    selection.latest = state.get("latest") or {}
    epoch_step = int(state.get("epoch_step") or 0)
    metrics = groups.get("metrics", {})
    if epoch_step and not metrics:
        raise UserError(f"unreadable checkpoint {path}: a mid-epoch checkpoint without its 'metrics' arrays")
    return int(state["epoch"]), epoch_step, metrics


def load_best_weights(path: str, network: keras.Model) -> dict:
    """Loads the best averaged weights saved by `ModelSelection` into `network`; returns their record."""
    groups, state = ckpt.load_arrays(path)
    ckpt.assign_group(ckpt.by_path(network.weights, "network"), groups.get("network", {}), "network", path)
    return state.get("best", {})
