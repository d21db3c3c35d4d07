"""Training under faults: non-finite numbers, a stop request (SIGTERM), files that cannot be written.

Non-finite numbers. Every training step reports whether its loss and its gradients are finite
(`nonfinite_code`, computed on the device beside the loss and returned with the step's metrics under
`NONFINITE_KEY`, so it costs no host transfer beyond the one Keras makes for its logs; under several
replicas the flags are summed over replicas first, so every replica reports the same verdict).
`FaultGuard`, the first callback of a run, reads it after every step and, before anything is written at
an epoch's end, checks that the network's weights, the weight averages and the optimizer's state are
finite. Either check stops training at once with one `NonFiniteError` line naming the epoch, the step,
the quantity and the last good checkpoint, which is never overwritten: no callback after the guard runs
for that step or epoch. Under float16 loss scaling a non-finite gradient is an overflow that the optimizer
skips (`loss_scaled_code`): training goes on; a non-finite loss or weight still stops it. The export
refuses non-finite weights too (`tfrobust.export.export_network`).

Stop requests. `stop_on_sigterm` makes SIGTERM (what cloud schedulers and Kubernetes send before they kill
a machine) set an event instead of ending the process. `Preemption`, the last callback of a run, reads the
event after every step: mid-epoch it writes a checkpoint of that step (`TrainingCheckpoint` with
`epoch_step`, and the training metrics' running sums, so the epoch's logged means come out as an
uninterrupted run's), at an epoch's end the epoch's checkpoint is already written; then it raises
`tfrobust.errors.Interrupted` naming the `--resume` command. The data order, the augmentation and the
attack's random starts are functions of (seed, optimizer step), so a run resumed from step k of epoch e
continues exactly where the uninterrupted run is after that step. A request that arrives during an
epoch's validation is honoured after that epoch's checkpoint.

Files. Every file a run writes through `tfrobust.fileio` fails as one `WriteError` line naming the file;
`CSVLog` does the same for Keras's CSV logger, which writes the file itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobust.errors import Interrupted, NonFiniteError, UserError
from tfrobust.fileio import write_error
from tfrobust.training import callbacks as cb
from tfrobust.training import checkpoint as ckpt

NONFINITE_KEY = "nonfinite"  # the step output FaultGuard reads (and removes from the logs)
METRICS_GROUP = "metrics"  # a mid-epoch checkpoint's group of the training metrics' running sums

# Bits of `nonfinite_code`, in the order the message names them.
_QUANTITIES = (("the loss", "NaN"), ("the loss", "infinite"), ("a gradient", "NaN"), ("a gradient", "infinite"))


def nonfinite_code(loss: tf.Tensor, gradients: list) -> tf.Tensor:
    """A float32 scalar: 0 when the step's `loss` and every element of every gradient are finite, else the
    sum of 1 (the loss is NaN), 2 (the loss is infinite), 4 (a gradient element is NaN), 8 (one is
    infinite), over all replicas. Elementwise checks rather than the gradients' global norm: the norm of
    large finite gradients overflows float32 and would be reported as infinite."""
    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in gradients if g is not None]
    loss = tf.cast(loss, tf.float32)

    def any_of(check, tensors):
        return tf.reduce_any(tf.stack([tf.reduce_any(check(t)) for t in tensors])) if tensors else tf.constant(False)

    flags = tf.cast(
        tf.stack(
            [
                tf.reduce_any(tf.math.is_nan(loss)),
                tf.reduce_any(tf.math.is_inf(loss)),
                any_of(tf.math.is_nan, values),
                any_of(tf.math.is_inf, values),
            ]
        ),
        tf.float32,
    )
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        flags = context.all_reduce(tf.distribute.ReduceOp.SUM, flags)  # one replica's NaN stops them all
    return tf.reduce_sum(tf.cast(flags > 0, tf.float32) * tf.constant([1.0, 2.0, 4.0, 8.0]))


def loss_scaled_code(code: tf.Tensor, loss_scale: tf.Tensor) -> tf.Tensor:
    """The `nonfinite_code` of a step under dynamic loss scaling (float16 training,
    `optimizers.StepCountingLossScaleOptimizer`): a non-finite gradient there is an overflow of the scaled
    float16 gradients, which the optimizer answers by skipping the update and halving the scale, so its
    bits (4, 8) are dropped while `loss_scale` (the scale this step's loss was multiplied by) is at least 1.
    Below 1 the gradients overflow even unscaled: then they count, as without loss scaling. The loss's bits
    (1, 2) always count: the loss is float32 and unscaled, so a non-finite one is no overflow of the scale."""
    loss_bits = tf.math.floormod(code, 4.0)
    return tf.where(tf.cast(loss_scale, tf.float32) >= 1.0, loss_bits, code)


def describe_code(code: float) -> str:
    """The quantities of a `nonfinite_code` in words: "the loss is NaN", "a gradient is infinite", ..."""
    bits = int(code)
    parts = [f"{what} is {kind}" for i, (what, kind) in enumerate(_QUANTITIES) if bits & (1 << i)]
    return " and ".join(parts) or f"unknown non-finite code {code}"


_GROUP_NAMES = {
    "network": "the network's weights",
    "averaging": "the weight average",
    "optimizer": "the optimizer's state",
    METRICS_GROUP: "the training metrics",
}


def nonfinite_groups(groups: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The groups of variables (`callbacks.checkpoint_groups`) holding a NaN or an infinity, in words
    ("the weight average is NaN"); empty when all are finite. Reduced on the device: one transfer."""
    names, checks = [], []
    for group, variables in groups.items():
        values = [tf.convert_to_tensor(v.value if hasattr(v, "value") else v) for v in variables.values()]
        values = [v for v in values if v.dtype.is_floating]
        if values:
            names.append(group)
            checks.append(
                tf.stack(
                    [
                        tf.reduce_any(tf.stack([tf.reduce_any(tf.math.is_nan(v)) for v in values])),
                        tf.reduce_any(tf.stack([tf.reduce_any(tf.math.is_inf(v)) for v in values])),
                    ]
                )
            )
    if not checks:
        return []
    flags = tf.stack(checks).numpy()
    found = []
    for group, (nan, inf) in zip(names, flags):
        if nan or inf:
            kind = "NaN" if nan and not inf else "infinite" if inf and not nan else "NaN and infinite"
            found.append(f"{_GROUP_NAMES.get(group, group)} {'are' if group == 'network' else 'is'} {kind}")
    return found


def describe_checkpoint(path: str) -> str:
    """Where the checkpoint at `path` stands, "runs/x/checkpoint.npz (after epoch 2)" or "(epoch 3,
    step 6)", or that none is written yet."""
    if not os.path.exists(path):
        return "no checkpoint is written yet"
    try:
        state = ckpt.read_state(path)
    except UserError:
        return f"{path} (unreadable)"
    epoch, step = int(state.get("epoch", 0)), int(state.get("epoch_step", 0) or 0)
    return f"{path} ({f'epoch {epoch + 1}, step {step}' if step else f'after epoch {epoch}'})"


class _Position(keras.callbacks.Callback):
    """Knows the epoch and the step within it: `fit` numbers the batches of each call from 0, and the first
    epoch of a run resumed mid-epoch starts at step `resume_step`."""

    def __init__(self, epoch_steps: Callable[[int], int], resume_epoch: int = 0, resume_step: int = 0):
        super().__init__()
        self.epoch_steps = epoch_steps
        self.resume_epoch, self.resume_step = int(resume_epoch), int(resume_step)
        self.epoch, self.offset = resume_epoch, resume_step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = int(epoch)
        self.offset = self.resume_step if epoch == self.resume_epoch else 0

    def step(self, batch: int) -> int:
        """Steps of the current epoch done after batch `batch` (0-based in this `fit` call)."""
        return self.offset + int(batch) + 1

    def where(self, batch: int) -> str:
        return f"epoch {self.epoch + 1}, step {self.step(batch)} of {self.epoch_steps(self.epoch)}"


class FaultGuard(_Position):
    """Stops training at the first non-finite loss, gradient, weight, weight average or optimizer state
    (module docstring). Must be the run's first callback: it removes `NONFINITE_KEY` from the logs before
    the loggers see them and raises before any later callback acts on the step or the epoch."""

    def __init__(
        self,
        averaging: cb.WeightAveraging,
        checkpoint_path: str,
        epoch_steps: Callable[[int], int],
        resume_epoch: int = 0,
        resume_step: int = 0,
    ):
        super().__init__(epoch_steps, resume_epoch, resume_step)
        self.averaging = averaging
        self.checkpoint_path = checkpoint_path

    def on_train_batch_end(self, batch, logs=None):
        code = float(np.sum(logs.pop(NONFINITE_KEY, 0))) if logs is not None else 0.0
        if code > 0:
            raise NonFiniteError(self._stopped(self.where(batch), describe_code(code)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.pop(NONFINITE_KEY, None)
        self.check_state(f"the end of epoch {int(epoch) + 1}")

    def check_state(self, where: str, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Raises `NonFiniteError` when a variable the checkpoint would hold is not finite."""
        groups = {**cb.checkpoint_groups(self.model, self.averaging), **(extra or {})}
        found = nonfinite_groups(groups)
        if found:
            raise NonFiniteError(self._stopped(where, " and ".join(found)))

    def _stopped(self, where: str, what: str) -> str:
        described = describe_checkpoint(self.checkpoint_path)
        last = f"the last good checkpoint {described} is untouched" if not described.startswith("no ") else described
        return f"training stopped at {where}: {what}; {last}"


class Preemption(_Position):
    """Honours a stop request (`stop`, set by `stop_on_sigterm`) at the next step boundary: writes a
    mid-epoch checkpoint (or, at an epoch's end, relies on the epoch's) and raises `Interrupted`. Restores
    the training metrics' running sums at the start of a run resumed mid-epoch (`resume_metrics`). Must
    come after `TrainingCheckpoint` and the loggers."""

    def __init__(
        self,
        stop: threading.Event | None,
        checkpoint: cb.TrainingCheckpoint,
        guard: FaultGuard,
        epoch_steps: Callable[[int], int],
        run_dir: str,
        resume_epoch: int = 0,
        resume_step: int = 0,
        resume_metrics: Mapping[str, np.ndarray] | None = None,
    ):
        super().__init__(epoch_steps, resume_epoch, resume_step)
        self.stop = stop
        self.checkpoint = checkpoint
        self.guard = guard
        self.run_dir = run_dir
        self.resume_metrics = dict(resume_metrics or {})

    def metric_variables(self) -> dict[str, Any]:
        return ckpt.by_path([v for m in self.model.metrics for v in m.variables], "training metrics")

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if epoch == self.resume_epoch and self.resume_step and self.resume_metrics:
            # `fit` resets the metrics before this call: the epoch's means continue from the saved sums.
            ckpt.assign_group(self.metric_variables(), self.resume_metrics, "training metrics", self.checkpoint.path)
            self.resume_metrics = {}

    def requested(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def on_train_batch_end(self, batch, logs=None):
        if not self.requested():
            return
        step = self.step(batch)
        if step >= self.epoch_steps(self.epoch):
            return  # the epoch's last step: its end writes the checkpoint, `on_epoch_end` stops
        where = self.where(batch)
        metrics = {METRICS_GROUP: self.metric_variables()}
        self.guard.check_state(where, metrics)
        self.checkpoint.save(self.epoch, epoch_step=step, extra_groups=metrics)
        raise Interrupted(self.message(where))

    def on_epoch_end(self, epoch, logs=None):
        if self.requested():
            raise Interrupted(self.message(f"the end of epoch {int(epoch) + 1}"))

    def stop_if_requested(self, epochs_done: int, *, first: bool) -> None:
        """Before the `fit` of an epoch (the `first` of this process, or after `epochs_done` epochs): the
        last checkpoint is the state."""
        if self.requested():
            raise Interrupted(self.message("the start" if first else f"the end of epoch {epochs_done}"))

    def message(self, where: str) -> str:
        return (
            f"training stopped on request (SIGTERM) at {where}: the run is saved in "
            f"{describe_checkpoint(self.checkpoint.path)}; continue with: tfrobust train --resume {self.run_dir}"
        )


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[threading.Event]:
    """Yields an event that SIGTERM sets (instead of ending the process) while the block runs; the previous
    handler is restored after. Only the main thread can install a handler: elsewhere the event is only
    set by the caller."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class CSVLog(keras.callbacks.CSVLogger):
    """Keras's `CSVLogger`, whose failed writes (a full disk, a read-only directory) are one `WriteError`
    line naming the log instead of a traceback. The row of an epoch is written before its checkpoint: a
    failed or partial row is dropped on resume (`run.truncate_log`)."""

    def _guarded(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except OSError as error:
            raise write_error(error, self.filename, "training log") from error

    def on_train_begin(self, logs=None):
        self._guarded(super().on_train_begin, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._guarded(super().on_epoch_end, epoch, logs)

    def on_train_end(self, logs=None):
        self._guarded(super().on_train_end, logs)
