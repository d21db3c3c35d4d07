"""examples/evaluate_any_model.py runs as its docstring says: `--tiny` end to end, and on a user's files."""

import json
import os
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
from support import REPO as ROOT

SCRIPT = os.path.join(ROOT, "examples", "evaluate_any_model.py")


def run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )


def test_tiny_trains_exports_and_evaluates_with_autoattack(tmp_path):
    result = run("--tiny", "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    export = os.path.join(str(tmp_path), "saved_models", "digits-cnn", "1")
    assert f"exported: {export}" in out
    report_path = re.search(r"^report: (.+)$", out, re.MULTILINE).group(1)
    with open(report_path) as handle:
        report = json.load(handle)
    assert report["model"] == export and report["num_examples"] == 64
    assert [s["attack"] for s in report["stages"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert (report["norm"], report["eps"]) == ("linf", 8 / 255)  # the export's metadata
    assert 0.0 <= report["robust_accuracy"] <= report["clean_accuracy"] and report["clean_accuracy"] > 0.8
    keras_accuracy, robust = map(
        float,
        re.search(r"adversarial images: ([\d.]+)% accuracy \(robust accuracy of the export: ([\d.]+)%\)", out).groups(),
    )
    assert keras_accuracy == robust == round(100 * report["robust_accuracy"], 2)


def test_a_users_model_and_npz(tmp_path, monkeypatch, capsys):
    import keras

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    model.save(tmp_path / "user.keras")
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "data.npz", image=rng.integers(0, 256, (10, 4, 4, 1)).astype(np.uint8), label=rng.integers(0, 3, 10)
    )
    result = run(
        "--model",
        str(tmp_path / "user.keras"),
        "--data",
        str(tmp_path / "data.npz"),
        "--attack",
        "pgd40",
        "--eps",
        "0.05",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "n=10  linf eps=0.05" in result.stdout and "pgd40" in result.stdout
    # The refusal runs the script as `python` does (`__name__ == "__main__"`, its exit status from
    # sys.exit) in this process: a second interpreter would only import TensorFlow again.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        [SCRIPT, "--model", str(tmp_path / "user.keras"), "--data", str(tmp_path / "data.npz"), "--eps", "8"],
    )
    with pytest.raises(SystemExit) as bad:
        runpy.run_path(SCRIPT, run_name="__main__")
    assert bad.value.code == 1 and capsys.readouterr().err.strip().splitlines()[-1].startswith("Error: --eps 8")
