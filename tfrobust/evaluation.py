"""Robust accuracy of a logits function under a cascade of attacks, with every success re-verified.

Semantics (those of AutoAttack's reference code, docs/method.md, "Evaluation"): a point misclassified on its
clean input counts as broken and is never attacked; each stage starts from the clean image and runs only
on the points still robust after the stages before it; robust accuracy is the fraction that survives
every stage, and the report gives it after each stage (as Table 6 of the paper). An adversarial example
counts only after re-verification: inside the eps ball (float tolerance 1e-6), inside [0, 1] and
misclassified by the model on a fresh forward pass.

Re-verification classifies each example in a fixed way, so that a point on the decision boundary gets the
same verdict whichever other points share its batch (`verify`, `fixed_layout_logits`, `misclassified`):
the forward pass always sees batches of exactly `VERIFY_ROWS` rows (the last one padded with zeros), so
its kernels, chosen per input shape, do not change with the number of survivors; and an example counts as
misclassified only when another class's logit is strictly larger than the true class's, a tie counting as
correct (the reference's argmax would pick whichever tied index its kernel returns).
The clean pass uses the same rule. Attacks, re-verification and model selection run in full float32,
TensorFloat-32 off (`tfrobust.numerics`); the report records it (`numerics`).

Stages are named entries of `STAGES` (a plain dict: name -> factory(norm, eps) of a frozen attack);
cascades (`CASCADES`, the CLI's --attack) are tuples of stage names: `aa` (AutoAttack standard), `aa+mt`
(the paper's), `mt` and each single attack.

Checks against a false sense of security (AutoAttack's `checks.py`), reported as warnings in the result:
a model whose outputs differ between identical calls (a randomised defence: a deterministic attack
evaluation over-estimates its robustness); Square (gradient-free) breaking more than 0.2% of the points
the gradient attacks of the same cascade left robust (gradient masking); an attack that runs fewer
targets than configured because the model has few classes.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfrobust.attacks.apgd import APGD
from tfrobust.attacks.fab import FABTargeted
from tfrobust.attacks.multitargeted import MultiTargeted
from tfrobust.attacks.pgd import pgd40_attack
from tfrobust.attacks.square import Square
from tfrobust.errors import UserError
from tfrobust.fileio import save_npz_atomic
from tfrobust.evaluation_state import EvalState, GroupResult, state_dir_for
from tfrobust.numerics import full_float32, numerics_record

LogitsFn = Callable[[tf.Tensor], tf.Tensor]
# An attack: (model_fn, images, one-hot labels, seed) -> adversarial images.
StageAttack = Callable[[LogitsFn, tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]

# Stage name -> factory(norm, eps) returning a configured attack: a frozen dataclass, built once per
# Evaluator and never mutated. The configurations are AutoAttack's standard version (Croce & Hein 2020;
# github.com/fra31/auto-attack, `autoattack.py`, version="standard") and the paper's AA+MT (docs/method.md,
# "Cascades").
STAGES: dict[str, Callable[[str, float], StageAttack]] = {
    # Model selection's attack (docs/method.md, "Model selection"): margin loss, Adam 0.1 (x0.1 at 20, x0.01
    # at 30), 40 steps.
    "pgd40": pgd40_attack,
    # AutoAttack standard: APGD-CE 1 restart x 100; APGD-T 9 targets x 1 restart x 100; FAB-T 9 targets x 100;
    # Square 5000 queries.
    "apgd-ce": lambda norm, eps: APGD(norm, eps, "ce", n_iter=100, n_restarts=1),
    "apgd-t": lambda norm, eps: APGD(norm, eps, "dlr-targeted", n_iter=100, n_restarts=1, n_target_classes=9),
    "apgd-dlr": lambda norm, eps: APGD(norm, eps, "dlr", n_iter=100, n_restarts=1),
    "fab-t": lambda norm, eps: FABTargeted(norm, eps, n_iter=100, n_target_classes=9, n_restarts=1),
    "square": lambda norm, eps: Square(norm, eps, n_queries=5000, n_restarts=1),
    # The paper's AA+MT: APGD-CE 5 x 100, APGD-DLR 5 x 100, MultiTargeted 10 restarts x 200 steps (top-9).
    "apgd-ce-5x100": lambda norm, eps: APGD(norm, eps, "ce", n_iter=100, n_restarts=5),
    "apgd-dlr-5x100": lambda norm, eps: APGD(norm, eps, "dlr", n_iter=100, n_restarts=5),
    "mt": lambda norm, eps: MultiTargeted(norm, eps, n_restarts=10, n_steps=200, n_target_classes=9),
}

# Stages that follow the model's gradient; Square breaking points they left robust suggests gradient
# masking (AutoAttack's `check_square_sr`).
GRADIENT_STAGES = frozenset(
    {"pgd40", "apgd-ce", "apgd-t", "apgd-dlr", "fab-t", "apgd-ce-5x100", "apgd-dlr-5x100", "mt"})
# Square lowering robust accuracy by more than this fraction of the examples triggers the warning (the
# reference's alpha = 0.002, i.e. 0.2 points).
SQUARE_MASKING_THRESHOLD = 0.002
# Largest difference of L2-normalised outputs between identical calls still taken as deterministic (the
# reference's `check_randomized`, alpha = 1e-4).
RANDOMNESS_TOLERANCE = 1e-4

TOLERANCE = 1e-6
# Rows of every forward pass that decides a verdict (clean or adversarial): fixed, whatever the batch size
# and the number of points still robust, so that the verdict of an example never depends on its batch.
VERIFY_ROWS = 64
# Examples attacked together, stage by stage (`Evaluator.run`): a CIFAR test set is one pool; float32
# images of a pool are held in memory (10,000 CIFAR images: 123 MB).
DEFAULT_POOL_SIZE = 10_000


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Outcome of one evaluation. `robust` is per example after the last stage."""

    num_examples: int
    clean_correct: np.ndarray  # bool [N]
    robust: np.ndarray  # bool [N]
    stage_names: tuple[str, ...]
    robust_after_stage: tuple[float, ...]
    adversarial: np.ndarray | None  # float32 [N,H,W,C] (clean image where no attack succeeded), if kept
    seconds: float
    warnings: tuple[str, ...] = ()  # the checks' findings and the attacks' notes, also issued as UserWarning
    # Per example: -1 robust, 0 misclassified clean, s + 1 first broken by stage s.
    broken_at: np.ndarray | None = None  # int16 [N]
    stage_seconds: tuple[float, ...] = ()  # wall time of each stage, summed over batches

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean()) if self.num_examples else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean()) if self.num_examples else float("nan")


def _norm(delta: np.ndarray, norm: str) -> np.ndarray:
    flat = delta.reshape(delta.shape[0], -1)
    return np.abs(flat).max(axis=1) if norm == "linf" else np.sqrt((flat.astype(np.float64) ** 2).sum(axis=1))


def fixed_layout_logits(logits_fn: LogitsFn, images: np.ndarray, rows: int = VERIFY_ROWS) -> np.ndarray:
    """float32 logits of `images`, computed in batches of exactly `rows` rows, one example per row, the
    last batch padded with zero images.

    Convolution and matrix-product kernels (oneDNN, cuDNN, cuBLAS) are chosen per input shape, and two
    kernels round differently; with one shape for every call, the logits of an example depend only on the
    example and its row, and a network in inference mode computes each row alone (no cross-example
    operation), so they do not depend on the other rows (tests/test_evaluation.py checks it on the CPU).
    On a GPU this holds in full float32 only: through PyTorch's cuDNN on an H200, a WRN-28-10 row was
    bit-identical across the contents and positions of 64-row batches with TF32 off, and moved by up to
    5e-7 with TF32 on (benchmarks/gpu_row_independence.py); evaluations run with TF32 off (`numerics`).
    """
    n = int(images.shape[0])
    if n == 0:
        return np.zeros([0, 0], np.float32)
    padded = np.zeros([-(-n // rows) * rows, *images.shape[1:]], np.float32)
    padded[:n] = images
    out = [np.asarray(logits_fn(tf.constant(padded[i:i + rows])), np.float32) for i in range(0, len(padded), rows)]
    return np.concatenate(out)[:n]


def misclassified(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per example: is some other class's logit strictly larger than the true class's? A tie counts as
    correctly classified (so a point exactly on the boundary is never counted broken), NaN logits too."""
    logits = np.asarray(logits, np.float32)
    labels = np.asarray(labels, np.int64)
    if logits.shape[0] == 0:
        return np.zeros([0], bool)
    true = np.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    others = np.where(np.arange(logits.shape[1])[None, :] == labels[:, None], -np.inf, logits)
    return others.max(axis=1) > true


def verify(
    logits_fn: LogitsFn, clean: np.ndarray, adv: np.ndarray, labels: np.ndarray, norm: str, eps: float
) -> np.ndarray:
    """Per example: is `adv` inside the eps ball around `clean`, inside [0, 1] and misclassified?

    Classified by `fixed_layout_logits` and `misclassified` (see the module docstring): the verdict of an
    example does not depend on which other examples are verified with it.
    """
    if adv.shape[0] == 0:
        return np.zeros([0], bool)
    inside = _norm(adv - clean, norm) <= eps * (1 + TOLERANCE) + TOLERANCE
    in_box = (adv.reshape(adv.shape[0], -1).min(axis=1) >= 0.0) & (adv.reshape(adv.shape[0], -1).max(axis=1) <= 1.0)
    return inside & in_box & misclassified(fixed_layout_logits(logits_fn, adv), labels)


def check_randomized(predict: LogitsFn, images: tf.Tensor, first: np.ndarray, calls: int = 4) -> str | None:
    """A warning when the model's outputs change between identical calls, else None.

    AutoAttack's `check_randomized` (fra31/auto-attack, `autoattack/checks.py`): outputs are compared
    after L2 normalisation (so the check ignores the logits' scale), against `RANDOMNESS_TOLERANCE`; any
    change of the predicted classes counts too. `first` is the output of one call already made; `calls`
    more are made (the reference makes 5 in all). A randomised defence (dropout or noise at inference)
    makes a deterministic attack evaluation meaningless: its robustness must be evaluated with EOT.
    """
    def normalised(out: np.ndarray) -> np.ndarray:
        out = out.astype(np.float64)
        return out / (np.linalg.norm(out, axis=-1, keepdims=True) + 1e-10)

    outputs = [np.asarray(first)] + [np.asarray(predict(images)) for _ in range(calls)]
    reference = normalised(outputs[0])
    differ = max(float(np.linalg.norm(normalised(o) - reference, axis=-1).max()) for o in outputs[1:])
    classes_change = any(np.any(o.argmax(-1) != outputs[0].argmax(-1)) for o in outputs[1:])
    if differ > RANDOMNESS_TOLERANCE or classes_change:
        return (f"the model's outputs differ between identical calls (largest difference of normalised outputs "
                f"{differ:.3g}): it looks like a randomised defence (dropout/noise at inference?); this "
                "deterministic evaluation is not reliable for it, evaluate it with expectation over "
                "transformation")
    return None


def check_square(stage_names: Sequence[str], clean_accuracy: float,
                 robust_after_stage: Sequence[float]) -> str | None:
    """A warning when Square lowered robust accuracy below what the gradient attacks before it reached.

    AutoAttack's `check_square_sr`: in a cascade Square attacks only the points every gradient attack
    left robust, so whatever it breaks, they missed; more than `SQUARE_MASKING_THRESHOLD` (0.2 points) of
    the examples suggests gradient masking, and the robust accuracy of the gradient attacks alone is not
    to be trusted.
    """
    for index, name in enumerate(stage_names):
        if name != "square" or not any(s in GRADIENT_STAGES for s in stage_names[:index]):
            continue
        before = robust_after_stage[index - 1] if index else clean_accuracy
        drop = before - robust_after_stage[index]
        if drop > SQUARE_MASKING_THRESHOLD:
            return (f"Square (gradient-free) lowered the robust accuracy by {100 * drop:.2f} points after the "
                    "gradient attacks: a sign of gradient masking; the evaluation may be unreliable, consider "
                    "more Square queries/restarts or an adaptive attack")
    return None


class Evaluator:
    """Runs a fixed cascade of attacks; configured once, never mutated between runs."""

    def __init__(self, stages: Sequence[str], *, norm: str, eps: float):
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise UserError(f"unknown attack {unknown[0]!r}; choose from: {', '.join(STAGES)}")
        self.stage_names = tuple(stages)
        self.norm = norm
        self.eps = float(eps)
        self._attacks = tuple(STAGES[s](norm, self.eps) for s in self.stage_names)
        self._compiled: dict[tuple, tuple[Callable, tuple[Callable, ...]]] = {}

    def _functions(self, logits_fn: LogitsFn, image_shape: tuple, num_classes: int) -> tuple[Callable, tuple[Callable, ...]]:
        """Traced prediction and attack functions for `logits_fn`, made once per logits function and shape.

        Keyed by the function object itself (kept alive by the cache, so no id is ever reused). The batch
        dimension is None in the input signature: each function is traced once, whatever the size of the
        shrinking subsets of still-robust points (`reduce_retracing` traced twice, a cost of seconds per
        attack graph that the reference's eager PyTorch never pays).
        """
        key = (logits_fn, tuple(image_shape), num_classes)
        if key not in self._compiled:
            images = tf.TensorSpec([None, *image_shape], tf.float32)
            labels = tf.TensorSpec([None, num_classes], tf.float32)
            seed = tf.TensorSpec([2], tf.int64)
            predict = tf.function(logits_fn, input_signature=[images])
            attacks = tuple(
                tf.function(lambda x, y, s, attack=attack: attack(logits_fn, x, y, s),
                            input_signature=[images, labels, seed])
                for attack in self._attacks
            )
            self._compiled[key] = (predict, attacks)
        return self._compiled[key]

    def run(
        self,
        logits_fn: LogitsFn,
        dataset: tf.data.Dataset,
        *,
        seed: int = 0,
        keep_adversarial: bool = False,
        progress: bool = False,
        state: EvalState | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> EvalResult:
        """Evaluates on `dataset` of (images, one-hot labels) batches; the batch size is the attacks' batch.

        Stage-major, as the reference AutoAttack (`run_standard_evaluation`): the examples of a pool (up to
        `pool_size` of them, in dataset order) are attacked one stage at a time, and the points still robust
        before a stage are regrouped into full batches. After APGD-CE, often only a fifth of the points
        survive, and APGD-T, FAB-T and Square (most of the cost) then run on full batches instead of
        batch-major's fifths — the difference between filling an accelerator and idling it.

        With `state`, every attacked batch is saved and batches saved by an interrupted run are loaded
        instead of recomputed; batch k of stage s in pool p is seeded by (seed, p, s, k) alone, so the
        result is the uninterrupted one. Runs with TensorFloat-32 off (`numerics.full_float32`).
        """
        with full_float32():
            return self._run(logits_fn, dataset, seed=seed, keep_adversarial=keep_adversarial, progress=progress,
                             state=state, pool_size=pool_size)

    def _run(self, logits_fn: LogitsFn, dataset: tf.data.Dataset, *, seed: int, keep_adversarial: bool,
             progress: bool, state: EvalState | None, pool_size: int) -> EvalResult:
        if pool_size < 1:
            raise UserError(f"pool size must be >= 1, got {pool_size}")
        start = time.time()
        findings: list[str] = []
        clean_parts, broken_parts, adv_parts = [], [], []
        stage_seconds = np.zeros(len(self.stage_names))
        batch_size = None
        batches = iter(dataset)
        pool_index = 0
        exhausted = False
        while not exhausted:
            pool_x, pool_labels = [], []
            count = 0
            while count < pool_size:
                item = next(batches, None)
                if item is None:
                    exhausted = True
                    break
                images, labels = tf.cast(item[0], tf.float32), tf.cast(item[1], tf.float32)
                batch_size = batch_size or int(images.shape[0])
                pool_x.append(images.numpy())
                pool_labels.append(labels.numpy())
                count += int(images.shape[0])
            if not count:
                break
            x, labels = np.concatenate(pool_x), np.concatenate(pool_labels)
            predict, attacks = self._functions(logits_fn, tuple(x.shape[1:]), int(labels.shape[-1]))
            if pool_index == 0:
                # Once, on the first batch (resumed or not): the model's classes and its determinism.
                first = tf.constant(x[:batch_size])
                logits = np.asarray(predict(first))
                for attack in self._attacks:
                    findings.extend(getattr(attack, "notes", lambda k: ())(int(logits.shape[-1])))
                randomised = check_randomized(predict, first, logits)
                if randomised:
                    findings.append(randomised)
            correct, broken_at, adv, seconds = self._run_pool(
                predict, attacks, x, labels, seed=seed, pool_index=pool_index, batch_size=batch_size,
                keep_adversarial=keep_adversarial, state=state, progress=progress)
            clean_parts.append(correct)
            broken_parts.append(broken_at)
            if keep_adversarial:
                adv_parts.append(adv)
            stage_seconds += seconds
            pool_index += 1
        clean = np.concatenate(clean_parts) if clean_parts else np.zeros([0], bool)
        broken_at = np.concatenate(broken_parts) if broken_parts else np.zeros([0], np.int16)
        n = int(clean.shape[0])
        # Robust after stage s: correct and not broken by stages 0..s (broken_at -1 or > s + 1).
        after = tuple(float(np.sum(clean & ((broken_at == -1) | (broken_at > s + 1)))) / n if n else float("nan")
                      for s in range(len(self.stage_names)))
        masking = check_square(self.stage_names, float(clean.mean()) if n else float("nan"), after)
        if masking:
            findings.append(masking)
        for message in findings:
            warnings.warn(message, UserWarning, stacklevel=3)
        return EvalResult(
            num_examples=n,
            clean_correct=clean,
            robust=broken_at == -1,
            stage_names=self.stage_names,
            robust_after_stage=after,
            adversarial=np.concatenate(adv_parts) if keep_adversarial and adv_parts else None,
            seconds=time.time() - start,
            warnings=tuple(findings),
            broken_at=broken_at,
            stage_seconds=tuple(float(t) for t in stage_seconds),
        )

    def _run_pool(self, predict: Callable, attacks: tuple[Callable, ...], x: np.ndarray, labels: np.ndarray, *,
                  seed: int, pool_index: int, batch_size: int, keep_adversarial: bool, state: EvalState | None,
                  progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """The cascade on one pool: (clean correct, broken_at, adversarial or None, seconds per stage)."""
        y = labels.argmax(axis=-1)
        correct = ~misclassified(fixed_layout_logits(predict, x), y)  # the verdict rule of `verify`
        broken_at = np.where(correct, -1, 0).astype(np.int16)
        adv = x.copy() if keep_adversarial else None
        seconds = np.zeros(len(self.stage_names))
        for stage, name in enumerate(self.stage_names):
            todo = np.flatnonzero(broken_at == -1)
            groups = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
            bar = keras.utils.Progbar(len(groups), unit_name="batch") if progress and groups else None
            if bar is not None:
                print(f"stage {stage + 1}/{len(self.stage_names)} {name}: {len(todo)} robust points in "
                      f"{len(groups)} batches" + (f" (pool {pool_index + 1})" if pool_index else ""), flush=True)
            for group_index, group in enumerate(groups):
                key = (pool_index, stage, group_index)
                saved = state.load_group(key, group) if state is not None else None
                if saved is not None and keep_adversarial and saved.adversarial is None:
                    raise UserError(f"{state.directory} was saved without adversarial examples: resume with the "
                                    "same --save-examples choice")
                if saved is None:
                    began = time.time()
                    seed_tensor = tf.constant([seed, (pool_index * 100 + stage) * 1_000_000 + group_index], tf.int64)
                    candidate = attacks[stage](tf.constant(x[group]), tf.constant(labels[group]), seed_tensor).numpy()
                    broken = verify(predict, x[group], candidate, y[group], self.norm, self.eps)
                    saved = GroupResult(index=group, broken=broken, seconds=time.time() - began,
                                        adversarial=candidate[broken] if keep_adversarial else None)
                    if state is not None:
                        state.save_group(key, saved)
                broken_at[group[saved.broken]] = stage + 1
                if adv is not None:
                    adv[group[saved.broken]] = saved.adversarial
                seconds[stage] += saved.seconds
                if bar is not None:
                    bar.update(group_index + 1, values=[("broken", float(saved.broken.mean()))])
        return correct, broken_at, adv, seconds


def keras_logits_fn(network: keras.Model) -> LogitsFn:
    """Inference-mode logits (moving BatchNorm statistics), float32."""
    return lambda images: tf.cast(network(images, training=False), tf.float32)


# A cascade name (the CLI's --attack) -> its stages, in order.
CASCADES: dict[str, tuple[str, ...]] = {
    # AutoAttack, standard version (docs/method.md, "Cascades"): robust accuracy after each of the four attacks.
    "aa": ("apgd-ce", "apgd-t", "fab-t", "square"),
    # The paper's evaluation (Rebuffi et al. 2021, "AA+MT").
    "aa+mt": ("apgd-ce-5x100", "apgd-dlr-5x100", "mt"),
    "mt": ("mt",),
    "apgd-ce": ("apgd-ce",),
    "apgd-t": ("apgd-t",),
    "apgd-dlr": ("apgd-dlr",),
    "fab-t": ("fab-t",),
    "square": ("square",),
    "pgd40": ("pgd40",),
}


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What `tfrobust eval` was asked; None fields default to the model's metadata."""

    model_path: str
    attack: str = "pgd40"
    dataset: str | None = None
    data_dir: str | None = None
    split: str | None = None  # None: "test", or "all" (every image) for an npz:PATH dataset (default_split)
    norm: str | None = None
    eps: float | None = None
    n_examples: int | None = None
    batch_size: int = 256
    seed: int = 0
    report: str | None = None
    val_size: int | None = None  # None: the training run's (metadata), else 1024
    save_examples: str | None = None  # npz of per-example flags and adversarial examples


def format_table(report: dict) -> str:
    """A readable table of clean and per-stage robust accuracy (the shape of the paper's Table 6), with
    each stage's wall time."""
    rows = [("clean", report["clean_accuracy"], None)]
    rows += [(s["attack"], s["robust_accuracy"], s.get("seconds")) for s in report["stages"]]
    width = max(len(name) for name, _, _ in rows) + 2
    head = f"{report['model']}  {report['dataset']}/{report['split']}  n={report['num_examples']}  {report['norm']} eps={report['eps']:.5g}"
    lines = [head, f"{'stage':<{width}}accuracy   seconds", "-" * (width + 19)]
    lines += [f"{name:<{width}}{100 * value:7.2f}%" + ("" if seconds is None else f"  {seconds:8.1f}")
              for name, value, seconds in rows]
    return "\n".join(lines)


def resolve_threat_model(meta: dict, dataset: str | None, norm: str | None,
                         eps: float | None) -> tuple[str, str, float, dict]:
    """(dataset, norm, eps, training config) of an evaluation: the options given, else the model's metadata.

    A norm given without an eps takes that norm's default radius (the metadata's eps belongs to the
    training norm). Raises `UserError` for a model without metadata and no --dataset, an unknown norm, or
    an eps outside (0, 1] (Linf) / (0, 64] (L2) on [0, 1] images.
    """
    from tfrobust.config import DEFAULT_EPS, NORMS

    training = meta.get("training_config", {})
    dataset = dataset or meta.get("dataset", {}).get("name")
    if dataset is None:
        raise UserError("this model carries no tfrobust metadata: give --dataset (and --norm/--eps)")
    given_norm = norm
    norm = norm or meta.get("norm", "linf")
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}; choose from: {', '.join(NORMS)}")
    eps = eps if eps is not None else (meta.get("eps") if given_norm is None else None)
    eps = float(DEFAULT_EPS[norm] if eps is None else eps)
    if not 0 < eps <= (1.0 if norm == "linf" else 64.0):
        raise UserError(f"--eps {eps:g} is out of range for {norm} on [0, 1] images")
    return dataset, norm, eps, training


def _model_fingerprint(path: str) -> str:
    """A digest of the files that define a model (graph, variable index with its per-tensor checksums,
    or the .keras file): a resumed evaluation must attack the same model."""
    import hashlib
    import os

    files = [path] if os.path.isfile(path) else [
        os.path.join(path, name) for name in ("saved_model.pb", os.path.join("variables", "variables.index"))]
    digest = hashlib.sha256()
    for name in files:
        if os.path.isfile(name):
            with open(name, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def resume_eval(report_path: str) -> dict:
    """Continues the interrupted evaluation that was writing `report_path`, with its saved settings."""
    state = EvalState.open(state_dir_for(report_path))
    known = {f.name for f in dataclasses.fields(EvalSettings)}
    settings = EvalSettings(**{k: v for k, v in state.settings.items() if k in known})
    return run_eval(settings, state=state)


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (None where TF cannot say).

    It decides the CPU speed of every attack (a WRN's forward + input gradient ran 1.7x faster with it on
    a 2-vCPU AMD EPYC Zen3, benchmarks/README.md), and `import tfrobust` can only turn it on
    when imported before TensorFlow; the report records it so that a timing can be explained.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, hence the fallback

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def onednn_warning() -> str | None:
    """A warning when TF runs on CPU without oneDNN only because it was imported before tfrobust.

    The silent case this catches: a script that imports TensorFlow first gets TF's slower default kernels
    on CPUs without AVX512-VNNI (the benchmark that first compared tfrobust with the reference did). An
    explicit TF_ENABLE_ONEDNN_OPTS=0, or a GPU, gets no warning.
    """
    import os

    if onednn_enabled() is not False or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return None
    if tf.config.list_physical_devices("GPU"):
        return None
    return ("TensorFlow runs without its oneDNN CPU kernels because it was imported before tfrobust: attacks "
            "may run ~1.7x slower; import tfrobust first, or set TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads")


def run_eval(settings: EvalSettings, *, state: EvalState | None = None) -> dict:
    """Loads the model and data, runs the cascade, writes the JSON report; returns report, table, path.

    Progress is saved batch by batch in `<report>.state/` (see `evaluation_state.py`); `state` is that of
    an interrupted run to continue (`resume_eval`). With `settings.save_examples`, an npz of per-example
    results and adversarial examples is written too. TensorFloat-32 is off from before the model loads
    until the report is written (`numerics.full_float32`).
    """
    with full_float32():
        return _run_eval(settings, state=state)


def _run_eval(settings: EvalSettings, *, state: EvalState | None) -> dict:
    import json
    import os
    import platform

    from tfrobust.data.datasets import default_split, load_split
    from tfrobust.data.pipeline import eval_dataset
    from tfrobust.export import load_model

    if settings.attack not in CASCADES:
        raise UserError(f"unknown attack {settings.attack!r}; choose from: {', '.join(CASCADES)}")
    if settings.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {settings.batch_size}")
    if settings.n_examples is not None and settings.n_examples < 1:
        raise UserError(f"--n-examples must be >= 1, got {settings.n_examples}")
    if settings.report and os.path.exists(settings.report):
        raise UserError(f"report {settings.report} exists; tfrobust does not overwrite reports")
    if settings.save_examples and os.path.exists(settings.save_examples):
        raise UserError(f"{settings.save_examples} exists; tfrobust does not overwrite it")
    if settings.save_examples and not settings.save_examples.endswith(".npz"):
        raise UserError(f"--save-examples {settings.save_examples}: give a path ending in .npz")
    model = load_model(settings.model_path)
    slow = onednn_warning()
    if slow:
        warnings.warn(slow, UserWarning, stacklevel=3)
    dataset, norm, eps, training = resolve_threat_model(model.metadata, settings.dataset, settings.norm, settings.eps)
    split_name = settings.split or default_split(dataset)
    info, split = load_split(
        dataset, split_name,
        val_size=settings.val_size if settings.val_size is not None else training.get("val_size", 1024), seed=training.get("seed", 0),
        data_dir=settings.data_dir or training.get("data_dir"),
    )
    expected_shape = model.metadata.get("input_shape")
    if expected_shape and list(info.image_shape) != list(expected_shape):
        raise UserError(f"{dataset} images are {list(info.image_shape)} but the model takes {expected_shape}")
    n = len(split) if settings.n_examples is None else min(settings.n_examples, len(split))
    data = eval_dataset(split, num_classes=info.num_classes, batch_size=settings.batch_size, limit=n)
    evaluator = Evaluator(CASCADES[settings.attack], norm=norm, eps=eps)
    path = settings.report
    if path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        parent, leaf = os.path.split(os.path.abspath(model.path))
        # TF Serving layout <name>/<version> -> "name-v3"; any other model -> its file or directory name.
        name = f"{os.path.basename(parent)}-v{leaf}" if leaf.isdigit() else os.path.splitext(leaf)[0]
        path = os.path.join("eval_reports", f"{name}-{settings.attack}-{norm}-{split_name}-{stamp}.json")
    fingerprint = _model_fingerprint(model.path)
    if state is None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        recorded = dataclasses.replace(settings, report=path)
        state = EvalState.create(state_dir_for(path), {**dataclasses.asdict(recorded), "model_sha256": fingerprint})
        print(f"progress is saved in {state.directory}; if interrupted, continue with: tfrobust eval --resume {path}",
              flush=True)
    elif state.settings.get("model_sha256") != fingerprint:
        raise UserError(f"the model at {model.path} changed since the interrupted evaluation: delete {state.directory}")
    result = evaluator.run(model.logits, data, seed=settings.seed, progress=True,
                           keep_adversarial=settings.save_examples is not None, state=state)
    report = {
        "model": model.path,
        "dataset": info.name,
        "split": split_name,
        "num_examples": result.num_examples,
        "attack": settings.attack,
        "norm": norm,
        "eps": eps,
        "seed": settings.seed,
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "stages": [
            {"attack": name, "robust_accuracy": value, "seconds": round(seconds, 2)}
            for name, value, seconds in zip(result.stage_names, result.robust_after_stage, result.stage_seconds)
        ],
        "counts": {"clean_correct": int(result.clean_correct.sum()), "robust": int(result.robust.sum())},
        "seconds": round(result.seconds, 2),
        "warnings": list(result.warnings),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version(),
                     "onednn": onednn_enabled()},
        # The arithmetic of the attacks and of the verdicts (see the module docstring).
        "numerics": {**numerics_record(), "verify_rows": VERIFY_ROWS, "ties": "correct"},
    }
    if settings.save_examples:
        report["examples"] = settings.save_examples
        save_examples(settings.save_examples, result, labels=split.labels[:n], norm=norm, eps=eps)
    with open(path, "x") as handle:  # "x": never overwrite a report
        json.dump(report, handle, indent=2, sort_keys=True)
    state.remove()
    return {"report": report, "table": format_table(report), "report_path": path}


def save_examples(path: str, result: EvalResult, *, labels: np.ndarray, norm: str, eps: float) -> None:
    """Per-example results as npz: `index` (position in the split), `label`, `clean_correct`, `robust`,
    `broken_at` (-1 robust, 0 misclassified clean, s + 1 first broken by stage s of `stage_names`),
    `adversarial` (float32 in [0, 1]; the clean image where no attack succeeded), `norm`, `eps`."""
    save_npz_atomic(path, dict(
        index=np.arange(result.num_examples), label=np.asarray(labels, np.int64),
        clean_correct=result.clean_correct, robust=result.robust, broken_at=result.broken_at,
        stage_names=np.array(result.stage_names), adversarial=result.adversarial,
        norm=np.array(norm), eps=np.array(eps)))
