"""One training run, from a `TrainConfig` to a run directory and an exported SavedModel.

Run directory (`--out`):
    config.json        the fully resolved TrainConfig (what `--resume` rebuilds the run from)
    checkpoint.npz     whole training state after the last finished epoch, or after the step where a stop
                       request (SIGTERM) arrived (atomic; see checkpoint.py and faults.py)
    best.npz           the best averaged weights by validation PGD-40 accuracy (model selection)
    log.csv            per-epoch training and validation metrics (appended on resume); with --extra-data
                       also real_samples / generated_samples (rows of each kind consumed that epoch)
    tensorboard/       the same for TensorBoard
    summary.json       final numbers, where the model was exported, throughput
    .lock              held (flock) while a process trains in this directory

The data order, the augmentation and the attack's random starts are functions of (seed, epoch, step),
so a run resumed from its checkpoint continues exactly where the uninterrupted run would be.

Faults (faults.py): a non-finite loss, gradient or weight stops the run with one line and writes nothing
of that state; a stop request (`train(stop=...)`, set by SIGTERM under the CLI) writes a checkpoint at the
next step boundary and raises `tfrobust.errors.Interrupted`; a file that cannot be written (a full disk, a
read-only directory) is one `WriteError` line naming it, and the previous checkpoint stays as it was.

Epochs (docs/method.md, "Epoch length"; the reference's experiment.py `steps_from_epochs`): an epoch is the
whole original training set, the validation hold-out included (50,000 CIFAR-10 images), over the batch
size. That is rarely an integer number of steps, so epoch e ends after floor((e + 1) * examples / batch)
optimizer steps (`schedules.steps_after_epochs`) and epochs differ in length by one step (CIFAR-10 at
batch 1024: 48 or 49 steps); the whole run, the warm-up and the learning-rate schedule are those of the
reference. The validation images stay out of training: the data streams run over the training split in
passes of len(train) // batch batches (`Run.data_pass_steps`), independently of where epochs end.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from tfrobust.augment.registry import build_augmentation, mixing_options, parse_aug, produces_soft_labels
from tfrobust.config import TrainConfig
from tfrobust.data.datasets import DEFAULT_VAL_SIZE, DatasetInfo, Splits, load_dataset
from tfrobust.data.extra import ExtraData, open_extra_data
from tfrobust.data.mixing import mix_plan, mixed_train_dataset, samples_per_epoch
from tfrobust.data.pipeline import eval_dataset, train_dataset
from tfrobust.errors import UserError, WriteError
from tfrobust.export import export_metadata, export_network
from tfrobust.fileio import write_error, write_json_atomic, write_text_atomic
from tfrobust.models.registry import build_model
from tfrobust.training import callbacks as cb
from tfrobust.training import distribute, faults
from tfrobust.training.checkpoint import CHECKPOINT_NAME
from tfrobust.training.optimizers import TraceSGD
from tfrobust.training.schedules import steps_after_epochs, training_schedule
from tfrobust.training.trainer import AdversarialTrainer

CONFIG_NAME = "config.json"
BEST_NAME = "best.npz"
LOCK_NAME = ".lock"


@contextlib.contextmanager
def locked_run_dir(path: str) -> Iterator[None]:
    """Holds an exclusive flock on `path/.lock`; a second process gets one clear error line."""
    try:
        handle = open(os.path.join(path, LOCK_NAME), "a+")
    except OSError as error:
        raise write_error(error, os.path.join(path, LOCK_NAME), "run directory lock") from error
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"run directory {path} is in use by another tfrobust process") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def check_new_run_dir(path: str) -> None:
    """A new run needs an absent or empty directory: never mix or overwrite runs."""
    if os.path.isfile(os.path.join(path, CONFIG_NAME)):
        raise UserError(f"{path} holds another run (config.json): use --resume {path}, or another --out")
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise UserError(f"--out {path} exists and is not an empty directory: choose another --out")


def read_run_config(path: str) -> TrainConfig:
    config_path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise UserError(f"{path} is not a tfrobust run directory (no config.json)")
    try:
        with open(config_path) as handle:
            values = json.load(handle)
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8 text (a flipped bit)
        raise UserError(f"unreadable {config_path}: {error}") from None
    if not isinstance(values, dict):
        raise UserError(f"unreadable {config_path}: expected a JSON object, got {type(values).__name__}")
    try:
        return TrainConfig.from_run_dict(values).validate()
    except (TypeError, ValueError) as error:  # a field of the wrong type (a string where a number goes, ...)
        raise UserError(f"unreadable {config_path}: {' '.join(str(error).split())[:200]}") from None


@dataclasses.dataclass
class Run:
    """Everything a run builds; `train` fits it, tests poke at its parts."""

    config: TrainConfig
    splits: Splits
    strategy: tf.distribute.Strategy
    trainer: AdversarialTrainer
    averaging: cb.WeightAveraging
    selection: cb.ModelSelection
    epoch_examples: int  # samples per epoch: the whole original training set, validation images included
    data_pass_steps: int  # batches per pass of the data pipelines over the training split

    def epoch_start(self, epoch: int) -> int:
        """Optimizer steps done before epoch `epoch` (0-based): floor(epoch * examples / batch)."""
        return steps_after_epochs(epoch, self.epoch_examples, self.config.batch_size)

    def epoch_steps(self, epoch: int) -> int:
        """Optimizer steps of epoch `epoch`."""
        return self.epoch_start(epoch + 1) - self.epoch_start(epoch)


def build_run(config: TrainConfig, run_dir: str, splits: Splits | None = None) -> Run:
    """Builds data, model, optimizer and callbacks for `config` (resolved) writing into `run_dir`."""
    keras.mixed_precision.set_global_policy(config.precision)
    keras.utils.set_random_seed(config.seed)  # initial weights too are a function of the seed
    splits = splits or load_dataset(
        config.dataset, val_size=config.val_size, seed=config.seed, data_dir=config.data_dir
    )
    strategy = distribute.make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    distribute.check_batch_size(config.batch_size, replicas, config.aug_repeats)
    if config.batch_size > len(splits.train):
        raise UserError(
            f"--batch-size {config.batch_size} is larger than the training split ({len(splits.train)} images)"
        )
    epoch_examples = len(splits.train) + len(splits.val)
    data_pass_steps = len(splits.train) // config.batch_size
    info = splits.info
    eps = config.resolved_eps
    # Per-replica BatchNorm statistics unless --sync-batch-norm (tfrobust/training/distribute.py).
    synchronized_bn = config.sync_batch_norm and replicas > 1
    with strategy.scope():
        network = build_model(
            config.model,
            input_shape=info.image_shape,
            num_classes=info.num_classes,
            mean=info.mean,
            std=info.std,
            activation=config.activation,
            synchronized_bn=synchronized_bn,
        )
        jit = distribute.resolve_jit_compile(config.jit_compile, replicas=replicas, synchronized_bn=synchronized_bn)
        # The attack is the trainer's default (`trainer.training_attack`), built for this strategy's replicas.
        trainer = AdversarialTrainer(
            network,
            loss=config.loss,
            eps=eps,
            norm=config.norm,
            beta=config.beta,
            attack_steps=config.attack_steps,
            attack_optimizer=config.inner_optimizer,
            weight_decay=config.weight_decay,
            seed=config.seed,
            labels_as_attack_target=produces_soft_labels(parse_aug(config.aug)),
            xla_per_replica=jit and replicas > 1,
        )
        schedule = training_schedule(
            peak=config.learning_rate,
            warmup_epochs=config.warmup_epochs,
            epochs=config.epochs,
            epoch_examples=epoch_examples,
            batch_size=config.batch_size,
            kind=config.schedule,
        )
        # optax's SGD (utils.sgd_momentum): the trace holds raw gradients, the lr scales the update.
        optimizer = TraceSGD(learning_rate=schedule, momentum=config.momentum, nesterov=True)
        trainer.compile(optimizer=optimizer, jit_compile=jit and replicas == 1)
        trainer.build(tuple((None, *info.image_shape)))
        # Built now, so that a checkpoint can be restored into it before `fit`: the optimizer, or under
        # mixed_float16 the loss-scale optimizer that `compile` wrapped it in (its scale is checkpointed).
        trainer.optimizer.build(network.trainable_variables)
        averaging = cb.WeightAveraging(network, config.ema_decay)

    val_data = eval_dataset(splits.val, num_classes=info.num_classes, batch_size=min(config.batch_size, 256))
    every = config.eval_every if len(splits.val) else 0
    selection = cb.ModelSelection(
        averaging,
        validation_data=val_data,
        norm=config.norm,
        eps=eps,
        seed=config.seed,
        every=every,
        total_epochs=config.epochs,
        best_path=os.path.join(run_dir, BEST_NAME),
        select_on="val_avg_clean_accuracy" if config.loss == "standard" else "val_avg_pgd40_accuracy",
    )
    return Run(config, splits, strategy, trainer, averaging, selection, epoch_examples, data_pass_steps)


def train(
    config: TrainConfig | None,
    out_dir: str,
    *,
    resume: bool = False,
    verbose: Any = "auto",
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Trains (or resumes) the run in `out_dir`, exports the selected averaged model, returns the summary.

    `stop` (`faults.stop_on_sigterm` gives one that SIGTERM sets): once set, the run writes a checkpoint at
    the next step boundary and raises `tfrobust.errors.Interrupted` naming the `--resume` command.
    """
    if resume:
        if config is not None:
            raise UserError("--resume rebuilds the run from RUN_DIR/config.json: give no other training options")
        config = read_run_config(out_dir)
    else:
        assert config is not None
        config = config.validate().resolved()
    splits = None
    if config.val_size is None:
        splits, config = _resolve_val_size(config)
    # Generated data is opened and validated against the original data before anything is written:
    # a bad file leaves no run directory behind.
    splits, extra = _open_extra_data(config, splits) if config.extra_data else (splits, None)
    chief = distribute.is_chief()
    run_dir = out_dir if chief else tempfile.mkdtemp(prefix="tfrobust-worker-")
    if not resume and chief:
        check_new_run_dir(run_dir)
    created = not os.path.exists(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as error:
        raise write_error(error, run_dir, "run directory") from error
    try:
        with locked_run_dir(run_dir):
            if not resume:
                try:
                    write_text_atomic(os.path.join(run_dir, CONFIG_NAME), config.to_json(), what="run config")
                except WriteError:
                    _undo_start(run_dir, created)  # the same command can start the run again
                    raise
            return _train_locked(config, run_dir, chief=chief, verbose=verbose, splits=splits, extra=extra, stop=stop)
    finally:
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)


def _undo_start(run_dir: str, created: bool) -> None:
    """Removes what a new run wrote before its config (the lock file, the directory it created)."""
    with contextlib.suppress(OSError):
        os.remove(os.path.join(run_dir, LOCK_NAME))
        if created:
            os.rmdir(run_dir)


def _resolve_val_size(config: TrainConfig) -> tuple[Splits, TrainConfig]:
    """Loads the data with the default hold-out (`default_val_size`) and writes its size into the config;
    says so in one line where it is less than `DEFAULT_VAL_SIZE` (a small dataset)."""
    splits = load_dataset(config.dataset, val_size=None, seed=config.seed, data_dir=config.data_dir)
    held_out, total = len(splits.val), len(splits.train) + len(splits.val)
    if held_out < DEFAULT_VAL_SIZE:
        print(
            f"validation: {held_out} of the {total} training images held out (default {DEFAULT_VAL_SIZE}, "
            "at most a fifth of the training set; --val-size sets it)",
            flush=True,
        )
    return splits, dataclasses.replace(config, val_size=held_out)


def _open_extra_data(config: TrainConfig, splits: Splits | None = None) -> tuple[Splits, ExtraData]:
    """The original splits and the memory-mapped, validated generated data of `config.extra_data`."""
    if splits is None:
        splits = load_dataset(config.dataset, val_size=config.val_size, seed=config.seed, data_dir=config.data_dir)
    extra = open_extra_data(config.extra_data, splits.info, require_labels=config.real_ratio < 1.0)
    # Checks batch composition (ratio, repeats) now rather than when the pipeline is built.
    mix_plan(config.batch_size, config.real_ratio, config.aug_repeats)
    return splits, extra


def _train_locked(
    config: TrainConfig,
    run_dir: str,
    *,
    chief: bool,
    verbose: Any,
    splits: Splits | None = None,
    extra: ExtraData | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    run = build_run(config, run_dir, splits)
    checkpoint_path = os.path.join(run_dir, CHECKPOINT_NAME)
    initial_epoch, initial_step, saved_metrics = 0, 0, {}
    if os.path.exists(checkpoint_path):
        initial_epoch, initial_step, saved_metrics = cb.restore_position(
            checkpoint_path, run.trainer, run.averaging, run.selection, epoch_examples=run.epoch_examples
        )
        if initial_step and not (initial_epoch < config.epochs and initial_step < run.epoch_steps(initial_epoch)):
            raise UserError(
                f"unreadable checkpoint {checkpoint_path}: step {initial_step} of epoch "
                f"{initial_epoch + 1} is not inside this run's epochs"
            )
        within = (
            f", step {initial_step} of {run.epoch_steps(initial_epoch)} of epoch {initial_epoch + 1}"
            if initial_step
            else ""
        )
        print(f"resuming {run_dir} after epoch {initial_epoch} of {config.epochs}{within}", flush=True)
    replicas = run.strategy.num_replicas_in_sync

    def epoch_data(epoch: int, skip: int = 0) -> tf.data.Dataset:
        """The batches of epoch `epoch` after its first `skip`: the data streams from optimizer step
        `run.epoch_start(epoch) + skip` on."""
        first_pass, first_step = divmod(run.epoch_start(epoch) + skip, run.data_pass_steps)
        data, _ = training_stream(
            config,
            run.splits,
            extra,
            replicas=replicas,
            first_epoch=first_pass,
            first_step=first_step,
            steps_per_epoch=run.data_pass_steps,
        )
        return data

    counts = None
    if extra is not None:
        real_rows, generated_rows = samples_per_epoch(
            config.batch_size, config.real_ratio, config.aug_repeats, 1, devices=replicas
        )
        counts = cb.SampleCounts(real_rows, generated_rows, run.epoch_steps)
    log_path = os.path.join(run_dir, "log.csv")
    if initial_epoch > 0:
        truncate_log(log_path, initial_epoch)
    # The CSV row of an epoch is written before its checkpoint: a kill in between leaves a row that the
    # resumed run drops (truncate_log) and writes again, never a missing one.
    checkpoint = cb.TrainingCheckpoint(checkpoint_path, run.averaging, run.selection, epoch_examples=run.epoch_examples)
    resumed_at = {"resume_epoch": initial_epoch, "resume_step": initial_step}
    guard = faults.FaultGuard(run.averaging, checkpoint_path, run.epoch_steps, **resumed_at)
    preemption = faults.Preemption(
        stop, checkpoint, guard, run.epoch_steps, run_dir, resume_metrics=saved_metrics, **resumed_at
    )
    callbacks = _OneTrainingRun(
        [
            guard,  # first: a non-finite step or state stops the run before any other callback acts on it
            run.averaging,
            run.selection,
            *([counts] if counts is not None else []),  # adds the sample counts before the loggers read logs
            faults.CSVLog(log_path, append=initial_epoch > 0),
            checkpoint,
            keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
            preemption,  # last: at an epoch's end the checkpoint and the logs are written before it stops
        ],
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=config.epochs,
        steps=run.epoch_steps(initial_epoch) - initial_step,
        model=run.trainer,
    )
    start = time.time()
    # One `fit` per epoch: Keras epochs have a fixed number of steps, the reference's alternate between two
    # (module docstring). The compiled train function is built once and reused by every call; the
    # callbacks see one training run.
    if initial_epoch < config.epochs:
        callbacks.begin()
        logs = None
        try:
            for epoch in range(initial_epoch, config.epochs):
                preemption.stop_if_requested(epoch, first=epoch == initial_epoch)
                skip = initial_step if epoch == initial_epoch else 0
                steps = run.epoch_steps(epoch) - skip
                callbacks.set_params({**callbacks.params, "steps": steps})
                history = run.trainer.fit(
                    epoch_data(epoch, skip),
                    epochs=epoch + 1,
                    initial_epoch=epoch,
                    steps_per_epoch=steps,
                    callbacks=callbacks,
                    verbose=verbose,
                    shuffle=False,  # the pipeline already orders the data by (seed, pass)
                )
                logs = {key: values[-1] for key, values in history.history.items() if values}
                if run.trainer.stop_training:
                    break
        except BaseException:
            with contextlib.suppress(Exception):  # closes the loggers' files; the first error is the one to see
                callbacks.end(None)
            if verbose != 0:
                print(flush=True)  # ends the progress bar's line: the message that follows gets its own
            raise
        callbacks.end(logs)
    seconds = time.time() - start
    images = (run.epoch_start(config.epochs) - run.epoch_start(initial_epoch) - initial_step) * config.batch_size
    summary: dict[str, Any] = {
        "epochs": config.epochs,
        "resumed_from_epoch": initial_epoch,
        "train_seconds": round(seconds, 1),
        "train_images_per_second": round(images / seconds, 2) if seconds > 0 and images else None,
        "best": run.selection.best if run.selection.best["epoch"] >= 0 else None,
        "last": run.selection.latest or None,
    }
    if chief:
        summary["export"] = export_selected(run, run_dir)
        write_json_atomic(os.path.join(run_dir, "summary.json"), summary, indent=2, sort_keys=True, what="run summary")
    return summary


def training_stream(
    config: TrainConfig,
    splits: Splits,
    extra: ExtraData | None,
    *,
    replicas: int,
    first_epoch: int,
    steps_per_epoch: int,
    first_step: int = 0,
) -> tuple[tf.data.Dataset, tuple[int, int] | None]:
    """The batches `fit` trains on (augmented) from batch `first_step` of data pass `first_epoch` on, and
    with generated data the (original, generated) rows of every batch.

    Every batch is `replicas` consecutive device batches (replica k trains on block k): the generated-data
    composition and the mixing draws follow the reference per device batch (tfrobust.data.mixing,
    tfrobust.augment.batch_augmentation), with `config.aug_repeats` emulated workers per device batch.
    """
    info = splits.info
    # Pixel sizes scale with the image (Pad&Crop's 4 pixels on 32x32 is 1 on 8x8 digits): see
    # augment.registry.default_options. Layers run in float32 whatever the training precision.
    names = parse_aug(config.aug)
    augment = build_augmentation(
        names,
        image_shape=info.image_shape,
        allow_flip=info.allow_flip,
        options=mixing_options(names, draws=config.mix_draws, devices=replicas, sub_batches=config.aug_repeats),
    )
    augment_fn = (lambda batch, seed: augment(batch, training=True, seed=seed)) if names else None
    if extra is None:
        data = train_dataset(
            splits.train,
            num_classes=info.num_classes,
            batch_size=config.batch_size,
            seed=config.seed,
            first_epoch=first_epoch,
            first_step=first_step,
            steps_per_epoch=steps_per_epoch,
            augment=augment_fn,
            repeats=config.aug_repeats,
            devices=replicas,
        )
        return data, None
    # Generated data (docs/generated_data.md): the reference's composition, exact in every batch.
    data = mixed_train_dataset(
        splits.train,
        extra,
        num_classes=info.num_classes,
        batch_size=config.batch_size,
        real_ratio=config.real_ratio,
        label_smoothing=config.extra_label_smoothing,
        seed=config.seed,
        first_epoch=first_epoch,
        first_step=first_step,
        steps_per_epoch=steps_per_epoch,
        augment=augment_fn,
        repeats=config.aug_repeats,
        devices=replicas,
    )
    return data, samples_per_epoch(config.batch_size, config.real_ratio, config.aug_repeats, 1, devices=replicas)


class _OneTrainingRun(keras.callbacks.CallbackList):
    """Callbacks of a run that calls `fit` once per epoch: `fit`'s own on_train_begin / on_train_end are
    ignored, `begin` and `end` call them once, so loggers and writers open and close once per run."""

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def begin(self) -> None:
        super().on_train_begin()

    def end(self, logs: dict | None) -> None:
        super().on_train_end(logs)


def truncate_log(path: str, epochs_done: int) -> None:
    """Keeps the CSV header and the whole rows of epochs < `epochs_done` (0-based `epoch` column): a row
    cut short by a failed write (fewer fields than the header, or an epoch that is not a number) goes."""
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        lines = handle.read().splitlines()
    if not lines:
        return
    width = len(next(csv.reader(lines[:1])))

    def whole_and_done(line: str) -> bool:
        fields = next(csv.reader([line]), [])
        return len(fields) == width and fields[0].isdigit() and int(fields[0]) < epochs_done

    kept = lines[:1] + [line for line in lines[1:] if whole_and_done(line)]
    write_text_atomic(path, "\n".join(kept) + "\n", what="training log")


def float32_network(config: TrainConfig, info: DatasetInfo) -> keras.Model:
    """`config`'s network for `info`'s images, built in float32 whatever the precision policy (restored).

    Exports and evaluations are float32 whatever the training precision: attacks on a bf16 or fp16 model
    get quantised (or underflowing) gradients, which can overstate robustness.

    Example::

        network = float32_network(config, run.splits.info)  # initial weights; set_weights to fill it
    """
    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        return build_model(
            config.model,
            input_shape=info.image_shape,
            num_classes=info.num_classes,
            mean=info.mean,
            std=info.std,
            activation=config.activation,
        )
    finally:
        keras.mixed_precision.set_global_policy(policy)


def export_selected(run: Run, run_dir: str, which: str = "best") -> str:
    """Exports the averaged model (best on validation, else the last) in float32; returns its path."""
    config, info = run.config, run.splits.info
    averaged = run.averaging.sync_averaged_network()
    best_path = os.path.join(run_dir, BEST_NAME)
    selected = "last"
    if which == "best" and os.path.exists(best_path):
        cb.load_best_weights(best_path, averaged)
        selected = "best"
    network = float32_network(config, info)
    network.set_weights([w.numpy() for w in averaged.weights])
    metadata = export_metadata(
        dataset=info,
        norm=config.norm,
        eps=config.resolved_eps,
        weights=f"weight average (EMA tau {config.ema_decay}), {selected} by {run.selection.select_on}",
        validation=run.selection.best if selected == "best" else run.selection.latest,
        training_config=dataclasses.asdict(config),
        run_dir=os.path.abspath(run_dir),
    )
    return export_network(network, root=config.export_dir, name=config.export_name, metadata=metadata)
