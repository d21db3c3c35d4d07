"""TrainConfig: presets, precedence, resolution and the JSON round trip of config.json."""

import json

import pytest

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
    for bad in ({"real_ratio": 0.0}, {"real_ratio": 1.5}, {"extra_label_smoothing": 1.0},
                {"extra_label_smoothing": -0.1}):
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
    config = make_config("cifar10-wrn-28-10-cutmix", {"mix_draws": "example", "sync_batch_norm": True,
                                                      "aug_repeats": 1})
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
