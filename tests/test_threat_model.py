"""tfrobust.threat_model: the norms, the paper's default radii, the radius checks, and how an evaluation
takes its threat model from the options given and the model's metadata.

The expected values are written out independently: the paper's radii (Rebuffi et al. 2021, abstract:
Linf 8/255, L2 128/255), the L1 radius 12 (Croce & Hein 2021, CIFAR-10) and the ranges (0, 1] (Linf),
(0, 64] (L2) and (0, 3072] (L1, the L1 diameter of a 32x32x3 box) of a radius on [0, 1] images.
"""

import math
import os
import re
import subprocess
import sys

import pytest

from tfrobust import threat_model as tm
from tfrobust.errors import UserError


def test_norms_and_the_papers_default_radii():
    assert tm.NORMS == ("linf", "l2", "l1")
    assert tm.TRAIN_NORMS == ("linf", "l2")  # L1 is evaluated, not trained
    assert tm.DEFAULT_EPS["linf"] == 8 / 255 and tm.DEFAULT_EPS["l2"] == 128 / 255
    assert tm.DEFAULT_EPS["l1"] == 12.0
    assert tm.resolve("linf") == ("linf", 8 / 255)
    assert tm.resolve("l2") == ("l2", 128 / 255)
    assert tm.resolve("l2", 0.25) == ("l2", 0.25)
    assert tm.resolve("l1") == ("l1", 12.0)


@pytest.mark.parametrize("norm", ["l0", "L1", "Linf", "", "inf"])
def test_unknown_norm_is_one_user_error(norm):
    with pytest.raises(UserError, match=r"unknown norm .*choose from: linf, l2, l1"):
        tm.check_norm(norm)
    with pytest.raises(UserError, match="unknown norm"):
        tm.check_eps(norm, 0.1)


@pytest.mark.parametrize(
    "norm, eps, ok",
    [
        ("linf", 8 / 255, True),
        ("linf", 1.0, True),
        ("linf", 1.0 + 1e-9, False),
        ("linf", 0.0, False),
        ("linf", -0.1, False),
        ("linf", math.nan, False),
        ("linf", math.inf, False),
        ("l2", 128 / 255, True),
        ("l2", 1.5, True),
        ("l2", 64.0, True),
        ("l2", 64.5, False),
        ("l2", 0.0, False),
        ("l1", 12.0, True),
        ("l1", 0.5, True),
        ("l1", 3072.0, True),
        ("l1", 3072.5, False),
        ("l1", 0.0, False),
        ("l1", -12.0, False),
        ("l1", math.nan, False),
    ],
)
def test_eps_range_per_norm(norm, eps, ok):
    if ok:
        assert tm.check_eps(norm, eps) == eps
        assert isinstance(tm.check_eps(norm, eps), float)
    else:
        with pytest.raises(UserError, match="out of range") as error:
            tm.check_eps(norm, eps)
        assert "\n" not in str(error.value)


def test_a_linf_radius_in_pixel_units_gets_a_hint():
    with pytest.raises(UserError, match="8/255"):
        tm.check_eps("linf", 8)
    for norm, eps in (("l2", 100), ("l1", 5000)):
        with pytest.raises(UserError) as error:
            tm.check_eps(norm, eps)
        assert "8/255" not in str(error.value)


def test_attack_radius_check_allows_zero():
    assert tm.check_radius(0.0) == 0.0 and tm.check_radius(3.0) == 3.0
    for bad in (-1e-9, math.nan):
        with pytest.raises(UserError, match="non-negative"):
            tm.check_radius(bad)


META = {"dataset": {"name": "cifar10"}, "norm": "l2", "eps": 0.5, "training_config": {"val_size": 7, "seed": 3}}


def test_resolution_from_the_metadata():
    assert tm.resolve_threat_model(META, None, None, None) == ("cifar10", "l2", 0.5, {"val_size": 7, "seed": 3})


def test_explicit_options_win_over_the_metadata():
    # An explicit eps keeps the model's norm.
    assert tm.resolve_threat_model(META, None, None, 0.25)[1:3] == ("l2", 0.25)
    # An explicit norm without eps takes that norm's default: the metadata's eps belongs to its own norm.
    assert tm.resolve_threat_model(META, None, "linf", None)[1:3] == ("linf", 8 / 255)
    assert tm.resolve_threat_model(META, None, "l2", None)[1:3] == ("l2", 128 / 255)
    assert tm.resolve_threat_model(META, "npz:x.npz", "linf", 0.1)[:3] == ("npz:x.npz", "linf", 0.1)


def test_a_model_without_metadata():
    # No metadata at all: the dataset must be given; then Linf at the paper's radius.
    with pytest.raises(UserError, match="no tfrobust metadata"):
        tm.resolve_threat_model({}, None, None, None)
    assert tm.resolve_threat_model({}, "cifar10", None, None) == ("cifar10", "linf", 8 / 255, {})
    assert tm.resolve_threat_model({}, "cifar10", "l2", None)[1:3] == ("l2", 128 / 255)
    assert tm.resolve_threat_model({}, "cifar10", "l1", None)[1:3] == ("l1", 12.0)


def test_resolution_checks_what_it_returns():
    with pytest.raises(UserError, match="out of range"):
        tm.resolve_threat_model({**META, "norm": "linf", "eps": 8.0}, None, None, None)
    with pytest.raises(UserError, match="unknown norm"):
        tm.resolve_threat_model(META, None, "l0", None)
    # An L1 evaluation of an L2 model: L1's own default radius, and its own range.
    assert tm.resolve_threat_model(META, None, "l1", None)[1:3] == ("l1", 12.0)
    with pytest.raises(UserError, match="out of range for l1"):
        tm.resolve_threat_model(META, None, "l1", 4000.0)
    with pytest.raises(UserError, match="out of range"):
        tm.resolve_threat_model(META, None, "linf", 2.0)


def test_one_home():
    """Every module that needs the threat model takes it from tfrobust.threat_model."""
    from tfrobust import config
    from tfrobust.attacks import projection
    from tfrobust.evaluation import resolve_threat_model

    assert config.TRAIN_NORMS is tm.TRAIN_NORMS and config.DEFAULT_EPS is tm.DEFAULT_EPS
    assert projection.check_norm is tm.check_norm and projection.check_eps is tm.check_radius
    assert resolve_threat_model is tm.resolve_threat_model
    definition = re.compile(
        r"^(NORMS|TRAIN_NORMS|DEFAULT_EPS|MAX_EPS) = |^def (check_norm|check_eps|resolve_threat_model)\(", re.MULTILINE
    )
    root = os.path.dirname(tm.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and path != tm.__file__:
                with open(path, encoding="utf-8") as handle:
                    found = definition.search(handle.read())
                assert found is None, f"{path} defines {found.group(0)}"


def test_imports_no_tensorflow():
    code = "import sys, tfrobust.threat_model, tfrobust.config; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(tm.__file__))},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]
