"""End to end on the command line: generate (Gaussian) -> pseudolabel -> train --extra-data; bad input writes nothing."""

from __future__ import annotations

import csv
import json
import os

import keras
import numpy as np
from click.testing import CliRunner
from support import tiny_train_args

from tfrobust.cli import cli


def _invoke(args):
    return CliRunner().invoke(cli, args)


def _one_line_error(result, fragment):
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and fragment in lines[0], result.output


def test_generate_pseudolabel_train_with_extra_data(tmp_path, digits_npz):
    npz = digits_npz
    generated = str(tmp_path / "generated")
    result = _invoke(
        [
            "generate",
            "--generator",
            "gaussian",
            "--dataset",
            f"npz:{npz}",
            "--n",
            "300",
            "--output",
            generated,
            "--shard-size",
            "100",
            "--val-size",
            "64",
        ]
    )
    assert result.exit_code == 0, result.output
    assert sorted(f for f in os.listdir(generated) if f.endswith(".npz")) == [f"shard-0000{i}.npz" for i in range(3)]

    # A (non-robust) classifier with random weights stands in for `tfrobust train --loss standard`.
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.layers[-1].set_weights(
        [np.random.default_rng(0).normal(0, 1, (64, 10)).astype(np.float32), np.zeros(10, np.float32)]
    )
    classifier = str(tmp_path / "classifier.keras")
    model.save(classifier)
    labelled = str(tmp_path / "labelled")
    result = _invoke(
        [
            "pseudolabel",
            "--classifier",
            classifier,
            "--input",
            generated,
            "--output",
            labelled,
            "--top-k-per-class",
            "20",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "threshold" in result.output
    summary = json.load(open(os.path.join(labelled, "summary.json")))
    assert summary["scored"] == 300 and all(row["kept"] <= 20 for row in summary["per_class"].values())
    # Existing output with other settings: refused, nothing replaced.
    result = _invoke(
        [
            "pseudolabel",
            "--classifier",
            classifier,
            "--input",
            generated,
            "--output",
            labelled,
            "--top-k-per-class",
            "10",
        ]
    )
    _one_line_error(result, "other settings")

    out, export_dir = str(tmp_path / "run"), str(tmp_path / "saved_models")
    result = _invoke(
        tiny_train_args(npz, out, export_dir, epochs=1) + ["--extra-data", labelled, "--real-ratio", "0.5"]
    )
    assert result.exit_code == 0, result.output
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["extra_data"] == [labelled] and config["real_ratio"] == 0.5 and config["extra_label_smoothing"] == 0.1
    rows = list(csv.DictReader(open(os.path.join(out, "log.csv"))))
    # An epoch is the 400 original images (64 held out for validation) / 32: floor(12.5) = 12 steps of 16
    # original + 16 generated.
    assert (
        len(rows) == 1
        and int(float(rows[0]["real_samples"])) == 192
        and int(float(rows[0]["generated_samples"])) == 192
    )


def test_bad_extra_data_fails_before_anything_is_written(tmp_path, digits_npz):
    npz = digits_npz
    np.savez(tmp_path / "rgb.npz", image=np.zeros((20, 8, 8, 3), np.uint8), label=np.zeros(20, np.int64))
    np.savez(tmp_path / "raw.npz", image=np.zeros((20, 8, 8, 1), np.uint8))
    out = str(tmp_path / "run")
    for path, fragment in (
        (tmp_path / "rgb.npz", "3 channels"),
        (tmp_path / "raw.npz", "tfrobust pseudolabel"),
        (tmp_path / "none.npz", "not found"),
    ):
        result = _invoke(tiny_train_args(npz, out, str(tmp_path / "sm")) + ["--extra-data", str(path)])
        _one_line_error(result, fragment)
        assert not os.path.exists(out)
    result = _invoke(
        tiny_train_args(npz, out, str(tmp_path / "sm"))
        + ["--extra-data", str(tmp_path / "raw.npz"), "--real-ratio", "1.5"]
    )
    _one_line_error(result, "--real-ratio")
    result = _invoke(["train", "--preset", "cifar10-wrn-28-10-ddpm", "--out", out])
    _one_line_error(result, "--extra-data")
    assert not os.path.exists(out)
