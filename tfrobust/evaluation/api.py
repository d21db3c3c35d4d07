"""The evaluation as Python functions: robust accuracy of any model on the caller's arrays.

`evaluate(model, images, labels, attack="aa")` runs a cascade of attacks (`cascades.CASCADES`, AutoAttack's
standard version by default; "aa-plus", "aa-rand" and custom lists too: `versions.py`) on a `keras.Model`,
a `.keras` file, a SavedModel directory (a tfrobust export or any other) or a differentiable callable, and
returns an `Evaluation`: its `report` is the JSON report `tfrobust eval` writes, its `result` the
per-example outcome (`engine.EvalResult`). `autoattack(...)` returns AutoAttack's adversarial examples, as
the reference's `AutoAttack.run_standard_evaluation` (github.com/fra31/auto-attack,
`autoattack/autoattack.py`) does. The rules (which points are attacked, what
counts as broken) are the engine's, AutoAttack's (docs/method.md, "Evaluation"; `engine.py`).

Both run three shared steps, which `tfrobust eval` (`run.run_eval`) also runs after loading its dataset, so
that the command line has no evaluation logic of its own: `check_options` (the settings),
`check_data` (images, labels and model agree: one clear `UserError` otherwise) and `evaluate_arrays` (the
cascade, the report, the files).

Input conventions (docs/api.md, "Evaluation and export"): images NHWC, float in [0, 1] or uint8 0..255 (converted as
x / 255, as `tfrobust eval` converts its datasets); labels class indices [N] (or [N, 1]) or one-hot rows
[N, classes] (converted to indices; soft labels are refused: an evaluation needs one true class per image).
The radius eps is in [0, 1] image units whatever the model expects; `input_range=(low, high)` serves a
model that expects low + (high - low)·x (e.g. (0, 255) for `keras.applications` models).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobust.errors import UserError
from tfrobust.evaluation.cascades import LogitsFn
from tfrobust.evaluation.checks import onednn_warning
from tfrobust.evaluation.engine import (
    JIT_COMPILE_MODES,
    EvalResult,
    Evaluator,
    keras_logits_fn,
    resolve_jit_compile,
)
from tfrobust.evaluation.report import (
    format_table,
    make_report,
    robustbench_entry,
    robustbench_path,
    write_report,
    write_robustbench_entry,
)
from tfrobust.evaluation.report import save_examples as write_examples
from tfrobust.evaluation.state import EvalState
from tfrobust.evaluation.versions import (
    AUTOATTACK_VERSIONS,
    attack_label,
    eps_warning,
    resolve_attack,
    version_notes,
)
from tfrobust.export import (
    LoadedModel,
    check_input_range,
    load_model,
    warn_if_probabilities,
)
from tfrobust.numerics import full_float32
from tfrobust.threat_model import model_threat_model

# What `evaluate` accepts as a model: a Keras model, the path of a `.keras` file or a SavedModel directory,
# or a differentiable callable mapping float32 images [N, H, W, C] in [0, 1] to logits [N, classes].
ModelLike = keras.Model | str | os.PathLike | Callable[[tf.Tensor], tf.Tensor]

# What `evaluate(attack=...)` accepts: a cascade name ("aa", "aa-plus", "aa-rand", "aa+mt", ...), a comma list
# of attacks ("apgd-ce,apgd-dlr,square") or a sequence of attack names (`versions.resolve_attack`).
AttackLike = str | Sequence[str]
# The report formats: "json" (the report) and "robustbench" (the report and a RobustBench entry).
REPORT_FORMATS = ("json", "robustbench")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The outcome of `evaluate`: the report `tfrobust eval` writes and the per-example result.

    Example::

        evaluation = tfrobust.evaluate(model, x_test, y_test, attack="aa", eps=8 / 255)
        print(evaluation.table)                  # clean and per-stage robust accuracy
        evaluation.robust_accuracy               # = evaluation.report["robust_accuracy"]
        evaluation.result.robust                 # bool [N]: robust after every stage
    """

    report: dict[str, Any]  # the JSON report (`report.make_report`), key for key what `tfrobust eval` writes
    result: EvalResult  # per example: clean_correct, robust, broken_at, adversarial (if kept)
    report_path: str | None = None  # the report's file, when one is written (`report=`)
    # The RobustBench entry (`report_format="robustbench"`: `report.robustbench_entry`), else None.
    robustbench: dict[str, Any] | None = None

    @property
    def table(self) -> str:
        """The table `tfrobust eval` prints (`report.format_table`)."""
        return format_table(self.report)

    @property
    def clean_accuracy(self) -> float:
        """The fraction of images classified correctly (`report["clean_accuracy"]`)."""
        return self.report["clean_accuracy"]

    @property
    def robust_accuracy(self) -> float:
        """The fraction of images correct and unbroken after every stage (`report["robust_accuracy"]`)."""
        return self.report["robust_accuracy"]

    @property
    def adversarial(self) -> np.ndarray | None:
        """float32 [N, H, W, C] in [0, 1]: the verified adversarial example of each broken image, the clean
        image elsewhere; None unless kept (`keep_adversarial`)."""
        return self.result.adversarial


def check_options(
    *,
    attack: AttackLike,
    batch_size: int,
    report: str | None = None,
    save_examples: str | None = None,
    n_examples: int | None = None,
    eot_iter: int | None = None,
    report_format: str = "json",
    jit_compile: str | bool = "auto",
    flag: Callable[[str], str] = str,
) -> None:
    """Raises `UserError` for an unknown cascade or attack (`versions.resolve_attack`), a batch size, example
    count or EOT count below 1, an unknown report format or XLA mode (`jit_compile`), an existing report,
    examples file or RobustBench entry (never overwritten), or an examples path not ending in .npz. `flag`
    names an option in the messages (the command line's `--batch-size`, the API's `batch_size`)."""
    resolve_attack(attack)
    if not isinstance(jit_compile, (bool, np.bool_)) and jit_compile not in JIT_COMPILE_MODES:
        raise UserError(f"{flag('jit_compile')} must be one of {', '.join(JIT_COMPILE_MODES)}, got {jit_compile!r}")
    if eot_iter is not None and (
        isinstance(eot_iter, bool) or not isinstance(eot_iter, (int, np.integer)) or eot_iter < 1
    ):
        raise UserError(f"{flag('eot_iter')} must be an integer >= 1, got {eot_iter!r}")
    if report_format not in REPORT_FORMATS:
        raise UserError(f"unknown report format {report_format!r}; choose from: {', '.join(REPORT_FORMATS)}")
    if report_format == "robustbench" and report and os.path.exists(robustbench_path(report)):
        raise UserError(f"{robustbench_path(report)} exists; tfrobust does not overwrite it")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise UserError(f"{flag('batch_size')} must be an integer >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise UserError(f"{flag('batch_size')} must be >= 1, got {batch_size}")
    if batch_size > np.iinfo(np.int64).max:  # a tensor's sizes are 64-bit integers
        raise UserError(f"{flag('batch_size')} must be at most {np.iinfo(np.int64).max}, got {batch_size}")
    if n_examples is not None and n_examples < 1:
        raise UserError(f"{flag('n_examples')} must be >= 1, got {n_examples}")
    if report and os.path.exists(report):
        raise UserError(f"report {report} exists; tfrobust does not overwrite reports")
    if save_examples and os.path.exists(save_examples):
        raise UserError(f"{save_examples} exists; tfrobust does not overwrite it")
    if save_examples and not save_examples.endswith(".npz"):
        raise UserError(f"{flag('save_examples')} {save_examples}: give a path ending in .npz")


def warn_if_slow() -> None:
    """Issues `checks.onednn_warning` as a UserWarning where it applies."""
    slow = onednn_warning()
    if slow:
        warnings.warn(slow, UserWarning, stacklevel=3)


def as_logits_model(
    model: ModelLike, input_range: Sequence[float] = (0.0, 1.0), *, trust_model: bool = False
) -> LoadedModel:
    """`model` as a `tfrobust.export.LoadedModel`: `logits(images in [0, 1])` -> float32 logits, with its
    metadata (a tfrobust export's; empty for anything else) and a name for the report.

    A path loads with `tfrobust.export.load_model` (a `.keras` file, a SavedModel directory or TF Serving base
    directory); a `keras.Model` runs in inference mode (`training=False`: BatchNorm's moving statistics); any
    other callable is called as it is. With `input_range=(low, high)` the model receives low + (high - low)·x.
    A path's model is inspected before anything in it runs (`tfrobust.inspection`) unless `trust_model`.
    """
    low, high = check_input_range(input_range)
    if isinstance(model, (str, os.PathLike)):
        loaded = load_model(os.fspath(model), trust_model=trust_model)
    elif isinstance(model, keras.Model):
        logits = warn_if_probabilities(keras_logits_fn(model), None)
        loaded = LoadedModel(logits, {}, model.name, keepalive=model)
    elif callable(model):

        def logits(images: tf.Tensor) -> tf.Tensor:
            return tf.cast(model(images), tf.float32)

        name = getattr(model, "__name__", type(model).__name__)
        loaded = LoadedModel(warn_if_probabilities(logits, None), {}, name, keepalive=model)
    else:
        raise UserError(
            f"cannot evaluate a {type(model).__name__}: give a keras.Model, the path of a .keras file "
            "or SavedModel directory, or a callable mapping images to logits"
        )
    if (low, high) != (0.0, 1.0):
        base = loaded.logits
        loaded = dataclasses.replace(loaded, logits=lambda images: base(images * (high - low) + low))
    return loaded


def class_labels(labels: Any, num_images: int) -> np.ndarray:
    """int64 class indices [N] from class indices [N] or [N, 1], or one-hot rows [N, classes].

    Float class indices are accepted when whole numbers. Rows that are not one-hot (soft labels, label
    smoothing) raise `UserError`: an evaluation counts an image as correct against one true class.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2:
        one_hot = (np.isin(labels, (0, 1)).all(axis=1) & (labels.sum(axis=1) == 1)) if labels.size else np.ones(0, bool)
        if not one_hot.all():
            row = int(np.flatnonzero(~one_hot)[0])
            raise UserError(
                f"labels row {row} is not one-hot ({labels[row].tolist()[:10]}): give class indices [N] "
                "or one-hot rows [N, classes]; soft labels have no single true class to evaluate against"
            )
        labels = labels.argmax(axis=1)
    elif labels.ndim != 1:
        raise UserError(f"labels have shape {list(labels.shape)}: give class indices [N] or one-hot rows [N, classes]")
    numeric = np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    if labels.dtype == bool or not numeric:
        raise UserError(f"labels have dtype {labels.dtype}: give integer class indices or one-hot rows")
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise UserError("labels are floats that are not whole numbers: give integer class indices or one-hot rows")
    if len(labels) != num_images:
        raise UserError(f"{num_images} images but {len(labels)} labels")
    return labels.astype(np.int64)


def _shape_matches(shape: Sequence[int], expected: Sequence[int | None]) -> bool:
    return len(shape) == len(expected) and all(e is None or int(e) == int(s) for s, e in zip(shape, expected))


def check_data(
    logits_fn: LogitsFn,
    images: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int | None] | None = None,
    name: str = "the images",
) -> tuple[np.ndarray, np.ndarray, int]:
    """(images, int64 labels, number of classes), checked against each other and the model; `UserError` else.

    `images`: NHWC, uint8 0..255 (kept as uint8: the evaluation divides by 255) or float in [0, 1] (as
    float32). `labels`: see `class_labels`. `input_shape` (a model's [H, W, C], None where any size goes)
    and `num_classes` (the dataset's: at most the model's) are checked when given; one forward pass on the
    first image gives the model's number of classes, which the labels must fit and which the returned number
    is. `name` names the images in the messages.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise UserError(f"{name} have shape {list(images.shape)}: give a batch [N, height, width, channels]")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise UserError(f"{name} have dtype {images.dtype}: give floats in [0, 1] or uint8 0..255")
        images = images.astype(np.float32, copy=False)
        if images.size:
            low, high = float(np.min(images)), float(np.max(images))
            if not (np.isfinite(low) and np.isfinite(high) and low >= 0.0 and high <= 1.0):
                raise UserError(
                    f"{name} range over {low:g}..{high:g}: give floats in [0, 1] or uint8 0..255 (eps is in [0, 1] "
                    "units; a model that expects another range takes input_range=(low, high))"
                )
    raw = np.asarray(labels)
    one_hot_width = raw.shape[1] if raw.ndim == 2 and raw.shape[1] > 1 else None
    labels = class_labels(raw, len(images))
    if input_shape and not _shape_matches(images.shape[1:], input_shape):
        raise UserError(f"{name} are {list(images.shape[1:])} but the model takes {list(input_shape)}")
    if len(images):
        probe = images[:1].astype(np.float32) / 255.0 if images.dtype == np.uint8 else images[:1]
        try:
            shape = tuple(logits_fn(tf.constant(probe)).shape)
        except (tf.errors.OpError, ValueError, TypeError) as error:
            raise UserError(
                f"the model fails on {name} of shape {list(images.shape[1:])}: {type(error).__name__}: "
                f"{str(error)[:200]}"
            ) from None
        if len(shape) != 2 or shape[-1] is None:
            raise UserError(f"the model's output has shape {list(shape)}: expected logits [N, classes]")
        if num_classes is not None and int(num_classes) > int(shape[-1]):
            raise UserError(f"the model outputs {shape[-1]} logits but the data have {num_classes} classes")
        num_classes = int(shape[-1])  # the data's labels may leave the last classes out (an npz subset)
    if num_classes is None:
        raise UserError(f"no images to evaluate ({name} are empty)")
    if one_hot_width is not None and one_hot_width != num_classes:
        raise UserError(f"labels are one-hot rows of {one_hot_width} classes but there are {num_classes} classes")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"labels range over {int(labels.min())}..{int(labels.max())} but there are {num_classes} "
            f"classes: labels must be in 0..{num_classes - 1}"
        )
    return images, labels, int(num_classes)


def _batches(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int) -> tf.data.Dataset:
    """(float32 images in [0, 1], one-hot float32 labels) batches in order: `eval_dataset`'s for uint8 images
    (x / 255, the batches `tfrobust eval` attacks), the same layout for float images."""
    from tfrobust.data.datasets import Split
    from tfrobust.data.pipeline import eval_dataset

    if images.dtype == np.uint8:
        return eval_dataset(Split(images, labels), num_classes=num_classes, batch_size=batch_size)
    with tf.device("/cpu:0"):  # on the host, as `eval_dataset`'s arrays
        x, y = tf.constant(images), tf.constant(labels)

    def make_batch(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(x, index), tf.one_hot(tf.gather(y, index), num_classes, dtype=tf.float32)

    ds = tf.data.Dataset.range(len(labels)).batch(batch_size)
    return ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def evaluate_arrays(
    logits_fn: LogitsFn,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    attack: AttackLike,
    norm: str,
    eps: float,
    batch_size: int,
    seed: int,
    model_name: str,
    dataset: str,
    split: str,
    keep_adversarial: bool = False,
    report_path: str | None = None,
    save_examples: str | None = None,
    state: EvalState | None = None,
    verbose: bool = True,
    eot_iter: int | None = None,
    report_format: str = "json",
    metadata: dict[str, Any] | None = None,
    trust_model: bool = False,
    jit_compile: str | bool = "auto",
) -> Evaluation:
    """The cascade `attack` on checked data (`check_data`), its report, and the files asked for.

    Runs `engine.Evaluator` (batches of `batch_size`, seed `seed`, `eot_iter` model calls per APGD
    gradient if given, progress bars with `verbose`, saved batch by batch in `state` if given), builds the
    report (`report.make_report`: `model_name`, `dataset` and `split` are what it records; `trust_model`, whether the model ran uninspected, is its "trust_model"),
    writes the
    per-example npz (`save_examples`) and the report (`report_path`; neither overwrites a file). The eps
    warning (`versions.eps_warning`) and the version's caveats for the norm are issued before the attacks
    run and lead the report's warnings. `report_format="robustbench"` also builds the RobustBench entry
    (`report.robustbench_entry`, with the model's `metadata`) and writes it next to the report
    (`report.robustbench_path`). `jit_compile`: the attacks under XLA (`engine.resolve_jit_compile`:
    "auto" is on with a GPU or TPU); the report records the resolved setting.
    """
    notes = [note for note in (eps_warning(norm, eps), *version_notes(attack, norm)) if note]
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    data = _batches(images, labels, num_classes, batch_size)
    evaluator = Evaluator(
        resolve_attack(attack), norm=norm, eps=eps, eot_iter=eot_iter, jit_compile=resolve_jit_compile(jit_compile)
    )
    result = evaluator.run(
        logits_fn,
        data,
        seed=seed,
        progress=verbose,
        keep_adversarial=keep_adversarial or save_examples is not None,
        state=state,
    )
    report = make_report(
        result,
        model=model_name,
        dataset=dataset,
        split=split,
        attack=attack_label(attack),
        norm=norm,
        eps=eps,
        seed=seed,
        eot_iter=eot_iter,
        notes=notes,
        jit_compile=evaluator.jit_compile,
    )
    report["trust_model"] = bool(trust_model)
    if save_examples:
        report["examples"] = save_examples
        write_examples(save_examples, result, labels=labels, norm=norm, eps=eps)
    entry = None
    if report_format == "robustbench":
        entry, about = robustbench_entry(report, metadata)
        report["robustbench"] = {"entry": robustbench_path(report_path) if report_path else None, **about}
    if report_path:
        os.makedirs(os.path.dirname(report_path) or ".", exist_ok=True)
        write_report(report_path, report)
        if entry is not None:
            write_robustbench_entry(robustbench_path(report_path), entry)
    return Evaluation(report=report, result=result, report_path=report_path, robustbench=entry)


def evaluate(
    model: ModelLike,
    images: Any,
    labels: Any,
    *,
    attack: AttackLike = "aa",
    norm: str | None = None,
    eps: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
    input_range: Sequence[float] = (0.0, 1.0),
    keep_adversarial: bool = False,
    report: str | None = None,
    save_examples: str | None = None,
    dataset: str = "arrays",
    split: str = "all",
    verbose: bool = True,
    eot_iter: int | None = None,
    report_format: str = "json",
    trust_model: bool = False,
    jit_compile: str | bool = "auto",
) -> Evaluation:
    """Clean and robust accuracy of `model` on `images`, `labels` under the cascade `attack`.

    `model`: a `keras.Model`, the path of a `.keras` file or of a SavedModel directory (a tfrobust export,
    its TF Serving base directory, or any SavedModel whose `serving_default` returns logits), or a
    differentiable callable mapping float32 images [N, H, W, C] in [0, 1] to logits [N, classes]. It must
    return logits, not probabilities (a warning says so otherwise).
    `images`: NHWC floats in [0, 1], or uint8 0..255 (divided by 255). `labels`: class indices [N] or
    one-hot rows [N, classes]. A mismatch (counts, shapes, ranges, classes) raises one `UserError`.
    `attack`: a cascade of `tfrobust.evaluation.CASCADES`: "aa" (AutoAttack standard: APGD-CE, APGD-T,
    FAB-T, Square; the reference's `version="standard"`), "aa-plus" (`version="plus"`), "aa-rand"
    (`version="rand"`, for randomised models), "aa+mt" (the paper's AA+MT), one attack, or a custom list
    of attacks as a comma string ("apgd-ce,apgd-dlr,square") or a sequence (docs/method.md, "AutoAttack
    versions"). `eot_iter`: model calls averaged per APGD gradient (EOT; default each stage's own: 20 in
    "aa-rand", 1 otherwise).
    `norm`, `eps`: the threat model, in [0, 1] image units; by default a tfrobust export's metadata, else
    Linf 8/255 (a norm alone takes its default radius: Linf 8/255, L2 128/255; `tfrobust.threat_model`).
    `input_range=(low, high)`: the model receives low + (high - low)·x, e.g. (0, 255) for
    `keras.applications` models; eps stays in [0, 1] units.
    `keep_adversarial`: keep the adversarial examples (`Evaluation.adversarial`). `report`, `save_examples`:
    write the JSON report and the per-example npz there (never overwritten). `report_format="robustbench"`:
    also the RobustBench entry (`Evaluation.robustbench`, written next to `report` as
    `<report>.robustbench.json` when a report is written). `dataset`, `split`: the names the report records
    for the data. `verbose`: progress bars.
    `trust_model`: load a model path without inspecting it first (`tfrobust.inspection`: a SavedModel's ops,
    a `.keras` file's layers; a `.keras` file then loads with Keras's `safe_mode=False`). Only for a model
    you trust: its graph may read or write files or run Python. The report records it.
    `jit_compile`: "auto" (XLA where TensorFlow sees a GPU or TPU), "on" or "off" (or True/False): each
    attack compiled with XLA at a fixed batch shape (docs/xla.md, "Evaluation under XLA"); the report
    records the resolved setting ("jit_compile").

    Returns an `Evaluation`; its `report` is what `tfrobust eval` writes for the same model and images.
    Attacks and verdicts run in full float32 (TensorFloat-32 off, `tfrobust.numerics`).

    Example::

        import tfrobust

        evaluation = tfrobust.evaluate(model, x_test[:1000], y_test[:1000], attack="aa", eps=8 / 255)
        print(evaluation.table)
        evaluation = tfrobust.evaluate("saved_models/cifar10-wrn-28-10-trades", x_test, y_test)  # its metadata's eps
    """
    check_options(
        attack=attack,
        batch_size=batch_size,
        report=report,
        save_examples=save_examples,
        eot_iter=eot_iter,
        report_format=report_format,
        jit_compile=jit_compile,
    )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"seed must be an integer, got {seed!r}")
    with full_float32():
        loaded = as_logits_model(model, input_range, trust_model=trust_model)
        warn_if_slow()
        norm, eps = model_threat_model(loaded.metadata, norm, eps)
        dataset_info = loaded.metadata.get("dataset") or {}
        images, labels, num_classes = check_data(
            loaded.logits,
            images,
            labels,
            num_classes=dataset_info.get("num_classes"),
            input_shape=loaded.metadata.get("input_shape"),
        )
        return evaluate_arrays(
            loaded.logits,
            images,
            labels,
            num_classes=num_classes,
            attack=attack,
            norm=norm,
            eps=eps,
            batch_size=batch_size,
            seed=seed,
            model_name=loaded.path,
            dataset=dataset,
            split=split,
            keep_adversarial=keep_adversarial,
            report_path=report,
            save_examples=save_examples,
            verbose=verbose,
            eot_iter=eot_iter,
            report_format=report_format,
            metadata=loaded.metadata,
            trust_model=trust_model,
            jit_compile=jit_compile,
        )


def autoattack(
    model: ModelLike,
    images: Any,
    labels: Any,
    *,
    norm: str | None = None,
    eps: float | None = None,
    version: str = "standard",
    attacks_to_run: Sequence[str] | None = None,
    eot_iter: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    input_range: Sequence[float] = (0.0, 1.0),
    verbose: bool = True,
    trust_model: bool = False,
) -> np.ndarray:
    """AutoAttack's adversarial examples of `images`: float32 [N, H, W, C] in [0, 1].

    The reference's `AutoAttack(model, norm, eps, version=version, attacks_to_run=attacks_to_run)
    .run_standard_evaluation(x, y)` (fra31/auto-attack, `autoattack/autoattack.py`): the version's attacks
    in turn, each on the images still robust; an image keeps the first verified adversarial example found,
    and stays clean where none was (or where it is misclassified already). `version`: "standard" (APGD-CE,
    APGD-T, FAB-T, Square), "plus" (APGD-CE and APGD-DLR 5 restarts, FAB 5 restarts, Square, APGD-T,
    FAB-T), "rand" (APGD-CE and APGD-DLR with EOT over `eot_iter` = 20 calls, for randomised models), or
    "custom" with `attacks_to_run` (attack names as `evaluate`'s lists: "apgd-ce", "apgd-dlr", "fab",
    "square", "apgd-t", "fab-t", or a version's configuration such as "apgd-ce@plus"); as the reference,
    `attacks_to_run` with another version is refused. `evaluate(..., attack=...)` with
    `keep_adversarial=True`; other arguments as `evaluate`'s (norm and eps default to the model's metadata,
    else Linf 8/255).

    Example::

        x_adv = tfrobust.autoattack(model, x_test[:500], y_test[:500], norm="linf", eps=8 / 255)
        robust_accuracy = (model.predict(x_adv).argmax(-1) == y_test[:500]).mean()
        x_adv = tfrobust.autoattack(model, x_test[:500], y_test[:500], version="custom",
                                    attacks_to_run=["apgd-ce", "square"])
    """
    if version == "custom":
        if not attacks_to_run:
            raise UserError('version="custom" runs the attacks of attacks_to_run: give at least one')
        attack: AttackLike = list(attacks_to_run)
    elif version in AUTOATTACK_VERSIONS:
        if attacks_to_run:
            raise UserError(f'attacks_to_run is for version="custom"; version={version!r} runs its own attacks')
        attack = AUTOATTACK_VERSIONS[version]
    else:
        raise UserError(
            f"unknown AutoAttack version {version!r}; choose from: {', '.join([*AUTOATTACK_VERSIONS, 'custom'])}"
        )
    evaluation = evaluate(
        model,
        images,
        labels,
        attack=attack,
        norm=norm,
        eps=eps,
        batch_size=batch_size,
        seed=seed,
        input_range=input_range,
        keep_adversarial=True,
        verbose=verbose,
        eot_iter=eot_iter,
        trust_model=trust_model,
    )
    return evaluation.adversarial
