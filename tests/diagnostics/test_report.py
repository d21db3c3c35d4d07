"""Tests for tfrobust.diagnostics.report (`tfrobust report`): reading run directories, the recomputed
schedules, best/last numbers, plots, and the output folder's overwrite rules.

Most tests use synthetic run directories (config.json from `TrainConfig(...).resolved().to_json()`, a log.csv
as Keras's CSVLogger writes it, a checkpoint.npz with the EMA update count); one uses a real tiny training.
"""

import json
import math
import os

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner
from support import tiny_train_args

from tfrobust.cli import cli
from tfrobust.config import TrainConfig
from tfrobust.diagnostics.report import (
    build_report,
    read_run,
    run_numbers,
    schedule_curves,
)
from tfrobust.errors import UserError
from tfrobust.training.checkpoint import save_arrays

COLUMNS = [
    "epoch",
    "adv_accuracy",
    "ce",
    "clean_accuracy",
    "kl",
    "loss",
    "val_avg_clean_accuracy",
    "val_avg_pgd40_accuracy",
    "val_raw_clean_accuracy",
    "val_raw_pgd40_accuracy",
]


def synthetic_run(
    path, *, epochs=6, eval_every=2, epoch_examples=160, ema_decay=0.99, robust=(0.30, 0.42, 0.38), checkpoint=True
):
    """A run directory as run.py writes it; validation every `eval_every` epochs with the given averaged
    PGD-40 accuracies (raw = averaged - 0.05), NaN on the other epochs."""
    os.makedirs(path)
    config = TrainConfig(
        dataset="digits",
        model="wrn-10-1",
        epochs=epochs,
        batch_size=32,
        warmup_epochs=1,
        eval_every=eval_every,
        ema_decay=ema_decay,
    ).resolved()
    with open(os.path.join(path, "config.json"), "w") as handle:
        handle.write(config.to_json())
    rows, validated = [], iter(robust)
    for epoch in range(epochs):
        if (epoch + 1) % eval_every == 0:
            r = next(validated)
            val = [0.9, r, 0.85, r - 0.05]
        else:
            val = [math.nan] * 4
        rows.append([epoch, 0.3 + 0.01 * epoch, 1.0, 0.5 + 0.02 * epoch, 0.1, 2.0 - 0.1 * epoch, *val])
    with open(os.path.join(path, "log.csv"), "w") as handle:
        handle.write(",".join(COLUMNS) + "\n")
        for row in rows:
            handle.write(",".join("nan" if isinstance(v, float) and math.isnan(v) else str(v) for v in row) + "\n")
    if checkpoint:
        save_arrays(
            os.path.join(path, "checkpoint.npz"),
            {
                "network": {"dense/kernel": np.zeros(3)},
                "averaging": {"dense/kernel": np.zeros(3), "num_updates": np.array(epochs * epoch_examples // 32)},
                "optimizer": {"trace_sgd/iteration": np.array(0)},
            },
            {"epoch": epochs, "epoch_examples": epoch_examples},
        )
    return str(path)


def png_ok(path):
    image = matplotlib.image.imread(path)
    assert os.path.getsize(path) > 0 and image.ndim == 3
    assert image[..., :3].std() > 0.01  # not a single flat colour


def test_read_run_and_numbers(tmp_path):
    run = read_run(synthetic_run(tmp_path / "a"))
    assert run.epoch_examples == 160
    np.testing.assert_array_equal(run.epochs_done, [1, 2, 3, 4, 5, 6])
    numbers = run_numbers(run)
    assert numbers["best"]["epoch"] == 4 and numbers["best"]["val_avg_pgd40_accuracy"] == pytest.approx(0.42)
    assert numbers["last"]["epoch"] == 6 and numbers["last"]["val_raw_pgd40_accuracy"] == pytest.approx(0.33)
    assert numbers["epochs_logged"] == 6 and numbers["epochs_configured"] == 6


def test_schedules_are_recomputed_per_step():
    config = json.loads(
        TrainConfig(dataset="digits", epochs=6, batch_size=32, warmup_epochs=1, ema_decay=0.99, schedule="piecewise")
        .resolved()
        .to_json()
    )
    # 150 samples per epoch at batch 32: 4.6875 steps per epoch, floor(6 * 150 / 32) = 28 steps in all.
    curves = schedule_curves(config, epoch_examples=150)
    assert len(curves["learning_rate"]) == 28
    peak = config["learning_rate"]
    # Warm-up over floor(150 / 32) = 4 steps from lr 0 (optax linear_schedule); then x0.1 from step
    # 4 + floor(2 * 28 / 3) = 22 (optax join_schedules of piecewise_constant_schedule).
    np.testing.assert_allclose(curves["learning_rate"][:4], peak * np.arange(4) / 4, rtol=1e-6)
    np.testing.assert_allclose(curves["learning_rate"][4:22], peak, rtol=1e-6)
    np.testing.assert_allclose(curves["learning_rate"][22:], 0.1 * peak, rtol=1e-6)
    t = np.arange(28)
    np.testing.assert_allclose(curves["ema_decay"], np.minimum(0.99, (1 + t) / (10 + t)), rtol=1e-6)
    assert curves["epoch"][-1] == pytest.approx(28 * 32 / 150)


def test_report_overlays_runs_and_writes_markdown(tmp_path):
    a = synthetic_run(tmp_path / "cutmix")
    b = synthetic_run(tmp_path / "padcrop", robust=(0.2, 0.25, 0.3), ema_decay=0.999, checkpoint=False)
    out = str(tmp_path / "report")
    result = build_report([a, b], out)
    for name in ("accuracy.png", "schedules.png", "training.png"):
        png_ok(os.path.join(out, name))
    markdown = open(os.path.join(out, "report.md")).read()
    assert "| cutmix | 6/6 | 4 |" in markdown and "| padcrop | 6/6 | 6 |" in markdown
    assert "42.00%" in markdown and '"ema_decay": 0.999' in markdown
    assert "no checkpoint.npz" in markdown  # the run whose schedule could not be drawn says so
    data = json.load(open(os.path.join(out, "report.json")))
    assert [r["name"] for r in data["runs"]] == ["cutmix", "padcrop"]
    assert data["runs"][1]["best"]["val_avg_pgd40_accuracy"] == pytest.approx(0.3)
    assert "cutmix" in result["table"]


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="not a tfrobust run directory"):
        build_report([str(tmp_path)], str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")  # nothing written for bad input


def test_existing_report_needs_overwrite_and_user_files_survive(tmp_path):
    run = synthetic_run(tmp_path / "run")
    out = tmp_path / "report"
    build_report([run], str(out))
    with pytest.raises(UserError, match="--overwrite"):
        build_report([run], str(out))
    (out / "notes.txt").write_text("mine")
    build_report([run], str(out), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.md").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="no tfrobust report"):
        build_report([run], str(other), overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"


def test_cli_report_of_a_real_tiny_run(tmp_path, digits_npz):
    npz = digits_npz
    run_dir = str(tmp_path / "run")
    trained = CliRunner().invoke(cli, tiny_train_args(npz, run_dir, str(tmp_path / "saved_models"), epochs=1))
    assert trained.exit_code == 0, trained.output
    out = str(tmp_path / "report")
    result = CliRunner().invoke(cli, ["report", run_dir, "--out", out])
    assert result.exit_code == 0, result.output
    data = json.load(open(os.path.join(out, "report.json")))
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    (run,) = data["runs"]
    # 400 digits (64 of them held out for validation), batch 32: an epoch is 400 samples, 12.5 steps.
    assert run["epoch_examples"] == 400
    assert run["last"] == summary["last"] and run["best"] == summary["best"]
    for name in ("accuracy.png", "schedules.png", "training.png"):
        png_ok(os.path.join(out, name))
    refused = CliRunner().invoke(cli, ["report", run_dir, "--out", out])
    assert refused.exit_code != 0 and "--overwrite" in refused.output
