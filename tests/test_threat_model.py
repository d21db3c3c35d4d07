"""tfrobust.threat_model: the norms, the paper's default radii, the radius checks, and how an evaluation
takes its threat model from the options given and the model's metadata.

The expected values are written out independently: the paper's radii (Rebuffi et al. 2021, abstract:
Linf 8/255, L2 128/255) and the ranges (0, 1] (Linf) and (0, 64] (L2) of a radius on [0, 1] images.
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
    assert tm.NORMS == ("linf", "l2")
    assert tm.DEFAULT_EPS["linf"] == 8 / 255 and tm.DEFAULT_EPS["l2"] == 128 / 255
    assert tm.resolve("linf") == ("linf", 8 / 255)
    assert tm.resolve("l2") == ("l2", 128 / 255)
    assert tm.resolve("l2", 0.25) == ("l2", 0.25)


@pytest.mark.parametrize("norm", ["l1", "Linf", "", "inf"])
def test_unknown_norm_is_one_user_error(norm):
    with pytest.raises(UserError, match=r"unknown norm .*choose from: linf, l2"):
        tm.check_norm(norm)
    with pytest.raises(UserError, match="unknown norm"):
        tm.check_eps(norm, 0.1)


@pytest.mark.parametrize("norm, eps, ok", [
    ("linf", 8 / 255, True), ("linf", 1.0, True), ("linf", 1.0 + 1e-9, False), ("linf", 0.0, False),
    ("linf", -0.1, False), ("linf", math.nan, False), ("linf", math.inf, False),
    ("l2", 128 / 255, True), ("l2", 1.5, True), ("l2", 64.0, True), ("l2", 64.5, False), ("l2", 0.0, False),
])
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
    with pytest.raises(UserError) as error:
        tm.check_eps("l2", 100)
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


def test_resolution_checks_what_it_returns():
    with pytest.raises(UserError, match="out of range"):
        tm.resolve_threat_model({**META, "norm": "linf", "eps": 8.0}, None, None, None)
    with pytest.raises(UserError, match="unknown norm"):
        tm.resolve_threat_model(META, None, "l1", None)
    with pytest.raises(UserError, match="out of range"):
        tm.resolve_threat_model(META, None, "linf", 2.0)


def test_one_home():
    """Every module that needs the threat model takes it from tfrobust.threat_model."""
    from tfrobust import config
    from tfrobust.attacks import projection
    from tfrobust.evaluation import resolve_threat_model

    assert config.NORMS is tm.NORMS and config.DEFAULT_EPS is tm.DEFAULT_EPS
    assert projection.check_norm is tm.check_norm and projection.check_eps is tm.check_radius
    assert resolve_threat_model is tm.resolve_threat_model
    definition = re.compile(r"^(NORMS|DEFAULT_EPS) = |^def (check_norm|check_eps|resolve_threat_model)\(", re.MULTILINE)
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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(tm.__file__))})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]
