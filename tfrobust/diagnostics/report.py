"""`tfrobust report RUN_DIR [RUN_DIR ...]`: training curves and final numbers of one or several runs.

What the paper shows for every recipe (Rebuffi et al. 2021, Figs. 2-5): validation robust accuracy (PGD-40)
over training for the raw and the averaged (WA) weights, several runs overlaid. Read from each run
directory (`tfrobust/training/run.py`):

- `log.csv` (Keras CSVLogger): per epoch (0-based `epoch` column, so epoch e ends after e + 1 epochs)
  training loss/accuracies and `val_{raw,avg}_{clean,pgd40}_accuracy`, NaN on epochs without validation;
- `config.json`: the resolved `TrainConfig`; the learning rate and the EMA decay are recomputed from it
  with the very functions training used (`training_schedule`, `ema_decay`), per optimizer step;
- `checkpoint.npz`: its state records the samples per epoch (the whole original training set; with the
  batch size it places every optimizer step on the epoch axis, and the schedules are functions of the
  step); without a checkpoint the schedule curves of that run are left out and the report says why;
- `summary.json` (finished runs): best and last validation numbers, the export path.

Writes `accuracy.png` (clean and PGD-40, raw dashed / averaged solid, one colour per run),
`schedules.png` (learning rate and EMA decay against epochs), `training.png` (training loss and
accuracies), `report.md` (table of final and best numbers, each run's config) and `report.json`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from tfrobust.diagnostics.output import ReportDir, markdown_table, pyplot, text_table
from tfrobust.errors import UserError
from tfrobust.training.checkpoint import CHECKPOINT_NAME, read_state

VAL_KEYS = ("val_raw_clean_accuracy", "val_raw_pgd40_accuracy", "val_avg_clean_accuracy", "val_avg_pgd40_accuracy")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run directory as the report reads it."""

    name: str
    path: str
    config: dict[str, Any]  # config.json as written (the resolved TrainConfig)
    columns: dict[str, np.ndarray]  # log.csv column -> float values per logged epoch
    summary: dict[str, Any] | None
    epoch_examples: int | None  # samples per epoch, from the checkpoint
    note: str | None = None  # why something could not be drawn for this run

    @property
    def epochs_done(self) -> np.ndarray:
        """Epochs completed at each log row (the CSV's 0-based `epoch` + 1)."""
        return self.columns["epoch"] + 1.0 if "epoch" in self.columns else np.zeros([0])


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_log(path: str) -> dict[str, np.ndarray]:
    """log.csv as float columns (empty or unparsable cells are NaN). Keras's CSVLogger writes whole lines, so
    a file whose last line has no line end is truncated: refused, as is one that is not UTF-8 text."""
    try:
        with open(path, newline="") as handle:
            text = handle.read()
    except (OSError, ValueError) as error:  # ValueError: not UTF-8 text (a flipped bit)
        raise UserError(f"unreadable {path}: {error}") from None
    if text and not text.endswith("\n"):
        raise UserError(f"{path} ends in an incomplete line: the file is truncated")
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        return {}
    return {key: np.array([_float(row.get(key) or "") for row in rows]) for key in rows[0]}


def epoch_examples_from_checkpoint(path: str) -> int | None:
    """Samples per epoch recorded in a training checkpoint's state (`TrainingCheckpoint`), read with
    `checkpoint.read_state` (the state only, not the arrays); None without a checkpoint."""
    if not os.path.isfile(path):
        return None
    examples = read_state(path).get("epoch_examples")
    return int(examples) if isinstance(examples, int) and examples > 0 else None


def read_run(path: str, name: str | None = None) -> RunRecord:
    """Reads a run directory (config.json and log.csv are required)."""
    config_path, log_path = os.path.join(path, "config.json"), os.path.join(path, "log.csv")
    if not os.path.isfile(config_path):
        raise UserError(f"{path} is not a tfrobust run directory (no config.json)")
    if not os.path.isfile(log_path):
        raise UserError(f"{path} has no log.csv yet: it has not finished an epoch")
    try:
        with open(config_path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"unreadable {config_path}: {error}") from None
    if not isinstance(config, dict):
        raise UserError(f"unreadable {config_path}: expected a JSON object, got {type(config).__name__}")
    columns = read_log(log_path)
    if "epoch" not in columns:
        raise UserError(f"{log_path} has no 'epoch' column: not a tfrobust training log")
    summary = None
    summary_path = os.path.join(path, "summary.json")
    if os.path.isfile(summary_path):
        try:
            with open(summary_path) as handle:
                summary = json.load(handle)
        except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8 text
            raise UserError(f"unreadable {summary_path}: {error}") from None
        if not isinstance(summary, dict):
            raise UserError(f"unreadable {summary_path}: expected a JSON object, got {type(summary).__name__}")
    examples = epoch_examples_from_checkpoint(os.path.join(path, CHECKPOINT_NAME))
    note = None if examples else "no checkpoint.npz with the samples per epoch: schedule curves left out"
    return RunRecord(name or os.path.basename(os.path.normpath(path)), path, config, columns, summary, examples, note)


def schedule_curves(config: dict[str, Any], epoch_examples: int) -> dict[str, np.ndarray]:
    """Learning rate and EMA decay at every optimizer step of the run, x axis in epochs.

    Recomputed with training's own `training_schedule` (peak, warm-up epochs, epochs, kind from the config,
    steps by the reference's floor(epochs * examples / batch); docs/method.md, "Optimizer and schedule") and
    `ema_decay` (min(τ, (1+t)/(10+t)), docs/method.md, "Weight averaging"). The learning rate of step t is the
    one applied by update t; the EMA decay of update t likewise.
    """
    from tfrobust.training.schedules import ema_decay, steps_after_epochs, training_schedule

    batch = int(config["batch_size"])
    schedule = training_schedule(
        peak=float(config["learning_rate"]),
        warmup_epochs=int(config["warmup_epochs"]),
        epochs=int(config["epochs"]),
        epoch_examples=epoch_examples,
        batch_size=batch,
        kind=config["schedule"],
    )
    steps = np.arange(steps_after_epochs(int(config["epochs"]), epoch_examples, batch), dtype=np.int64)
    return {
        "epoch": (steps + 1) * batch / epoch_examples,  # the epochs' worth of samples after update t
        "learning_rate": np.asarray(schedule(steps)),
        "ema_decay": np.asarray(ema_decay(steps, float(config["ema_decay"]))),
    }


def _finite(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values)


def run_numbers(run: RunRecord) -> dict[str, Any]:
    """Final (last validated epoch) and best (by the run's selection metric) validation numbers."""
    cols = run.columns
    epochs = run.epochs_done
    select_on = "val_avg_clean_accuracy" if run.config.get("loss") == "standard" else "val_avg_pgd40_accuracy"
    out: dict[str, Any] = {
        "epochs_logged": int(epochs.max()) if epochs.size else 0,
        "epochs_configured": run.config.get("epochs"),
        "select_on": select_on,
        "last": None,
        "best": None,
    }
    if select_on not in cols:
        return out
    validated = np.flatnonzero(_finite(cols[select_on]))
    if not validated.size:
        return out

    def record(i: int) -> dict[str, Any]:
        return {"epoch": int(epochs[i]), **{k: float(cols[k][i]) for k in VAL_KEYS if k in cols}}

    out["last"] = record(int(validated[-1]))
    # First maximum, as ModelSelection keeps the first epoch reaching the best value (strict '>').
    out["best"] = record(int(validated[np.argmax(cols[select_on][validated])]))
    return out


def _unique_names(paths: list[str]) -> list[str]:
    names = [os.path.basename(os.path.normpath(p)) or p for p in paths]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if names.count(name) == 1 else f"{name}#{seen[name]}")
    return unique


def plot_accuracy(runs: list[RunRecord]):
    """Figs. 3-5's panels: validation clean and PGD-40 accuracy, raw (dashed) and averaged (solid)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, run in enumerate(runs):
        colour = colours[index % len(colours)]
        epochs = run.epochs_done
        for ax, metric in zip(axes, ("clean", "pgd40")):
            for which, style in (("raw", "--"), ("avg", "-")):
                key = f"val_{which}_{metric}_accuracy"
                if key not in run.columns:
                    continue
                keep = _finite(run.columns[key])
                if keep.any():
                    label = f"{run.name} ({'averaged' if which == 'avg' else 'raw'})"
                    ax.plot(epochs[keep], 100 * run.columns[key][keep], style, color=colour, marker=".", label=label)
    for ax, title in zip(axes, ("validation clean accuracy", "validation robust accuracy (PGD-40)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_schedules(runs: list[RunRecord]):
    """Learning rate and EMA decay per step against epochs (recomputed from each config)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    drawn = False
    for run in runs:
        if not run.epoch_examples:
            continue
        curves = schedule_curves(run.config, run.epoch_examples)
        axes[0].plot(curves["epoch"], curves["learning_rate"], label=run.name)
        axes[1].plot(curves["epoch"], curves["ema_decay"], label=f"{run.name} (τ {run.config['ema_decay']})")
        drawn = True
    axes[0].set_title("learning rate")
    axes[1].set_title("EMA decay min(τ, (1+t)/(10+t))")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(
                0.5,
                0.5,
                "no run with a checkpoint\n(samples per epoch unknown)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    fig.tight_layout()
    return fig


def plot_training(runs: list[RunRecord]):
    """Training loss and the training step's clean/adversarial accuracy per epoch."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, run in enumerate(runs):
        colour = colours[index % len(colours)]
        epochs = run.epochs_done
        if "loss" in run.columns:
            axes[0].plot(epochs, run.columns["loss"], color=colour, marker=".", label=run.name)
        for key, style in (("clean_accuracy", "--"), ("adv_accuracy", "-")):
            if key in run.columns:
                axes[1].plot(
                    epochs,
                    100 * run.columns[key],
                    style,
                    color=colour,
                    marker=".",
                    label=f"{run.name} ({key.split('_')[0]})",
                )
    axes[0].set_title("training loss")
    axes[1].set_title("training accuracy (clean dashed, adversarial solid)")
    axes[1].set_ylabel("accuracy (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _pct(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.2f}%"


def _rows(runs: list[RunRecord], numbers: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = [
        "run",
        "epochs",
        "best epoch",
        "best avg clean",
        "best avg PGD-40",
        "last avg clean",
        "last avg PGD-40",
        "last raw clean",
        "last raw PGD-40",
    ]
    rows = []
    for run, n in zip(runs, numbers):
        best, last = n["best"] or {}, n["last"] or {}
        rows.append(
            [
                run.name,
                f"{n['epochs_logged']}/{n['epochs_configured']}",
                str(best.get("epoch", "—")),
                _pct(best.get("val_avg_clean_accuracy")),
                _pct(best.get("val_avg_pgd40_accuracy")),
                _pct(last.get("val_avg_clean_accuracy")),
                _pct(last.get("val_avg_pgd40_accuracy")),
                _pct(last.get("val_raw_clean_accuracy")),
                _pct(last.get("val_raw_pgd40_accuracy")),
            ]
        )
    return header, rows


def build_report(run_dirs: list[str], out: str, *, overwrite: bool = False) -> dict[str, Any]:
    """Reads `run_dirs`, writes the plots, report.md and report.json into `out`; returns
    {"report": ..., "table": ..., "files": ...}."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    names = _unique_names(list(run_dirs))
    runs = [read_run(path, name) for path, name in zip(run_dirs, names)]
    folder = ReportDir(out, command="report", overwrite=overwrite)
    numbers = [run_numbers(run) for run in runs]
    folder.save_figure("accuracy.png", plot_accuracy(runs))
    folder.save_figure("schedules.png", plot_schedules(runs))
    folder.save_figure("training.png", plot_training(runs))
    header, rows = _rows(runs, numbers)

    lines = [
        "# Training report",
        "",
        "Validation accuracy on the held-out training images (model selection's split, never the test "
        "set); PGD-40 is model selection's attack (margin loss, Adam, Rebuffi et al. 2021 Sec. 6.1). "
        "`best` is the epoch the run's selection metric picked; `avg` the weight average, `raw` the "
        "raw weights.",
        "",
        markdown_table(header, rows),
        "",
        "![validation accuracy](accuracy.png)",
        "",
        "![learning rate and EMA decay](schedules.png)",
        "",
        "![training loss and accuracy](training.png)",
        "",
    ]
    for run, _n in zip(runs, numbers):
        lines += [f"## {run.name}", "", f"Run directory: `{os.path.abspath(run.path)}`", ""]
        if run.summary and run.summary.get("export"):
            lines += [f"Exported model: `{run.summary['export']}`", ""]
        if run.note:
            lines += [f"Note: {run.note}.", ""]
        if run.epoch_examples:
            steps = run.epoch_examples / int(run.config["batch_size"])
            lines += [f"Samples per epoch: {run.epoch_examples} ({steps:g} optimizer steps).", ""]
        lines += ["Config:", "", "```json", json.dumps(run.config, indent=2, sort_keys=True), "```", ""]
    folder.write_text("report.md", "\n".join(lines))
    report = {
        "runs": [
            {
                "name": run.name,
                "path": os.path.abspath(run.path),
                "epoch_examples": run.epoch_examples,
                "note": run.note,
                "config": run.config,
                "summary": run.summary,
                **n,
            }
            for run, n in zip(runs, numbers)
        ],
    }
    folder.write_json("report.json", report)
    folder.finish()
    return {"report": report, "table": text_table(header, rows), "files": [folder.path(f) for f in folder.files]}
