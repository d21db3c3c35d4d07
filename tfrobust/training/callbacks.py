"""Keras callbacks of a training run: weight averaging, model selection, checkpointing, run metadata.

Order matters and `run.py` keeps it: `WeightAveraging` (after every step), then `ModelSelection` (reads
the averages, adds validation metrics to the epoch's logs), then `TrainingCheckpoint` (saves everything,
selection state included), then the CSV/TensorBoard loggers (which see the validation metrics).
"""

from __future__ import annotations

import math
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfrobust.errors import UserError
from tfrobust.numerics import full_float32
from tfrobust.training import checkpoint as ckpt
from tfrobust.training.schedules import ema_decay


class WeightAveraging(keras.callbacks.Callback):
    """Exponential moving average of the network's trainable weights (Rebuffi, Gowal et al. 2021, Sec. 4).

    After update t (t = 0, 1, ...): avg <- d_t * avg + (1 - d_t) * w with d_t = min(tau, (1+t)/(10+t)),
    the reference's warm-up (docs/method.md, "Weight averaging"). Only trainable weights are averaged; the
    averaged model uses the raw model's BatchNorm statistics, as the reference evaluates it.
    Keras's optimizer `use_ema` differs (no warm-up), hence this callback.

    Create it under the distribution strategy's scope: its variables must be mirrored like the model's.
    """

    def __init__(self, network: keras.Model, tau: float):
        super().__init__()
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {tau}")
        self.network = network
        self.tau = float(tau)
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

    def _check_alignment(self) -> None:
        pairs = zip(self.averaged_network.weights, self.network.weights)
        if len(self.averaged_network.weights) != len(self.network.weights) or any(
            a.path != b.path or a.shape != b.shape for a, b in pairs
        ):
            raise RuntimeError("clone_model did not reproduce the network's weights in order")

    def _update_averages(self) -> None:
        decay = ema_decay(self.num_updates, self.tau)
        for average, weight in zip(self.averages, self.network.trainable_weights):
            average.assign(decay * average + (1.0 - decay) * tf.cast(weight.value, average.dtype))
        self.num_updates.assign_add(1)

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def sync_averaged_network(self) -> keras.Model:
        """Copies averages (trainable) and raw BatchNorm statistics into `averaged_network`; returns it."""
        averages = iter(self.averages)
        for target, source in zip(self.averaged_network.weights, self.network.weights):
            target.assign(next(averages).value if source.trainable else source.value)
        return self.averaged_network

    def state_variables(self) -> list:
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
    epochs without evaluation, so CSV columns stay fixed) and saves the best averaged weights.
    """

    def __init__(
        self,
        averaging: WeightAveraging,
        evaluate: Callable[[keras.Model], dict[str, float]],
        *,
        every: int,
        total_epochs: int,
        best_path: str,
        select_on: str = "val_avg_pgd40_accuracy",
    ):
        super().__init__()
        if select_on not in self.KEYS:
            raise ValueError(f"select_on must be one of {self.KEYS}, got {select_on!r}")
        self.select_on = select_on
        self.averaging = averaging
        self.evaluate = evaluate
        self.every = int(every)
        self.total_epochs = int(total_epochs)
        self.best_path = best_path
        self.best = {"epoch": -1, select_on: -math.inf}
        self.latest: dict[str, float] = {}

    KEYS = ("val_raw_clean_accuracy", "val_raw_pgd40_accuracy", "val_avg_clean_accuracy", "val_avg_pgd40_accuracy")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        done = epoch + 1
        if self.every <= 0 or (done % self.every != 0 and done != self.total_epochs):
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
            weights = ckpt.by_path(self.averaging.averaged_network.weights, "network")
            ckpt.save_arrays(self.best_path, {"network": _values(weights)}, {"best": self.best}, what="best weights")
        print(
            f"\nepoch {done}: validation clean/PGD-40 raw {metrics['val_raw_clean_accuracy']:.4f}/"
            f"{metrics['val_raw_pgd40_accuracy']:.4f}, averaged {metrics['val_avg_clean_accuracy']:.4f}/"
            f"{metrics['val_avg_pgd40_accuracy']:.4f} (best averaged at epoch {self.best['epoch']})",
            flush=True,
        )


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state atomically at the end of every epoch (see `checkpoint.py`).

    Besides the variables, the state records the optimizer steps done, the samples per epoch
    (`epoch_examples`, which with the batch size gives every epoch's boundary) and the optimizer's class,
    which `restore` checks: a checkpoint of another update rule or epoch length cannot continue this run.
    `save` with `epoch_step` > 0 writes a mid-epoch checkpoint (`tfrobust.training.faults.Preemption`):
    `epoch` epochs and `epoch_step` steps of the next one done.
    """

    def __init__(self, path: str, averaging: WeightAveraging, selection: ModelSelection, *,
                 epoch_examples: int | None = None):
        super().__init__()
        self.path = path
        self.averaging = averaging
        self.selection = selection
        self.epoch_examples = epoch_examples

    def on_train_begin(self, logs=None):
        checkpoint_groups(self.model, self.averaging)  # a model whose variables share a path fails now

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def save(self, epochs_done: int, *, epoch_step: int = 0,
             extra_groups: dict[str, dict[str, keras.Variable]] | None = None) -> None:
        """Writes the state after `epochs_done` epochs and `epoch_step` steps of the next, with
        `extra_groups` (a mid-epoch checkpoint's training metrics) beside the usual groups."""
        optimizer = self.model.optimizer
        variables = {**checkpoint_groups(self.model, self.averaging), **(extra_groups or {})}
        groups = {group: _values(group_variables) for group, group_variables in variables.items()}
        state = {
            "epoch": int(epochs_done), "epoch_step": int(epoch_step), "best": _jsonable(self.selection.best),
            "latest": self.selection.latest, "steps": int(optimizer.iterations.numpy()),
            "optimizer": type(optimizer).__name__, "epoch_examples": self.epoch_examples,
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


def restore(path: str, model: keras.Model, averaging: WeightAveraging, selection: ModelSelection, *,
            epoch_examples: int | None = None) -> int:
    """Loads a `TrainingCheckpoint` into a run from `run.build_run` (optimizer already built); returns the
    number of epochs done. Refuses a checkpoint of another optimizer class or (when `epoch_examples` is
    given) another epoch length: its momenta or its step count would not mean the same thing here."""
    return restore_position(path, model, averaging, selection, epoch_examples=epoch_examples)[0]


def restore_position(path: str, model: keras.Model, averaging: WeightAveraging, selection: ModelSelection, *,
                     epoch_examples: int | None = None) -> tuple[int, int, dict[str, np.ndarray]]:
    """`restore`, returning (epochs done, steps done of the next epoch, the training metrics' saved state):
    a mid-epoch checkpoint (`TrainingCheckpoint.save` with `epoch_step`) continues at that step, its
    metrics restored by `tfrobust.training.faults.Preemption` once `fit` has reset them."""
    groups, state = ckpt.load_arrays(path)
    optimizer = type(model.optimizer).__name__
    if state.get("optimizer") != optimizer:
        raise UserError(f"checkpoint {path} was written with the optimizer {state.get('optimizer')!r}, this run "
                        f"uses {optimizer!r} (another tfrobust version): it cannot continue this run")
    if epoch_examples is not None and state.get("epoch_examples") != epoch_examples:
        raise UserError(f"checkpoint {path} counts {state.get('epoch_examples')} samples per epoch, this run "
                        f"{epoch_examples}: it cannot continue this run")
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
