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
