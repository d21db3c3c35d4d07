"""The evaluation engine: robust accuracy of a logits function under a cascade of attacks, with every
success re-verified (`Evaluator`), and the verdict rules it and the audit share.

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

Under XLA (`Evaluator(jit_compile=True)`, docs/xla.md, "Evaluation under XLA") every attack and the
prediction compile once at a fixed batch shape: the attacks run with `fixed_shape` (the points that leave
a run are masked instead of dropped, `tfrobust.attacks.common.run_targets`), a batch of fewer points than
the batch size (regrouped survivors, a dataset's last batch) is padded with zero images of class 0, and the
padded rows' results are dropped (`attack_batches(pad_to=...)`). Rows never interact, so the real rows'
results are those of the unpadded batch.

One attack over a set of points runs through `attack_batches` (batches in order, each success verified):
the cascade's stages (`Evaluator`) and the gradient-masking audit (`tfrobust.diagnostics.audit`) both use
it. The stages and cascades are in `cascades.py`, the checks against a false sense of security in
`checks.py`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfrobust.errors import UserError
from tfrobust.evaluation.cascades import STAGES, LogitsFn
from tfrobust.evaluation.checks import check_random_streams, check_randomized, check_square
from tfrobust.evaluation.state import EvalState, GroupResult
from tfrobust.numerics import full_float32

TOLERANCE = 1e-6
# Rows of every forward pass that decides a verdict (clean or adversarial): fixed, whatever the batch size
# and the number of points still robust, so that the verdict of an example never depends on its batch.
VERIFY_ROWS = 64
# Rows of a randomised model's stream check (`check_random_streams`), which runs the model in two new functions.
STREAM_CHECK_ROWS = 8
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
    stage_eot_iter: tuple[int | None, ...] = ()  # model calls per gradient of each APGD stage (EOT), None else

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean()) if self.num_examples else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean()) if self.num_examples else float("nan")


def _norm(delta: np.ndarray, norm: str) -> np.ndarray:
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "linf":
        return np.abs(flat).max(axis=1)
    if norm == "l1":
        return np.abs(flat.astype(np.float64)).sum(axis=1)
    return np.sqrt((flat.astype(np.float64) ** 2).sum(axis=1))


def fixed_layout_logits(logits_fn: LogitsFn, images: np.ndarray, rows: int = VERIFY_ROWS) -> np.ndarray:
    """float32 logits of `images`, computed in batches of exactly `rows` rows, one example per row, the
    last batch padded with zero images.

    Convolution and matrix-product kernels (oneDNN, cuDNN, cuBLAS) are chosen per input shape, and two
    kernels round differently; with one shape for every call, the logits of an example depend only on the
    example and its row, and a network in inference mode computes each row alone (no cross-example
    operation), so they do not depend on the other rows (tests/evaluation/test_evaluation.py checks it on the CPU).
    On a GPU this holds in full float32 only: through PyTorch's cuDNN on an H200, a WRN-28-10 row was
    bit-identical across the contents and positions of 64-row batches with TF32 off, and moved by up to
    5e-7 with TF32 on (benchmarks/gpu_row_independence.py); evaluations run with TF32 off (`numerics`).
    """
    n = int(images.shape[0])
    if n == 0:
        return np.zeros([0, 0], np.float32)
    padded = np.zeros([-(-n // rows) * rows, *images.shape[1:]], np.float32)
    padded[:n] = images
    out = [np.asarray(logits_fn(tf.constant(padded[i : i + rows])), np.float32) for i in range(0, len(padded), rows)]
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


def pad_rows(rows: np.ndarray, size: int, *, onehot: bool = False) -> np.ndarray:
    """`rows` padded to `size` rows (float32): zero rows, or one-hot rows of class 0 for labels (`onehot`).
    Rows beyond `size` are an error of the caller."""
    n = int(rows.shape[0])
    if n > size:
        raise ValueError(f"{n} rows do not fit a batch of {size}")
    padded = np.zeros([size, *rows.shape[1:]], np.float32)
    padded[:n] = rows
    if onehot:
        padded[n:, 0] = 1.0
    return padded


def attack_batches(
    attack: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor],
    predict: LogitsFn,
    images: np.ndarray,
    onehot: np.ndarray,
    todo: np.ndarray,
    *,
    batch_size: int,
    seed: Callable[[int], tf.Tensor],
    norm: str,
    eps: float,
    keep_adversarial: bool = False,
    load: Callable[[int, np.ndarray], GroupResult | None] | None = None,
    store: Callable[[int, GroupResult], None] | None = None,
    pad_to: int | None = None,
) -> Iterator[GroupResult]:
    """One attack over the points `todo` (indices into `images`, `onehot`), `batch_size` points at a time in
    the order of `todo`: yields one `GroupResult` per batch, batch k holding todo[k * batch_size:][:batch_size].

    `attack(images, onehot, seed)` returns candidates for a batch; `seed(k)` is batch k's stateless seed.
    A candidate counts as broken only when `verify` confirms it (inside the eps ball and [0, 1],
    misclassified in the fixed layout of `fixed_layout_logits`, a tie counting as correct), so a
    batch's verdicts do not depend on the other points of its batch. With `keep_adversarial`, the
    verified adversarial examples come with the result. `load(k, batch)` returns batch k's result saved by
    an interrupted run (yielded instead of attacking) or None; `store(k, result)` is called with every
    batch computed here (the evaluation's resumable state, `state.EvalState`). With `pad_to`, the attack
    always gets `pad_to` rows: a smaller batch is padded with zero images of class 0 (`pad_rows`) and the
    candidates of the padded rows are dropped.
    """
    labels = onehot.argmax(axis=-1)
    for k, start in enumerate(range(0, len(todo), batch_size)):
        batch = todo[start : start + batch_size]
        result = load(k, batch) if load is not None else None
        if result is None:
            began = time.time()
            batch_x, batch_y = images[batch], onehot[batch]
            if pad_to is not None:
                batch_x, batch_y = pad_rows(batch_x, pad_to), pad_rows(batch_y, pad_to, onehot=True)
            candidate = attack(tf.constant(batch_x), tf.constant(batch_y), seed(k)).numpy()[: len(batch)]
            broken = verify(predict, images[batch], candidate, labels[batch], norm, eps)
            result = GroupResult(
                index=batch,
                broken=broken,
                seconds=time.time() - began,
                adversarial=candidate[broken] if keep_adversarial else None,
            )
            if store is not None:
                store(k, result)
        yield result


# `tfrobust eval --jit-compile` and `evaluate(jit_compile=...)`.
JIT_COMPILE_MODES = ("auto", "on", "off")


def resolve_jit_compile(mode: str | bool) -> bool:
    """Whether an evaluation runs under XLA: "on" (or True), "off" (or False), or "auto": on where TensorFlow
    sees a GPU or TPU, off on CPUs, where XLA's backend does not call oneDNN's convolutions (training's
    `--jit-compile auto`, docs/xla.md)."""
    if isinstance(mode, (bool, np.bool_)):
        return bool(mode)
    if mode not in JIT_COMPILE_MODES:
        raise UserError(f"jit_compile must be one of {', '.join(JIT_COMPILE_MODES)} (or True/False), got {mode!r}")
    if mode == "auto":
        return any(d.device_type in ("GPU", "TPU") for d in tf.config.list_logical_devices())
    return mode == "on"


class Evaluator:
    """Runs a fixed cascade of attacks; configured once, never mutated between runs.

    `eot_iter`: model calls averaged per gradient step (EOT) by every APGD stage; None keeps each stage's
    own (20 for AutoAttack rand's stages, 1 otherwise). FAB and Square have no EOT (nor in the reference).

    `jit_compile`: compile each attack and the prediction with XLA (`tf.function(jit_compile=True)`) at a
    fixed batch shape, once per run: the attacks with `fixed_shape`, every batch padded to the batch size
    (module docstring). False (the default, and the CPU's choice: `tfrobust eval --jit-compile auto`) traces
    them as plain graphs with a free batch dimension.
    """

    def __init__(
        self,
        stages: Sequence[str],
        *,
        norm: str,
        eps: float,
        eot_iter: int | None = None,
        jit_compile: bool = False,
    ):
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise UserError(f"unknown attack {unknown[0]!r}; choose from: {', '.join(STAGES)}")
        if eot_iter is not None and (
            isinstance(eot_iter, bool) or not isinstance(eot_iter, (int, np.integer)) or eot_iter < 1
        ):
            raise UserError(f"eot_iter must be an integer >= 1, got {eot_iter!r}")
        if not isinstance(jit_compile, (bool, np.bool_)):
            raise UserError(f"jit_compile must be True or False, got {jit_compile!r}")
        self.jit_compile = bool(jit_compile)
        self.stage_names = tuple(stages)
        self.norm = norm
        self.eps = float(eps)
        attacks = tuple(STAGES[s](norm, self.eps) for s in self.stage_names)
        if eot_iter is not None:
            attacks = tuple(
                dataclasses.replace(a, eot_iter=int(eot_iter)) if hasattr(a, "eot_iter") else a for a in attacks
            )
        if self.jit_compile:
            attacks = tuple(
                dataclasses.replace(a, fixed_shape=True) if hasattr(a, "fixed_shape") else a for a in attacks
            )
        self._attacks = attacks
        self.stage_eot_iter = tuple(getattr(a, "eot_iter", None) for a in attacks)
        self._compiled: dict[tuple, tuple[Callable, tuple[Callable, ...]]] = {}

    def _functions(
        self, logits_fn: LogitsFn, image_shape: tuple, num_classes: int, batch_size: int
    ) -> tuple[Callable, tuple[Callable, ...]]:
        """Traced prediction and attack functions for `logits_fn`, made once per logits function and shape.

        Keyed by the function object itself (kept alive by the cache, so no id is ever reused). Without
        XLA the batch dimension is None in the input signature: each function is traced once, whatever the
        size of the shrinking subsets of still-robust points (`reduce_retracing` traced twice, a cost of
        seconds per attack graph that the reference's eager PyTorch never pays). With `jit_compile` it is
        fixed: `batch_size` rows for the attacks, `VERIFY_ROWS` for the prediction (every verdict's forward
        pass has that shape, `fixed_layout_logits`), each compiled once.
        """
        key = (logits_fn, tuple(image_shape), num_classes, batch_size if self.jit_compile else None)
        if key not in self._compiled:
            rows = batch_size if self.jit_compile else None
            images = tf.TensorSpec([rows, *image_shape], tf.float32)
            labels = tf.TensorSpec([rows, num_classes], tf.float32)
            seed = tf.TensorSpec([2], tf.int64)
            jit = {"jit_compile": True} if self.jit_compile else {}
            verify_rows = VERIFY_ROWS if self.jit_compile else None
            predict = tf.function(
                logits_fn, input_signature=[tf.TensorSpec([verify_rows, *image_shape], tf.float32)], **jit
            )
            attacks = tuple(
                tf.function(
                    lambda x, y, s, attack=attack: attack(logits_fn, x, y, s),
                    input_signature=[images, labels, seed],
                    **jit,
                )
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
            return self._run(
                logits_fn,
                dataset,
                seed=seed,
                keep_adversarial=keep_adversarial,
                progress=progress,
                state=state,
                pool_size=pool_size,
            )

    def _run(
        self,
        logits_fn: LogitsFn,
        dataset: tf.data.Dataset,
        *,
        seed: int,
        keep_adversarial: bool,
        progress: bool,
        state: EvalState | None,
        pool_size: int,
    ) -> EvalResult:
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
            predict, attacks = self._functions(logits_fn, tuple(x.shape[1:]), int(labels.shape[-1]), batch_size)
            if pool_index == 0:
                # Once, on the first batch (resumed or not): the model's classes and its determinism.
                first = tf.constant(x[:batch_size])
                # Under XLA the prediction takes `VERIFY_ROWS` rows only.
                predict_any = (
                    (lambda t, f=predict: fixed_layout_logits(f, np.asarray(t))) if self.jit_compile else predict
                )
                logits = np.asarray(predict_any(first))
                for attack in self._attacks:
                    findings.extend(getattr(attack, "notes", lambda k: ())(int(logits.shape[-1])))
                # An EOT evaluation expects a randomised model: the check would only repeat it (the
                # reference skips it for its rand version).
                eot = any((e or 1) > 1 for e in self.stage_eot_iter)
                randomised = None if eot else check_randomized(predict_any, first, logits)
                if randomised:
                    findings.append(randomised)
                if eot or randomised:  # a randomised model: are its draws independent across functions?
                    repeated = check_random_streams(logits_fn, first[:STREAM_CHECK_ROWS])
                    if repeated:
                        findings.append(repeated)
            correct, broken_at, adv, seconds = self._run_pool(
                predict,
                attacks,
                x,
                labels,
                seed=seed,
                pool_index=pool_index,
                batch_size=batch_size,
                keep_adversarial=keep_adversarial,
                state=state,
                progress=progress,
            )
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
        after = tuple(
            float(np.sum(clean & ((broken_at == -1) | (broken_at > s + 1)))) / n if n else float("nan")
            for s in range(len(self.stage_names))
        )
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
            stage_eot_iter=self.stage_eot_iter,
        )

    def _run_pool(
        self,
        predict: Callable,
        attacks: tuple[Callable, ...],
        x: np.ndarray,
        labels: np.ndarray,
        *,
        seed: int,
        pool_index: int,
        batch_size: int,
        keep_adversarial: bool,
        state: EvalState | None,
        progress: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """The cascade on one pool: (clean correct, broken_at, adversarial or None, seconds per stage)."""
        correct = ~misclassified(fixed_layout_logits(predict, x), labels.argmax(axis=-1))  # `verify`'s rule
        broken_at = np.where(correct, -1, 0).astype(np.int16)
        adv = x.copy() if keep_adversarial else None
        seconds = np.zeros(len(self.stage_names))
        for stage, name in enumerate(self.stage_names):
            todo = np.flatnonzero(broken_at == -1)
            num_batches = -(-len(todo) // batch_size)
            bar = keras.utils.Progbar(num_batches, unit_name="batch") if progress and num_batches else None
            if bar is not None:
                print(
                    f"stage {stage + 1}/{len(self.stage_names)} {name}: {len(todo)} robust points in "
                    f"{num_batches} batches" + (f" (pool {pool_index + 1})" if pool_index else ""),
                    flush=True,
                )

            def load(k: int, batch: np.ndarray, stage: int = stage) -> GroupResult | None:
                saved = state.load_group((pool_index, stage, k), batch) if state is not None else None
                if saved is not None and keep_adversarial and saved.adversarial is None:
                    raise UserError(
                        f"{state.directory} was saved without adversarial examples: resume with the "
                        "same --save-examples choice"
                    )
                return saved

            def store(k: int, result: GroupResult, stage: int = stage) -> None:
                if state is not None:
                    state.save_group((pool_index, stage, k), result)

            def seed_of(k: int, stage: int = stage) -> tf.Tensor:
                # Batch k of stage s in pool p: seeded by (seed, p, s, k) alone, so a resumed run attacks
                # each batch as the uninterrupted one does.
                return tf.constant([seed, (pool_index * 100 + stage) * 1_000_000 + k], tf.int64)

            results = attack_batches(
                attacks[stage],
                predict,
                x,
                labels,
                todo,
                batch_size=batch_size,
                seed=seed_of,
                norm=self.norm,
                eps=self.eps,
                keep_adversarial=keep_adversarial,
                load=load,
                store=store,
                pad_to=batch_size if self.jit_compile else None,
            )
            for k, result in enumerate(results):
                hit = result.index[result.broken]
                broken_at[hit] = stage + 1
                if adv is not None:
                    adv[hit] = result.adversarial
                seconds[stage] += result.seconds
                if bar is not None:
                    bar.update(k + 1, values=[("broken", float(result.broken.mean()))])
        return correct, broken_at, adv, seconds


def keras_logits_fn(network: keras.Model) -> LogitsFn:
    """Inference-mode logits (moving BatchNorm statistics), float32."""
    return lambda images: tf.cast(network(images, training=False), tf.float32)
