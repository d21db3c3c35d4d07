"""--trust-model on every command that loads a model: `eval`, `audit`, `pseudolabel`, `diversity --extractor`
and `diversity --classifier`, and the Python `evaluate`.

One crafted SavedModel (a 4x4x1-image, 3-class linear classifier) writes a marker file whenever any of its
functions runs. Without --trust-model each command refuses it in one line (exit status 1) and the marker is
never written; with --trust-model the command runs to the end, the marker exists (the model did run), and
the command's report records `"trust_model": true`. Everything is written under `tmp_path`.
"""

import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfrobust.cli import cli
from tfrobust.errors import UserError
from tfrobust.evaluation import evaluate

SPEC = tf.TensorSpec([None, 4, 4, 1], tf.float32, name="images")
WEIGHTS = np.random.default_rng(3).normal(size=(16, 3)).astype(np.float32)


def _save_writing_model(path: str, marker: str) -> str:
    """A SavedModel with `logits`, `features` and serving_default, each of which writes `marker` when it runs."""
    kernel = tf.constant(WEIGHTS)

    class Writer(tf.Module):
        def _features(self, images):
            with tf.control_dependencies([tf.io.write_file(marker, "ran")]):
                return tf.reshape(images, [-1, 16])

        @tf.function(input_signature=[SPEC])
        def features(self, images):
            return self._features(images)

        @tf.function(input_signature=[SPEC])
        def logits(self, images):
            return tf.matmul(self._features(images), kernel)

        @tf.function(input_signature=[SPEC])
        def serve(self, images):
            return {"logits": self.logits(images)}

    module = Writer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


@pytest.fixture
def crafted(tmp_path):
    """(model path, marker path, npz path of 24 labelled 4x4x1 uint8 images of 3 classes)."""
    marker = str(tmp_path / "written.txt")
    model = _save_writing_model(str(tmp_path / "model"), marker)
    images = np.random.default_rng(0).integers(0, 256, (24, 4, 4, 1)).astype(np.uint8)
    npz = str(tmp_path / "data.npz")
    np.savez(npz, image=images, label=np.arange(24) % 3)
    assert not os.path.exists(marker)
    return model, marker, npz


def _commands(model, npz, tmp_path):
    """Each command's arguments (without --trust-model) and the JSON file that records the choice."""
    out = tmp_path / "out"
    data = f"npz:{npz}"
    return {
        "eval": (
            [
                "eval",
                "--model",
                model,
                "--dataset",
                data,
                "--attack",
                "apgd-ce",
                "--batch-size",
                "24",
                "--report",
                str(out / "report.json"),
            ],
            out / "report.json",
        ),
        "audit": (
            [
                "audit",
                "--model",
                model,
                "--out",
                str(out),
                "--dataset",
                data,
                "--split",
                "all",
                "--eps",
                "0.1",
                "--n-examples",
                "8",
                "--checks",
                "landscape",
                "--landscape-images",
                "1",
                "--grid",
                "3",
            ],
            out / "audit.json",
        ),
        "pseudolabel": (
            ["pseudolabel", "--classifier", model, "--input", npz, "--output", str(out)],
            out / "summary.json",
        ),
        "diversity-extractor": (
            [
                "diversity",
                "--out",
                str(out),
                "--dataset",
                data,
                "--test",
                data,
                "--set",
                data,
                "--n",
                "8",
                "--pca-dims",
                "4",
                "--extractor",
                model,
            ],
            out / "diversity.json",
        ),
        "diversity-classifier": (
            [
                "diversity",
                "--out",
                str(out),
                "--dataset",
                data,
                "--test",
                data,
                "--set",
                data,
                "--n",
                "8",
                "--pca-dims",
                "4",
                "--classifier",
                model,
            ],
            out / "diversity.json",
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "audit", "pseudolabel", "diversity-extractor", "diversity-classifier"])
def test_a_model_that_writes_a_file_is_refused_unless_trusted(crafted, tmp_path, command):
    model, marker, npz = crafted
    args, record = _commands(model, npz, tmp_path)[command]

    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1, refused.output
    assert isinstance(refused.exception, SystemExit)
    errors = [line for line in refused.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in refused.output
    assert "uses op WriteFile (file system); pass --trust-model" in errors[0]
    assert not os.path.exists(marker)
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")

    trusted = CliRunner().invoke(cli, [*args, "--trust-model"])
    assert trusted.exit_code == 0, trusted.output
    assert Path(marker).read_text() == "ran"
    assert json.loads(Path(record).read_text())["trust_model"] is True


@pytest.mark.slow
def test_reports_record_an_inspected_model(tmp_path):
    """A model that passes inspection runs without --trust-model, and the report records false."""
    images = np.random.default_rng(0).integers(0, 256, (12, 4, 4, 1)).astype(np.uint8)
    npz = str(tmp_path / "data.npz")
    np.savez(npz, image=images, label=np.arange(12) % 3)
    kernel = tf.constant(WEIGHTS)
    module = tf.Module()
    module.serve = tf.function(lambda x: {"logits": tf.matmul(tf.reshape(x, [-1, 16]), kernel)}, input_signature=[SPEC])
    model = str(tmp_path / "clean")
    tf.saved_model.save(module, model, signatures={"serving_default": module.serve})
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--model",
            model,
            "--dataset",
            f"npz:{npz}",
            "--attack",
            "apgd-ce",
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(Path(tmp_path / "r.json").read_text())["trust_model"] is False
    result = CliRunner().invoke(
        cli, ["pseudolabel", "--classifier", model, "--input", npz, "--output", str(tmp_path / "labelled")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(Path(tmp_path / "labelled" / "summary.json").read_text())["trust_model"] is False


@pytest.mark.slow
def test_python_evaluate_refuses_unless_trusted(crafted):
    model, marker, npz = crafted
    with np.load(npz) as data:
        images, labels = data["image"][:6], data["label"][:6]
    with pytest.raises(
        UserError, match=r"uses op WriteFile \(file system\); pass --trust-model \(Python: trust_model=True\)"
    ):
        evaluate(model, images, labels, attack="apgd-ce", verbose=False)
    assert not os.path.exists(marker)
    evaluation = evaluate(model, images, labels, attack="apgd-ce", verbose=False, trust_model=True)
    assert evaluation.report["trust_model"] is True
    assert Path(marker).read_text() == "ran"


def test_eval_resume_keeps_trust_model_and_checks_the_model_before_running_it(crafted, tmp_path):
    """--resume reuses the saved settings, trust_model included (--trust-model beside it is refused), and
    refuses a model that differs from the one the evaluation started with before that model runs."""
    from tfrobust.evaluation.run import EvalSettings, model_fingerprint
    from tfrobust.evaluation.state import EvalState, state_dir_for

    model, marker, npz = crafted
    report = str(tmp_path / "report.json")
    settings = EvalSettings(model_path=model, attack="apgd-ce", dataset=f"npz:{npz}", report=report, trust_model=True)
    EvalState.create(state_dir_for(report), {**dataclasses.asdict(settings), "model_sha256": "0" * 64})
    result = CliRunner().invoke(cli, ["eval", "--resume", report, "--trust-model"])
    assert result.exit_code == 1 and "give no other options" in result.output
    result = CliRunner().invoke(cli, ["eval", "--resume", report])
    assert result.exit_code == 1 and f"the model at {model} changed since the interrupted evaluation" in result.output
    assert not os.path.exists(marker)  # trusted, but not the model the evaluation started with: never run

    os.remove(os.path.join(state_dir_for(report), "settings.json"))
    os.rmdir(state_dir_for(report))
    EvalState.create(state_dir_for(report), {**dataclasses.asdict(settings), "model_sha256": model_fingerprint(model)})
    result = CliRunner().invoke(cli, ["eval", "--resume", report])
    assert result.exit_code == 0, result.output
    assert json.loads(Path(report).read_text())["trust_model"] is True
    assert Path(marker).read_text() == "ran"
