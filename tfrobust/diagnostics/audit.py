"""`tfrobust audit`: the gradient-masking checks of the paper's appendix C, for any model.

Rebuffi et al. 2021, App. C ("Analysis of Models"), after Athalye et al. 2018 and Uesato et al. 2018: a
robust accuracy measured by gradient attacks is only meaningful when the gradients are informative. Each
check is a small function returning a `CheckResult(name, passed, threshold, details)`:

1. `check_eps_sweep` (Fig. 10(a)): APGD-CE (1 restart, 100 iterations) robust accuracy for eps = m × the
   model's eps, m in `eps_multiples` (default 0, 0.5, 1, 2, 4, 8). Passes when the accuracy at the largest
   eps is at most `max_accuracy_at_largest_eps` (1%) and the curve never rises by more than
   `eps_rise_tolerance` (2 points) from one eps to the next. A large enough ball contains an image of
   another class (at 8 × 8/255 = 64/255 on CIFAR-10 every image can be changed into a different one), so
   an attack that follows informative gradients breaks every point there; accuracy that stays up, or goes
   *up* with eps, means the attack is being stopped by the model's gradients, not by robustness.
2. `check_steps_sweep` (Fig. 10(b)): APGD-CE at the model's eps with K iterations, K in `steps` (default 5,
   10, …, 1000). Passes when the accuracies of the two largest K differ by at most `steps_tolerance`
   (1 point): the attack has converged, so more iterations would not lower the number. This check does
   not catch zero gradients (an attack that cannot move converges at once); checks 1 and 3 do.
3. `check_square` (Table 6): the gradient attacks of AutoAttack (APGD-CE, APGD-T) and the gradient-free
   Square attack run independently on the same points. Fails when Square breaks more than
   `square_threshold` (0.2% of the points: AutoAttack's `check_square_sr` alpha, also
   `evaluation.SQUARE_MASKING_THRESHOLD`) that the gradient attacks left robust.
4. `check_landscape` (Fig. 11): for the first `landscape_images` points, the margin z_y − max_{i≠y} z_i on a
   `grid_size` × `grid_size` grid over the plane x + α·u + β·v (clipped to [0, 1]), u the PGD-40
   perturbation normalised to unit norm, v a Rademacher direction of unit norm, α, β in
   [−`grid_extent`·eps, `grid_extent`·eps]. Two statistics, each with a threshold:
   - missed: an image where a grid point inside the eps ball is misclassified (margin < 0) although PGD-40
     found no adversarial example: the gradient attack missed what a 2-D grid search found. Threshold: 0
     such images;
   - roughness: max |second difference| of the margin along either axis divided by the margin's range on
     the grid. A smooth surface has second differences of order h²·curvature (small next to the range); a
     step (a quantised or thresholded input, a hard gate) puts a whole jump into one second difference, so
     the ratio approaches 1. Threshold `roughness_threshold` = 0.25 (measured on a 21 × 21 grid, ±2 eps:
     0.02-0.05 for a linear model, the kinks being where pixels reach the [0, 1] box; 0.04-0.08 for a
     briefly trained WRN-10-1 on digits; 0.58-1.07 for a linear model behind a hard input threshold); a flat
     surface (range 0) scores 0.

What a verdict can and cannot prove: a failed check is evidence of gradient masking (or of too weak an
attack configuration) on the points examined; passing every check does not prove robustness, only that
these symptoms were absent on these points. All checks run on a sample (`n_examples`, default 200), so
accuracies have a sampling error of about ±sqrt(p(1−p)/n); the landscape looks at a handful of images in
one random plane. Use the results with the full evaluation (`tfrobust eval --attack aa`), not instead of it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobust.attacks.apgd import APGD
from tfrobust.attacks.losses import margin as margin_loss
from tfrobust.attacks.pgd import pgd40_attack
from tfrobust.attacks.square import Square
from tfrobust.diagnostics.output import ReportDir, pyplot, text_table
from tfrobust.errors import UserError
from tfrobust.evaluation import (
    SQUARE_MASKING_THRESHOLD,
    attack_batches,
    check_randomized,
    fixed_layout_logits,
    misclassified,
)
from tfrobust.numerics import full_float32, numerics_record
from tfrobust.threat_model import resolve_threat_model

LogitsFn = Callable[[tf.Tensor], tf.Tensor]
CHECKS = ("eps", "steps", "square", "landscape")


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check's outcome: `threshold` states the rule it used, `measured` the value it compared (one
    line), `details` every measured number."""

    name: str
    passed: bool
    threshold: str
    details: dict[str, Any]
    measured: str = ""


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """What the checks run and the thresholds of their verdicts (see the module docstring); frozen."""

    eps_multiples: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    steps: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 500, 1000)
    square_queries: int = 5000
    landscape_images: int = 2
    grid_size: int = 21
    grid_extent: float = 2.0
    batch_size: int = 256
    seed: int = 0
    checks: tuple[str, ...] = CHECKS
    max_accuracy_at_largest_eps: float = 0.01
    eps_rise_tolerance: float = 0.02
    steps_tolerance: float = 0.01
    square_threshold: float = SQUARE_MASKING_THRESHOLD
    roughness_threshold: float = 0.25

    def __post_init__(self) -> None:
        if not self.eps_multiples or any(not m >= 0 for m in self.eps_multiples):
            raise UserError(f"--eps-multiples must be non-negative numbers, got {list(self.eps_multiples)}")
        if len(self.steps) < 2 or any(not isinstance(k, int) or k < 1 for k in self.steps):
            raise UserError(f"--steps needs at least two positive integers, got {list(self.steps)}")
        if not isinstance(self.square_queries, int) or self.square_queries < 1:
            raise UserError(f"--square-queries must be a positive integer, got {self.square_queries}")
        if self.landscape_images < 1 or self.grid_size < 3 or not self.grid_extent > 0:
            raise UserError("--landscape-images must be >= 1, --grid >= 3 and the grid extent > 0")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown or not self.checks:
            raise UserError(
                f"unknown check {unknown[0] if unknown else '(none given)'!r}; choose from {', '.join(CHECKS)}"
            )


# --------------------------------------------------------------------------------------------------
# Running an attack on a sample


class _Runner:
    """Batched, traced attacks on fixed (images, labels), with every success re-verified: the evaluation
    engine's single-attack runner (`evaluation.attack_batches`: batches in order, `evaluation.verify`,
    inside the ball and [0, 1] and misclassified in the fixed layout on a fresh forward pass)."""

    def __init__(
        self, logits_fn: LogitsFn, images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, seed: int
    ):
        self.logits_fn = logits_fn
        self.predict = tf.function(logits_fn, reduce_retracing=True)
        self.images = images.astype(np.float32)
        self.labels = labels.astype(np.int64)
        self.onehot = np.eye(num_classes, dtype=np.float32)[self.labels]
        self.batch_size = batch_size
        self.seed = seed
        self.clean_logits = self.logits(self.images)
        self.correct = ~misclassified(self.clean_logits, self.labels)  # the verdict rule of `verify`

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits in `evaluation.fixed_layout_logits`'s fixed batch layout."""
        if len(images) == 0:
            return np.zeros([0, self.onehot.shape[1]], np.float32)
        return fixed_layout_logits(self.predict, images)

    def broken(self, attack: Any, norm: str, eps: float, stream: int) -> np.ndarray:
        """Per point: did `attack` (at radius `eps`) find a verified adversarial example? (False for the
        points already misclassified clean, which are never attacked.)"""
        fn = tf.function(lambda x, y, seed: attack(self.logits_fn, x, y, seed), reduce_retracing=True)
        out = np.zeros(len(self.images), bool)
        results = attack_batches(
            fn,
            self.predict,
            self.images,
            self.onehot,
            np.flatnonzero(self.correct),
            batch_size=self.batch_size,
            norm=norm,
            eps=eps,
            seed=lambda b: tf.constant([self.seed, stream * 100_003 + b], tf.int64),
        )
        for result in results:
            out[result.index] = result.broken
        return out


def _accuracy(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else math.nan


# --------------------------------------------------------------------------------------------------
# The checks


def check_eps_sweep(
    runner: _Runner, *, norm: str, eps: float, config: AuditConfig, progress: Callable[[], None] = lambda: None
) -> CheckResult:
    """Fig. 10(a): APGD-CE (1 restart × 100) robust accuracy against eps = multiple × eps."""
    multiples = sorted(set(float(m) for m in config.eps_multiples))
    base = APGD(norm, eps, "ce", n_iter=100, n_restarts=1)
    points = []
    for index, multiple in enumerate(multiples):
        radius = multiple * eps
        if radius == 0:
            robust = runner.correct.copy()  # no perturbation: clean accuracy
        else:
            robust = runner.correct & ~runner.broken(dataclasses.replace(base, eps=radius), norm, radius, 10 + index)
        points.append({"multiple": multiple, "eps": radius, "robust_accuracy": _accuracy(robust)})
        progress()
    accuracies = [p["robust_accuracy"] for p in points]
    rises = [max(0.0, b - a) for a, b in zip(accuracies, accuracies[1:])]
    largest_rise = max(rises, default=0.0)
    final = accuracies[-1]
    passed = final <= config.max_accuracy_at_largest_eps and largest_rise <= config.eps_rise_tolerance
    return CheckResult(
        name="eps_sweep",
        passed=bool(passed),
        threshold=(
            f"APGD-CE accuracy at {multiples[-1]:g}×eps <= {100 * config.max_accuracy_at_largest_eps:g}% "
            f"and never rising by more than {100 * config.eps_rise_tolerance:g} points as eps grows"
        ),
        details={
            "attack": "APGD-CE, 1 restart x 100 iterations",
            "points": points,
            "accuracy_at_largest_eps": final,
            "largest_rise": largest_rise,
        },
        measured=f"{100 * final:.2f}% at {multiples[-1]:g}×eps, largest rise {100 * largest_rise:.2f} points",
    )


def check_steps_sweep(
    runner: _Runner, *, norm: str, eps: float, config: AuditConfig, progress: Callable[[], None] = lambda: None
) -> CheckResult:
    """Fig. 10(b): APGD-CE robust accuracy at the model's eps against the number of iterations."""
    steps = sorted(set(int(k) for k in config.steps))
    base = APGD(norm, eps, "ce", n_iter=100, n_restarts=1)
    points = []
    for index, k in enumerate(steps):
        robust = runner.correct & ~runner.broken(dataclasses.replace(base, n_iter=k), norm, eps, 30 + index)
        points.append({"steps": k, "robust_accuracy": _accuracy(robust)})
        progress()
    change = abs(points[-1]["robust_accuracy"] - points[-2]["robust_accuracy"])
    return CheckResult(
        name="steps_sweep",
        passed=bool(change <= config.steps_tolerance),
        threshold=(
            f"APGD-CE accuracy changes by <= {100 * config.steps_tolerance:g} points between "
            f"{steps[-2]} and {steps[-1]} iterations"
        ),
        details={"attack": "APGD-CE, 1 restart", "eps": eps, "points": points, "last_change": change},
        measured=(
            f"{100 * points[-2]['robust_accuracy']:.2f}% -> {100 * points[-1]['robust_accuracy']:.2f}% "
            f"({100 * change:.2f} points)"
        ),
    )


def check_square(
    runner: _Runner, *, norm: str, eps: float, config: AuditConfig, progress: Callable[[], None] = lambda: None
) -> CheckResult:
    """Table 6: does gradient-free Square break points the gradient attacks (APGD-CE, APGD-T) left robust?"""
    num_classes = runner.onehot.shape[1]
    ce = APGD(norm, eps, "ce", n_iter=100, n_restarts=1)
    targeted = APGD(norm, eps, "dlr-targeted", n_iter=100, n_restarts=1, n_target_classes=9)
    square = Square(norm, eps, n_queries=config.square_queries, n_restarts=1)
    broken_ce = runner.broken(ce, norm, eps, 60)
    progress()
    notes = list(targeted.notes(num_classes))
    broken_t = runner.broken(targeted, norm, eps, 61) if targeted.num_targets(num_classes) else np.zeros_like(broken_ce)
    progress()
    broken_square = runner.broken(square, norm, eps, 62)
    progress()
    gradient = broken_ce | broken_t
    square_only = broken_square & ~gradient
    fraction = float(square_only.mean()) if square_only.size else 0.0
    return CheckResult(
        name="square_vs_gradient",
        passed=bool(fraction <= config.square_threshold),
        threshold=(
            f"Square breaks <= {100 * config.square_threshold:g}% of the points that APGD-CE and "
            "APGD-T left robust (AutoAttack's check_square_sr)"
        ),
        details={
            "clean_accuracy": _accuracy(runner.correct),
            "gradient_robust_accuracy": _accuracy(runner.correct & ~gradient),
            "square_robust_accuracy": _accuracy(runner.correct & ~broken_square),
            "combined_robust_accuracy": _accuracy(runner.correct & ~gradient & ~broken_square),
            "square_only_count": int(square_only.sum()),
            "square_only_fraction": fraction,
            "square_queries": config.square_queries,
            "gradient_attacks": "APGD-CE 1x100, APGD-T 9 targets x 1 x 100",
            "notes": notes,
        },
        measured=f"{int(square_only.sum())} of {square_only.size} points ({100 * fraction:.2f}%) broken by Square only",
    )


def _unit(delta: np.ndarray, norm: str) -> np.ndarray:
    flat = delta.reshape(-1).astype(np.float64)
    size = np.abs(flat).max() if norm == "linf" else np.sqrt((flat**2).sum())
    return (delta / size).astype(np.float32) if size > 0 else np.zeros_like(delta)


def roughness(surface: np.ndarray) -> float:
    """max |second difference| of a grid along either axis / (max − min); 0 for a flat surface."""
    span = float(surface.max() - surface.min())
    if span <= 0:
        return 0.0
    d_rows = np.abs(surface[2:, :] - 2 * surface[1:-1, :] + surface[:-2, :])
    d_cols = np.abs(surface[:, 2:] - 2 * surface[:, 1:-1] + surface[:, :-2])
    return float(max(d_rows.max(), d_cols.max()) / span)


def landscape(runner: _Runner, index: int, *, norm: str, eps: float, config: AuditConfig) -> dict[str, Any]:
    """Fig. 11's surface for image `index`: margin z_y − max_{i≠y} z_i over x + α·u + β·v (clipped to
    [0, 1]), u = normalised PGD-40 perturbation, v = a unit-norm Rademacher direction."""
    x = runner.images[index : index + 1]
    y = runner.onehot[index : index + 1]
    seed = tf.constant([runner.seed, 90_000 + index], tf.int64)
    adv = pgd40_attack(norm, eps)(runner.logits_fn, tf.constant(x), tf.constant(y), seed).numpy()
    u = _unit(adv[0] - x[0], norm)
    rng = np.random.default_rng([runner.seed, index])
    v = _unit(rng.choice([-1.0, 1.0], size=x.shape[1:]).astype(np.float32), norm)
    axis = np.linspace(-config.grid_extent * eps, config.grid_extent * eps, config.grid_size)
    alphas, betas = np.meshgrid(axis, axis, indexing="ij")
    points = np.clip(x[0] + alphas[..., None, None, None] * u + betas[..., None, None, None] * v, 0.0, 1.0)
    points = points.reshape(-1, *x.shape[1:]).astype(np.float32)
    logits = runner.logits(points)
    labels = np.repeat(runner.labels[index : index + 1], len(points))
    surface = -np.asarray(margin_loss(tf.constant(logits), tf.constant(labels))).reshape(alphas.shape)
    delta = (points - x).reshape(len(points), -1).astype(np.float64)
    size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta**2).sum(1))
    inside = (size <= eps * (1 + 1e-6) + 1e-6).reshape(alphas.shape)
    clean_margin = float(
        -np.asarray(
            margin_loss(
                tf.constant(runner.clean_logits[index : index + 1]), tf.constant(runner.labels[index : index + 1])
            )
        )[0]
    )
    pgd_margin = float(
        -np.asarray(margin_loss(tf.constant(runner.logits(adv)), tf.constant(runner.labels[index : index + 1])))[0]
    )
    grid_adversarial = bool(np.any(inside & (surface < 0)))
    return {
        "index": int(index),
        "label": int(runner.labels[index]),
        "clean_margin": clean_margin,
        "pgd40_margin": pgd_margin,
        "pgd40_step": {
            "alpha": float(np.abs(adv[0] - x[0]).max() if norm == "linf" else np.linalg.norm(adv[0] - x[0])),
            "beta": 0.0,
        },
        "grid_adversarial_in_ball": grid_adversarial,
        # Missed: correctly classified, PGD-40 found nothing, the grid found a misclassified point in the ball.
        "missed_by_pgd40": bool(clean_margin > 0 and pgd_margin > 0 and grid_adversarial),
        "roughness": roughness(surface),
        "min_margin_in_ball": float(surface[inside].min()) if inside.any() else math.nan,
        "axis": axis.tolist(),
        "surface": surface.tolist(),
        "inside_ball": inside.tolist(),
    }


def check_landscape(
    runner: _Runner, *, norm: str, eps: float, config: AuditConfig, progress: Callable[[], None] = lambda: None
) -> CheckResult:
    """Fig. 11: loss landscapes of the first `landscape_images` points, with the two statistics of the
    module docstring (missed by PGD-40, roughness)."""
    count = min(config.landscape_images, len(runner.images))
    surfaces = []
    for index in range(count):
        surfaces.append(landscape(runner, index, norm=norm, eps=eps, config=config))
        progress()
    missed = [s["index"] for s in surfaces if s["missed_by_pgd40"]]
    rough = [s["index"] for s in surfaces if s["roughness"] > config.roughness_threshold]
    return CheckResult(
        name="loss_landscape",
        passed=not missed and not rough,
        threshold=(
            f"no image where the grid finds a misclassified point in the eps ball that PGD-40 missed, "
            f"and roughness (max second difference / range) <= {config.roughness_threshold:g}"
        ),
        details={
            "images": surfaces,
            "missed_by_pgd40": missed,
            "too_rough": rough,
            "max_roughness": max(s["roughness"] for s in surfaces),
            "grid": {"size": config.grid_size, "extent_in_eps": config.grid_extent},
            "directions": "u: PGD-40 (margin loss) perturbation / its norm; v: Rademacher / its norm",
        },
        measured=(
            f"{len(missed)} of {count} images missed by PGD-40, max roughness "
            f"{max(s['roughness'] for s in surfaces):.3f}"
        ),
    )


# --------------------------------------------------------------------------------------------------
# Plots


def plot_eps(result: CheckResult, eps: float):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    points = result.details["points"]
    ax.plot([p["eps"] for p in points], [100 * p["robust_accuracy"] for p in points], "o-")
    ax.axvline(eps, color="grey", linestyle=":", label=f"model eps {eps:.4g}")
    ax.set_xlabel("eps")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(f"APGD-CE against eps ({'passed' if result.passed else 'FLAGGED'})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_steps(result: CheckResult):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    points = result.details["points"]
    ax.plot([p["steps"] for p in points], [100 * p["robust_accuracy"] for p in points], "o-")
    ax.set_xscale("log")
    ax.set_xlabel("APGD-CE iterations")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(f"APGD-CE against iterations ({'passed' if result.passed else 'FLAGGED'})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_landscapes(result: CheckResult, eps: float):
    """Per image: a 3-D surface (as Fig. 11) and a contour map with the decision boundary (margin 0, red),
    the eps ball (black) and PGD-40's point (star)."""
    plt = pyplot()
    images = result.details["images"]
    fig = plt.figure(figsize=(5 * len(images), 9))
    for column, item in enumerate(images):
        axis = np.array(item["axis"]) / eps
        alphas, betas = np.meshgrid(axis, axis, indexing="ij")
        surface = np.array(item["surface"])
        ax = fig.add_subplot(2, len(images), column + 1, projection="3d")
        ax.plot_surface(alphas, betas, surface, cmap="viridis", linewidth=0)
        ax.set_xlabel("u (PGD-40) / eps")
        ax.set_ylabel("v (Rademacher) / eps")
        ax.set_zlabel("margin")
        ax.set_title(f"image {item['index']} (label {item['label']})")
        ax2 = fig.add_subplot(2, len(images), len(images) + column + 1)
        contour = ax2.contourf(alphas, betas, surface, levels=20, cmap="viridis")
        fig.colorbar(contour, ax=ax2)
        if surface.min() < 0 < surface.max():
            ax2.contour(alphas, betas, surface, levels=[0.0], colors="red")
        ax2.contour(alphas, betas, np.array(item["inside_ball"], float), levels=[0.5], colors="black")
        ax2.plot([item["pgd40_step"]["alpha"] / eps], [0.0], "*", color="white", markersize=12, markeredgecolor="k")
        ax2.set_xlabel("u / eps")
        ax2.set_ylabel("v / eps")
        ax2.set_title(f"roughness {item['roughness']:.3f}; red: margin 0; black: eps ball")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# The command


def run_checks(
    logits_fn: LogitsFn,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    norm: str,
    eps: float,
    config: AuditConfig,
    progress: bool = False,
) -> tuple[list[CheckResult], list[str]]:
    """Runs the configured checks on (images [N,H,W,C] in [0,1], labels [N]); returns (results, notes).

    With TensorFloat-32 off (`numerics.full_float32`), as every attack evaluation.
    """
    with full_float32():
        return _run_checks(
            logits_fn, images, labels, num_classes=num_classes, norm=norm, eps=eps, config=config, progress=progress
        )


def _run_checks(
    logits_fn: LogitsFn,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    norm: str,
    eps: float,
    config: AuditConfig,
    progress: bool,
) -> tuple[list[CheckResult], list[str]]:
    runner = _Runner(logits_fn, images, labels, num_classes, config.batch_size, config.seed)
    notes = []
    randomised = check_randomized(
        runner.predict, tf.constant(images[: config.batch_size]), runner.clean_logits[: config.batch_size]
    )
    if randomised:
        notes.append(randomised)
    units = {
        "eps": len(set(config.eps_multiples)),
        "steps": len(set(config.steps)),
        "square": 3,
        "landscape": min(config.landscape_images, len(images)),
    }
    bar = keras.utils.Progbar(sum(units[c] for c in config.checks), unit_name="step") if progress else None
    done = [0]

    def tick() -> None:
        done[0] += 1
        if bar is not None:
            bar.update(done[0])

    functions = {
        "eps": check_eps_sweep,
        "steps": check_steps_sweep,
        "square": check_square,
        "landscape": check_landscape,
    }
    # Every sweep point is a new attack configuration, hence a new trace by design: TensorFlow's
    # "excessive retracing" warning would only be noise here.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        results = [
            functions[name](runner, norm=norm, eps=eps, config=config, progress=tick)
            for name in CHECKS
            if name in config.checks
        ]
    finally:
        logger.setLevel(level)
    return results, notes


def verdict_table(results: Sequence[CheckResult]) -> str:
    rows = [[r.name, "pass" if r.passed else "FLAGGED", r.measured, r.threshold] for r in results]
    return text_table(["check", "verdict", "measured", "rule"], rows)


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """What `tfrobust audit` was asked; None fields default to the model's metadata."""

    model_path: str
    out: str
    config: AuditConfig = AuditConfig()
    dataset: str | None = None
    data_dir: str | None = None
    split: str = "test"
    norm: str | None = None
    eps: float | None = None
    n_examples: int = 200
    overwrite: bool = False
    trust_model: bool = (
        False  # run the model without `tfrobust.inspection` (`export.load_model`); audit.json records it
    )


def run_audit(settings: AuditSettings) -> dict[str, Any]:
    """Loads the model and the first `n_examples` of the split, runs the checks, writes audit.json, the PNGs
    and audit.md into `settings.out`; returns {"report", "table", "files"}. TensorFloat-32 is off from
    before the model loads (`numerics.full_float32`)."""
    with full_float32():
        return _run_audit(settings)


def _run_audit(settings: AuditSettings) -> dict[str, Any]:
    from tfrobust.data.datasets import load_split
    from tfrobust.export import load_model

    if settings.n_examples < 1:
        raise UserError(f"--n-examples must be >= 1, got {settings.n_examples}")
    model = load_model(settings.model_path, trust_model=settings.trust_model)
    dataset, norm, eps, training = resolve_threat_model(model.metadata, settings.dataset, settings.norm, settings.eps)
    info, split = load_split(
        dataset,
        settings.split,
        val_size=training.get("val_size", 1024),
        seed=training.get("seed", 0),
        data_dir=settings.data_dir or training.get("data_dir"),
    )
    n = min(settings.n_examples, len(split))
    images = split.images[:n].astype(np.float32) / 255.0
    labels = split.labels[:n]
    # Opened once the inputs are known to be usable, before the long work: a refusal comes at once.
    folder = ReportDir(settings.out, command="audit", overwrite=settings.overwrite)
    start = time.time()
    results, notes = run_checks(
        model.logits,
        images,
        labels,
        num_classes=info.num_classes,
        norm=norm,
        eps=eps,
        config=settings.config,
        progress=True,
    )
    for result in results:
        if result.name == "eps_sweep":
            folder.save_figure("eps_sweep.png", plot_eps(result, eps))
        elif result.name == "steps_sweep":
            folder.save_figure("steps_sweep.png", plot_steps(result))
        elif result.name == "loss_landscape":
            folder.save_figure("loss_landscape.png", plot_landscapes(result, eps))
    report = {
        "model": model.path,
        "dataset": info.name,
        "split": settings.split,
        "num_examples": n,
        "norm": norm,
        "eps": eps,
        "seed": settings.config.seed,
        "trust_model": settings.trust_model,
        "passed": all(r.passed for r in results),
        "checks": [dataclasses.asdict(r) for r in results],
        "notes": notes,
        "config": dataclasses.asdict(settings.config),
        "seconds": round(time.time() - start, 1),
        "numerics": numerics_record(),
        "caveat": (
            "a flagged check is evidence of gradient masking (or of too weak an attack) on these points; "
            "passing every check does not prove robustness"
        ),
    }
    folder.write_json("audit.json", report)
    table = verdict_table(results)
    head = f"{model.path}  {info.name}/{settings.split}  n={n}  {norm} eps={eps:.5g}"
    folder.write_text(
        "audit.md",
        "\n".join(
            [
                "# Gradient-masking audit",
                "",
                head,
                "",
                "```",
                table,
                "```",
                "",
                f"Overall: {'no check flagged' if report['passed'] else 'FLAGGED'}. {report['caveat']}.",
                "",
                *[f"- note: {note}" for note in notes],
                *[
                    f"![{name}]({name}.png)"
                    for name in ("eps_sweep", "steps_sweep", "loss_landscape")
                    if f"{name}.png" in folder.files
                ],
                "",
            ]
        ),
    )
    folder.finish()
    return {"report": report, "table": f"{head}\n{table}", "files": [folder.path(f) for f in folder.files]}
