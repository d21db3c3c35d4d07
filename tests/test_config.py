"""TrainConfig: presets, precedence, resolution and the JSON round trip of config.json."""

import dataclasses
import datetime
import importlib
import json
import os
import subprocess
import sys

import pytest
from support import REPO as ROOT

from tfrobust.config import PRESETS, TrainConfig, make_config
from tfrobust.errors import UserError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_states_its_evidence(name):
    config = make_config(name, {}).resolved()
    assert config.eps > 0 and config.learning_rate > 0
    preset = PRESETS[name]
    assert preset.description and preset.expected and preset.compute


def test_options_override_the_preset_which_overrides_defaults():
    config = make_config("cifar10-wrn-28-10-cutmix", {"epochs": 3, "model": None})
    assert config.epochs == 3 and config.model == "wrn-28-10" and config.aug == "padcrop+cutmix"
    assert make_config(None, {}).batch_size == 512


def test_resolution_fills_derived_defaults():
    linf = make_config(None, {"batch_size": 1024}).resolved()
    assert linf.eps == pytest.approx(8 / 255) and linf.learning_rate == pytest.approx(0.4)
    assert linf.inner_optimizer == "adam"
    l2 = make_config(None, {"norm": "l2"}).resolved()
    assert l2.eps == pytest.approx(128 / 255) and l2.inner_optimizer == "sign"
    assert make_config(None, {"aug": "cutmix+padcrop"}).resolved().aug == "padcrop+cutmix"


def test_json_round_trip_and_unknown_fields():
    config = make_config("quickstart-digits", {}).resolved()
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    with pytest.raises(UserError, match="unknown config fields"):
        TrainConfig.from_dict({"epochz": 3})


def test_aug_repeats_must_divide_the_batch():
    with pytest.raises(UserError, match="aug-repeats"):
        make_config(None, {"batch_size": 10, "aug_repeats": 4})


GENERATED_PRESETS = sorted(name for name, preset in PRESETS.items() if preset.needs_extra_data)


def test_generated_data_presets_follow_the_papers_recipe():
    assert {"cifar10-wrn-28-10-ddpm-cutmix", "cifar10-wrn-70-16-ddpm-cutmix"} <= set(GENERATED_PRESETS)
    for name in GENERATED_PRESETS:
        config = make_config(name, {"extra_data": ("data/ddpm.npz",)}).resolved()
        assert (config.batch_size, config.epochs, config.schedule) == (1024, 800, "cosine")
        assert config.ema_decay == 0.995 and config.real_ratio == 0.3 and config.extra_label_smoothing == 0.1
        assert config.learning_rate == pytest.approx(0.4)
        preset = PRESETS[name]
        assert "_ddpm.npz" in preset.description and "storage.googleapis.com" in preset.description
        assert preset.expected.startswith("paper:")
    assert "64.20%" in PRESETS["cifar10-wrn-70-16-ddpm-cutmix"].expected
    assert "60.73%" in PRESETS["cifar10-wrn-28-10-ddpm-cutmix"].expected
    assert not PRESETS["cifar10-wrn-28-10-cutmix"].needs_extra_data


def test_extra_data_fields_round_trip_and_validate():
    config = make_config(None, {"extra_data": ("a.npz", "shards/"), "real_ratio": 0.5}).resolved()
    restored = TrainConfig.from_dict(json.loads(config.to_json()))
    assert restored == config and restored.extra_data == ("a.npz", "shards/")
    assert make_config(None, {}).extra_data == ()
    for bad in (
        {"real_ratio": 0.0},
        {"real_ratio": 1.5},
        {"extra_label_smoothing": 1.0},
        {"extra_label_smoothing": -0.1},
    ):
        with pytest.raises(UserError):
            make_config(None, bad)


PAPER_PRESETS = sorted(name for name in PRESETS if name != "quickstart-digits")


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_use_the_reference_batch_rules(name):
    # DeepMind adversarial_robustness/jax/experiment.py: emulated_workers=4 with and without extra data,
    # CutMix drawn per device batch (utils.cutmix split=4), BatchNorm per device.
    config = make_config(name, {"extra_data": ("x.npz",)} if PRESETS[name].needs_extra_data else {})
    assert (config.aug_repeats, config.mix_draws, config.sync_batch_norm) == (4, "batch", False)
    assert {"aug_repeats", "mix_draws", "sync_batch_norm"} <= set(PRESETS[name].overrides)


def test_defaults_are_the_reference_and_options_override_them():
    config = make_config(None, {})
    assert (config.aug_repeats, config.mix_draws, config.sync_batch_norm) == (4, "batch", False)
    config = make_config(
        "cifar10-wrn-28-10-cutmix", {"mix_draws": "example", "sync_batch_norm": True, "aug_repeats": 1}
    )
    assert (config.aug_repeats, config.mix_draws, config.sync_batch_norm) == (1, "example", True)
    # The digits quick start keeps the 64 distinct images per batch its numbers were measured with.
    assert make_config("quickstart-digits", {}).aug_repeats == 1
    with pytest.raises(UserError, match="mix draws"):
        make_config(None, {"mix_draws": "sub-batch"})


def test_run_file_without_the_batch_fields_resumes_as_it_ran():
    values = json.loads(make_config(None, {}).resolved().to_json())
    for field in ("mix_draws", "sync_batch_norm"):
        del values[field]
    config = TrainConfig.from_run_dict(values)
    assert (config.mix_draws, config.sync_batch_norm) == ("example", True)
    full = make_config(None, {}).resolved()
    assert TrainConfig.from_run_dict(json.loads(full.to_json())) == full


@pytest.mark.parametrize(
    "dataset, expected",
    [
        ("npz:/data/cifar_train.npz", "cifar_train-wrn-10-1-trades"),
        ("npz:relative/dir/my images.v2.npz", "my_images.v2-wrn-10-1-trades"),
        ("cifar10", "cifar10-wrn-10-1-trades"),
    ],
)
def test_export_name_of_a_dataset_path_is_the_file_stem(dataset, expected):
    assert TrainConfig(dataset=dataset, model="wrn-10-1").export_name == expected
    assert TrainConfig(dataset=dataset, model="wrn-10-1", name="mine/v1").export_name == "mine_v1"


def test_warmup_as_long_as_the_run_is_one_warning_line():
    assert TrainConfig(epochs=400).warmup_warning() is None  # the default 10 warm-up epochs of 400
    assert TrainConfig(epochs=8, warmup_epochs=0).warmup_warning() is None
    for epochs, warmup in ((8, 10), (10, 10)):
        warning = TrainConfig(epochs=epochs, warmup_epochs=warmup).warmup_warning()
        assert warning is not None and "\n" not in warning
        assert f"--warmup-epochs {warmup} >= --epochs {epochs}" in warning and "peak" in warning
        assert "--warmup-epochs 1" in warning  # a fix the run can take


def test_default_val_size_is_1024_at_most_a_fifth_of_the_training_set():
    from tfrobust.data.datasets import default_val_size, load_dataset

    assert TrainConfig().val_size is None and TrainConfig().validate() is not None
    assert [default_val_size(n) for n in (50_000, 5120, 5119, 1437, 4)] == [1024, 1024, 1023, 287, 0]
    splits = load_dataset("digits", val_size=None)
    assert (len(splits.train), len(splits.val)) == (1437 - 287, 287)
    assert make_config(None, {"val_size": 64}).val_size == 64


# --- The train/benchmark options come from TrainConfig's fields; config imports nothing above it --------


def _train_params(command="train"):
    from tfrobust.cli import cli

    return {param.name: param for param in cli.commands[command].params}


def test_every_field_has_help_and_is_an_option_of_train_and_benchmark():
    import click

    from tfrobust.cli import cli
    from tfrobust.config import option_help

    for command in ("train", "benchmark"):
        params = _train_params(command)
        # --help wide enough that no help text wraps.
        listing = cli.commands[command].get_help(
            click.Context(cli.commands[command], max_content_width=1000, terminal_width=1000)
        )
        for field in dataclasses.fields(TrainConfig):
            assert field.metadata.get("help"), field.name
            flag = "--" + field.name.replace("_", "-")
            param = params[field.name]
            assert param.opts == [flag] and param.default is None, field.name  # None: not given
            assert param.help == option_help(field)
            assert flag in listing and option_help(field) in listing, field.name


def test_help_states_each_default_and_choice():
    from tfrobust.config import option_help, show_default

    for field in dataclasses.fields(TrainConfig):
        text = option_help(field)
        if field.default is not None:
            assert show_default(field.default) in text, field.name
        for name in field.metadata.get("choices", ()):
            assert name in text, (field.name, name)
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    assert option_help(fields["norm"]) == "linf (default) | l2"
    assert option_help(fields["batch_size"]) == "Global batch size [512]."
    assert option_help(fields["weight_decay"]) == "Coupled L2 weight decay on kernels [5e-4]."
    assert option_help(fields["extra_data"]).endswith("repeat the option for several [none].")
    assert option_help(fields["sync_batch_norm"]).endswith("[off: per replica, as the reference].")
    assert option_help(fields["aug"]) == (
        "Augmentations joined by '+': padcrop, autoaugment, randaugment, cutout, "
        "cutmix, mixup, ricap, or none [padcrop]."
    )


@pytest.mark.parametrize(
    "value, text",
    [
        (5e-4, "5e-4"),
        (1e-5, "1e-5"),
        (2.5e-4, "2.5e-4"),
        (6.0, "6"),
        (0.999, "0.999"),
        (0.0, "0"),
        (512, "512"),
        (False, "off"),
        (True, "on"),
        ((), "none"),
        ("padcrop", "padcrop"),
    ],
)
def test_show_default(value, text):
    from tfrobust.config import show_default

    assert show_default(value) == text


def test_options_parse_into_the_fields_types():
    from tfrobust.cli import cli

    args = [
        "--extra-data",
        "a.npz",
        "--extra-data",
        "shards/",
        "--no-sync-batch-norm",
        "--batch-size",
        "8",
        "--momentum",
        "0.5",
        "--aug",
        "cutmix",
    ]
    params = cli.commands["train"].make_context("train", args).params
    assert params["extra_data"] == ("a.npz", "shards/") and params["sync_batch_norm"] is False
    assert params["batch_size"] == 8 and params["momentum"] == 0.5 and params["aug"] == "cutmix"
    # Not given: None (the preset or the default applies), () of a repeatable option included.
    empty = cli.commands["train"].make_context("train", []).params
    assert all(value is None for value in empty.values()), empty
    config = make_config(None, {k: v for k, v in params.items() if k not in ("preset", "out", "resume_dir")})
    assert (config.extra_data, config.sync_batch_norm, config.batch_size, config.momentum) == (
        ("a.npz", "shards/"),
        False,
        8,
        0.5,
    )


def test_config_imports_no_higher_module_nor_tensorflow():
    # A fresh interpreter: the test process has TensorFlow loaded already.
    code = """
import sys
from tfrobust.config import make_config
from tfrobust.errors import UserError
config = make_config("cifar10-wrn-28-10-cutmix", {"aug": "cutmix + padcrop", "batch_size": 1024}).resolved()
assert config.aug == "padcrop+cutmix" and config.learning_rate == 0.4, config
for bad in ({"model": "resnet-1000"}, {"loss": "mart"}, {"schedule": "step"}, {"aug": "cutmixx"}):
    try:
        make_config(None, bad)
    except UserError:
        pass
    else:
        raise AssertionError(bad)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("tfrobust", "tensorflow", "keras")))
"""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    # Only config and the modules below it: the errors and the threat model.
    assert result.stdout.split() == [
        "['tfrobust',",
        "'tfrobust.config',",
        "'tfrobust.errors',",
        "'tfrobust.threat_model']",
    ]


def test_registries_hold_the_names_config_validates():
    from tfrobust import config
    from tfrobust.augment import batch_augmentation
    from tfrobust.augment.registry import AUGMENTATIONS, MIXING, ORDER
    from tfrobust.models.registry import MODELS
    from tfrobust.training.schedules import SCHEDULES
    from tfrobust.training.trainer import LOSSES

    assert tuple(MODELS) == config.MODEL_NAMES
    assert tuple(LOSSES) == config.LOSSES and tuple(SCHEDULES) == config.SCHEDULES
    assert set(AUGMENTATIONS) == set(config.AUG_ORDER) and ORDER == config.AUG_ORDER and MIXING <= set(ORDER)
    assert tuple(batch_augmentation.MIX_DRAWS) == config.MIX_DRAWS


@pytest.mark.parametrize(
    "field, value, module, names",
    [
        ("model", "resnet-1000", "tfrobust.models.registry", "MODELS"),
        ("loss", "mart", "tfrobust.training.trainer", "LOSSES"),
        ("schedule", "step", "tfrobust.training.schedules", "SCHEDULES"),
    ],
)
def test_a_bad_name_lists_the_registrys_names(field, value, module, names):
    registry_names = getattr(importlib.import_module(module), names)
    with pytest.raises(UserError) as error:
        make_config(None, {field: value})
    assert str(error.value) == f"unknown {field} {value!r}; choose from: {', '.join(registry_names)}"


def test_generated_data_preset_needs_extra_data_and_resume_takes_nothing_else():
    from tfrobust.config import check_resume_alone, default_run_dir, new_run_config

    with pytest.raises(
        UserError,
        match="preset cifar10-wrn-28-10-ddpm is a generated-data recipe: give the data with --extra-data PATH",
    ):
        new_run_config("cifar10-wrn-28-10-ddpm", {"extra_data": None})
    assert new_run_config("cifar10-wrn-28-10-ddpm", {"extra_data": ("x.npz",)}).extra_data == ("x.npz",)
    assert new_run_config("cifar10-wrn-28-10-cutmix", {}).aug == "padcrop+cutmix"
    check_resume_alone({"preset": None, "out": None, "epochs": None})
    for given in ({"preset": "quickstart-digits"}, {"out": "runs/x"}, {"epochs": 5}, {"sync_batch_norm": False}):
        with pytest.raises(UserError, match="--resume rebuilds the run from RUN_DIR/config.json"):
            check_resume_alone({"preset": None, "out": None, **given})
    config = TrainConfig(dataset="npz:/data/digits.npz", model="wrn-10-1")
    stamp = datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert default_run_dir(config, stamp) == os.path.join("runs", "digits-wrn-10-1-trades-20240102-030405")
