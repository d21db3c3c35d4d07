"""The command line end to end (train -> export -> eval) and every bad input: one line, non-zero exit."""

import fcntl
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from support import tiny_train_args

from tfrobust.cli import cli


@pytest.fixture(scope="module")
def npz(digits_npz):
    return digits_npz


@pytest.fixture(scope="module")
def trained(npz, tmp_path_factory):
    """One tiny run shared by the tests that need a finished run or an exported model."""
    root = tmp_path_factory.mktemp("run")
    out, export_dir = str(root / "run"), str(root / "saved_models")
    result = CliRunner().invoke(cli, tiny_train_args(npz, out, export_dir))
    assert result.exit_code == 0, result.output
    return {"out": out, "export_dir": export_dir, "output": result.output}


def invoke(args):
    return CliRunner().invoke(cli, args)


def assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_writes_a_complete_run_directory(trained):
    out = trained["out"]
    for name in ("config.json", "checkpoint.npz", "best.npz", "log.csv", "summary.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.path.isdir(os.path.join(out, "tensorboard"))
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["eps"] == pytest.approx(0.1) and config["learning_rate"] == pytest.approx(0.1)  # resolved
    assert config["inner_optimizer"] == "adam"
    # The reference's batch rules by default (4 emulated workers, per-device-batch draws, per-device BN).
    assert (config["aug_repeats"], config["mix_draws"], config["sync_batch_norm"]) == (4, "batch", False)
    rows = open(os.path.join(out, "log.csv")).read().strip().splitlines()
    assert len(rows) == 3 and "val_avg_pgd40_accuracy" in rows[0]
    summary = json.load(open(os.path.join(out, "summary.json")))
    # An npz:PATH dataset names the export by the file's stem, not by its flattened path.
    assert summary["export"].endswith(os.path.join("saved_models", "digits-wrn-10-1-trades", "1"))
    assert 0.0 <= summary["best"]["val_avg_pgd40_accuracy"] <= summary["best"]["val_avg_clean_accuracy"] <= 1.0


def test_export_metadata_and_eval_report(trained, tmp_path):
    summary = json.load(open(os.path.join(trained["out"], "summary.json")))
    model_dir = summary["export"]
    meta = json.load(open(os.path.join(model_dir, "assets.extra", "tfrobust.json")))
    assert meta["norm"] == "linf" and meta["eps"] == pytest.approx(0.1)
    assert meta["input_shape"] == [8, 8, 1] and meta["dataset"]["num_classes"] == 10
    assert meta["training_config"]["model"] == "wrn-10-1"
    report_path = str(tmp_path / "report.json")
    # The base directory (TF Serving's model_base_path) resolves to the newest version.
    result = invoke(["eval", "--model", os.path.dirname(model_dir), "--split", "val", "--report", report_path])
    assert result.exit_code == 0, result.output
    report = json.load(open(report_path))
    assert report["num_examples"] == 64 and report["stages"][0]["attack"] == "pgd40"
    assert report["robust_accuracy"] <= report["clean_accuracy"]
    assert "pgd40" in result.output and "%" in result.output


def test_aa_mt_on_a_model_from_train(trained, tmp_path):
    """The paper's AA+MT cascade through the CLI on an exported `tfrobust train` model, with per-example output."""
    model_dir = json.load(open(os.path.join(trained["out"], "summary.json")))["export"]
    report_path, examples = str(tmp_path / "aamt.json"), str(tmp_path / "aamt.npz")
    result = invoke(
        [
            "eval",
            "--model",
            model_dir,
            "--attack",
            "aa+mt",
            "--split",
            "val",
            "--n-examples",
            "6",
            "--report",
            report_path,
            "--save-examples",
            examples,
        ]
    )
    assert result.exit_code == 0, result.output
    report = json.load(open(report_path))
    assert [s["attack"] for s in report["stages"]] == ["apgd-ce-5x100", "apgd-dlr-5x100", "mt"]
    accuracies = [report["clean_accuracy"]] + [s["robust_accuracy"] for s in report["stages"]]
    assert accuracies == sorted(accuracies, reverse=True)  # each stage only removes points
    with np.load(examples) as data:
        assert data["robust"].mean() == pytest.approx(report["robust_accuracy"])


def test_export_command_writes_a_new_version(trained):
    result = invoke(["export", trained["out"], "--which", "last"])
    assert result.exit_code == 0, result.output
    exported = result.output.strip().splitlines()[-1].split("exported: ")[1]
    assert exported.endswith("2") and os.path.isfile(os.path.join(exported, "saved_model.pb"))


@pytest.mark.parametrize(
    "override, fragments",
    [
        (["--model", "resnet-1000"], ["unknown model", "wrn-28-10"]),
        (["--loss", "mart"], ["unknown loss", "trades"]),
        (["--norm", "l1"], ["unknown norm"]),
        (["--eps", "8"], ["out of range", "8/255"]),
        (["--eps", "-0.1"], ["out of range"]),
        (["--batch-size", "0"], ["--batch-size must be >= 1"]),
        (["--ema-decay", "1.5"], ["--ema-decay"]),
        (["--dataset", "imagenet"], ["unknown dataset", "npz:PATH"]),
        (["--mix-draws", "row"], ["unknown mix draws", "batch", "example"]),
        (["--aug-repeats", "3"], ["--aug-repeats 3 must divide --batch-size 32"]),
        (["--momentum", "1.5"], ["--momentum must be in [0, 1], got 1.5"]),
    ],
)
def test_bad_training_options(npz, tmp_path, override, fragments):
    args = tiny_train_args(npz, str(tmp_path / "run"), str(tmp_path / "sm")) + override
    assert_one_line_error(invoke(args), *fragments)
    assert not os.path.exists(tmp_path / "run" / "checkpoint.npz")


def test_tfds_without_network_names_the_offline_options(tmp_path):
    args = ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "tfds"), "--out", str(tmp_path / "run")]
    assert_one_line_error(invoke(args), "digits", "npz:")


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"images": np.zeros((50, 8, 8, 1), np.uint8), "label": np.zeros(50, np.int64)}, "image"),
        ({"image": np.zeros((50, 8, 8, 1), np.float32), "label": np.zeros(50, np.int64)}, "uint8"),
        ({"image": np.zeros((50, 8, 8), np.uint8), "label": np.zeros(50, np.int64)}, "shape"),
        ({"image": np.zeros((50, 8, 8, 1), np.uint8), "label": np.zeros(49, np.int64)}, "50"),
    ],
)
def test_bad_npz_files(tmp_path, arrays, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    args = tiny_train_args(str(path), str(tmp_path / "run"), str(tmp_path / "sm"))
    assert_one_line_error(invoke(args), fragment)


def test_labels_out_of_range_for_the_classes(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, image=np.zeros((200, 8, 8, 1), np.uint8), label=np.arange(200) % 10 - 1)
    args = tiny_train_args(str(path), str(tmp_path / "run"), str(tmp_path / "sm"))
    assert_one_line_error(invoke(args), "label")


def test_missing_npz(tmp_path):
    args = tiny_train_args(str(tmp_path / "nope.npz"), str(tmp_path / "run"), str(tmp_path / "sm"))
    assert_one_line_error(invoke(args), "nope.npz")


def test_out_directory_holding_another_run_is_not_touched(npz, trained, tmp_path):
    config = os.path.join(trained["out"], "config.json")
    before = open(config).read()
    mtime = os.path.getmtime(config)
    args = tiny_train_args(npz, trained["out"], str(tmp_path / "sm"))
    assert_one_line_error(invoke(args), "holds another run", "--resume")
    assert open(config).read() == before and os.path.getmtime(config) == mtime


def test_out_directory_with_other_files_is_refused(npz, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    assert_one_line_error(invoke(tiny_train_args(npz, str(out), str(tmp_path / "sm"))), "not an empty directory")
    assert (out / "notes.txt").read_text() == "precious"


def test_run_directory_in_use(trained):
    with open(os.path.join(trained["out"], ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            assert_one_line_error(invoke(["train", "--resume", trained["out"]]), "in use")
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def test_unreadable_checkpoint(trained, tmp_path):
    run = tmp_path / "copy"
    run.mkdir()
    (run / "config.json").write_text(open(os.path.join(trained["out"], "config.json")).read())
    (run / "checkpoint.npz").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    assert_one_line_error(invoke(["train", "--resume", str(run)]), "unreadable checkpoint")


def test_resume_refuses_other_options(trained):
    assert_one_line_error(invoke(["train", "--resume", trained["out"], "--epochs", "5"]), "--resume")


def test_resume_of_a_directory_without_run(tmp_path):
    assert_one_line_error(invoke(["train", "--resume", str(tmp_path)]), "not a tfrobust run directory")


def test_eval_of_a_missing_model(tmp_path):
    assert_one_line_error(invoke(["eval", "--model", str(tmp_path / "none")]), "no model")


def test_eval_resume_and_model_options(tmp_path):
    assert_one_line_error(invoke(["eval"]), "--model")
    assert_one_line_error(invoke(["eval", "--resume", str(tmp_path / "r.json"), "--attack", "aa"]), "no other options")
    assert_one_line_error(invoke(["eval", "--resume", str(tmp_path / "r.json")]), "nothing to resume")


def test_unknown_preset():
    result = invoke(["train", "--preset", "nope"])
    assert result.exit_code != 0 and "nope" in result.output


@pytest.mark.parametrize("aug", ["padcrop+autoaugment+cutout+cutmix", "randaugment+mixup", "ricap", "none"])
def test_train_with_each_augmentation_and_the_default_val_size(npz, tmp_path, aug):
    """One short epoch per augmentation through the CLI (issue 4's end-to-end check). Without --val-size on
    400 images each run holds out 80 (a fifth), said in one line; warm-up = run: one warning line. The
    augmentation does not enter either line, so every case checks both."""
    args = tiny_train_args(npz, str(tmp_path / "run"), str(tmp_path / "sm"), epochs=1)
    at = args.index("--val-size")
    del args[at : at + 2]
    at = args.index("--warmup-epochs")
    args[at + 1] = "1"
    args += ["--aug", aug, "--eval-every", "0", "--attack-steps", "1"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    config = json.load(open(tmp_path / "run" / "config.json"))
    assert config["aug"] == aug  # already in canonical order
    import csv

    (row,) = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert np.isfinite(float(row["loss"])) and float(row["loss"]) > 0
    held = [line for line in result.output.splitlines() if line.startswith("validation:")]
    assert held == [
        "validation: 80 of the 400 training images held out (default 1024, at most a fifth of "
        "the training set; --val-size sets it)"
    ]
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--warmup-epochs 1 >= --epochs 1" in warnings[0]
    assert config["val_size"] == 80


def test_unknown_augmentation(npz, tmp_path):
    args = tiny_train_args(npz, str(tmp_path / "run"), str(tmp_path / "sm")) + ["--aug", "padcrop+cutmixx"]
    assert_one_line_error(invoke(args), "cutmixx")


def test_two_mixing_augmentations(npz, tmp_path):
    args = tiny_train_args(npz, str(tmp_path / "run"), str(tmp_path / "sm")) + ["--aug", "cutmix+mixup"]
    assert_one_line_error(invoke(args))


def test_augment_preview_writes_a_png_and_never_overwrites(tmp_path):
    out = tmp_path / "grid.png"
    result = invoke(
        ["augment-preview", "--aug", "padcrop+cutmix", "--dataset", "digits", "--out", str(out), "--n", "4"]
    )
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert_one_line_error(invoke(["augment-preview", "--aug", "cutmix", "--out", str(out)]), "exists")
    assert out.read_bytes() == data


def test_eval_of_an_npz_file_uses_every_image_by_default(trained, npz, tmp_path):
    model_dir = json.load(open(os.path.join(trained["out"], "summary.json")))["export"]
    report_path = str(tmp_path / "all.json")
    result = invoke(
        [
            "eval",
            "--model",
            model_dir,
            "--dataset",
            f"npz:{npz}",
            "--report",
            report_path,
            "--attack",
            "pgd40",
            "--batch-size",
            "200",
        ]
    )
    assert result.exit_code == 0, result.output
    report = json.load(open(report_path))
    assert report["split"] == "all" and report["num_examples"] == 400  # every image of the file
    # A split that needs a test set still names the fix in one line.
    assert_one_line_error(
        invoke(["eval", "--model", model_dir, "--dataset", f"npz:{npz}", "--split", "test"]),
        "no test split",
        "--split all",
    )


@pytest.mark.parametrize(
    "args, status",
    [
        (["train", "--model", "resnet-1000", "--dataset", "digits"], 1),  # a value tfrobust cannot use
        (["eval", "--model", "/nonexistent/model"], 1),
        (["train", "--no-such-option"], 2),  # malformed command line, as click
        (["train", "--epochs", "many"], 2),
        (["eval", "--help"], 0),
        (["--verbose", "eval", "--help"], 0),
    ],
)
def test_exit_status_convention(args, status):
    """README "Exit status": 0 success, 1 input tfrobust cannot use, 2 malformed command line."""
    result = invoke(args)
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
