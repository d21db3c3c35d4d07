"""AutoAttack's versions (`aa`, `aa-plus`, `aa-rand`, custom lists) against the reference's `set_version`,
and what a result records: the reference it follows, eps in 255ths and its warning, the per-stage and
per-example worst case, the RobustBench entry; every version run from Python and from the command line."""

import json
import warnings

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from support import images, linear

from tfrobust.attacks.apgd import APGD
from tfrobust.attacks.fab import FAB, FABTargeted
from tfrobust.attacks.square import Square
from tfrobust.cli import cli
from tfrobust.errors import UserError
from tfrobust.evaluation import (
    CASCADES,
    GRADIENT_STAGES,
    ROBUSTBENCH_FIELDS,
    STAGES,
    autoattack,
    autoattack_version,
    eps_record,
    eps_warning,
    evaluate,
    reference_record,
    resolve_attack,
    robustbench_entry,
)
from tfrobust.evaluation.versions import AUTOATTACK_VERSIONS

# The reference's `AutoAttack.set_version` (fra31/auto-attack, autoattack/autoattack.py), Linf and L2, with the
# constructor's settings it leaves alone (100 iterations; Square p_init 0.8, resc_schedule False), written
# out: (the reference's attack, class, settings). In `run_standard_evaluation` the `fab-t` branch sets
# `fab.n_restarts = 1`, and `fab` is untargeted.
REFERENCE_VERSIONS = {
    "standard": [
        ("apgd-ce", APGD, {"loss": "ce", "n_iter": 100, "n_restarts": 1, "eot_iter": 1}),
        (
            "apgd-t",
            APGD,
            {"loss": "dlr-targeted", "n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "eot_iter": 1},
        ),
        ("fab-t", FABTargeted, {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}),
        ("square", Square, {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8, "rescale_schedule": False}),
    ],
    "plus": [
        ("apgd-ce", APGD, {"loss": "ce", "n_iter": 100, "n_restarts": 5, "eot_iter": 1}),
        ("apgd-dlr", APGD, {"loss": "dlr", "n_iter": 100, "n_restarts": 5, "eot_iter": 1}),
        ("fab", FAB, {"n_iter": 100, "n_restarts": 5}),
        ("square", Square, {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8, "rescale_schedule": False}),
        (
            "apgd-t",
            APGD,
            {"loss": "dlr-targeted", "n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "eot_iter": 1},
        ),
        ("fab-t", FABTargeted, {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}),
    ],
    "rand": [
        ("apgd-ce", APGD, {"loss": "ce", "n_iter": 100, "n_restarts": 1, "eot_iter": 20}),
        ("apgd-dlr", APGD, {"loss": "dlr", "n_iter": 100, "n_restarts": 1, "eot_iter": 20}),
    ],
}


@pytest.mark.parametrize("version", list(REFERENCE_VERSIONS))
@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_each_version_is_the_references_set_version(version, norm, eps):
    stages = CASCADES[AUTOATTACK_VERSIONS[version]]
    assert len(stages) == len(REFERENCE_VERSIONS[version])
    record = reference_record(AUTOATTACK_VERSIONS[version])
    assert record["version"] == version and record["follows"] == f"fra31/auto-attack {version}"
    assert record["attacks_to_run"] == [name for name, _, _ in REFERENCE_VERSIONS[version]]
    for stage, (_, cls, settings) in zip(stages, REFERENCE_VERSIONS[version]):
        attack = STAGES[stage](norm, eps)
        assert type(attack) is cls, stage
        assert (attack.norm, attack.eps) == (norm, eps)
        assert {key: getattr(attack, key) for key in settings} == settings, stage
        assert stage in GRADIENT_STAGES or cls is Square
    assert autoattack_version(AUTOATTACK_VERSIONS[version]) == version


def test_custom_lists_take_the_standard_configuration_unless_named():
    assert resolve_attack("apgd-ce,apgd-dlr,square") == ("apgd-ce", "apgd-dlr", "square")
    assert resolve_attack(" fab , apgd-dlr@plus") == ("fab", "apgd-dlr@plus")
    assert resolve_attack(["square", "apgd-ce"]) == ("square", "apgd-ce")
    assert resolve_attack("fab@plus") == ("fab@plus",)
    assert resolve_attack("aa-rand") == ("apgd-ce@rand", "apgd-dlr@rand")
    # The standard version's settings of the attacks plus and rand configure otherwise.
    assert STAGES["apgd-dlr"]("linf", 0.1).n_restarts == 1 and STAGES["fab"]("linf", 0.1).n_restarts == 1
    assert STAGES["apgd-ce"]("linf", 0.1).eot_iter == 1
    record = reference_record("square,apgd-ce@plus,fab")
    assert record["version"] == "custom" and record["attacks_to_run"] == ["square", "apgd-ce", "fab"]
    assert autoattack_version("aa+mt") is None and "AA+MT" in reference_record("aa+mt")["follows"]
    assert autoattack_version("apgd-ce,mt") is None


@pytest.mark.parametrize(
    "attack, fragment",
    [
        ("apgd-ce,pgd", "'pgd'"),
        ("apgd-ce,,square", "empty"),
        ("aa-standard", "'aa-standard'"),
        (["apgd-ce", "fab-tt"], "'fab-tt'"),
        (3, "3"),
    ],
)
def test_unknown_attacks_are_refused_in_one_line(attack, fragment):
    with pytest.raises(UserError) as error:
        resolve_attack(attack)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_eps_in_255ths_and_the_warning_near_common_values():
    assert eps_record(8 / 255) == {"eps": 8 / 255, "eps_255": 8.0}
    assert eps_record(0.031)["eps_255"] == 7.905
    warning = eps_warning("linf", 0.031)
    assert "8/255" in warning and "0.0313725490" in warning and "1.19%" in warning
    for norm, eps in (
        ("linf", 8 / 255),
        ("linf", float(np.float32(8 / 255))),
        ("linf", 0.3),
        ("l2", 0.5),
        ("l2", 128 / 255),
        ("linf", 0.1),
        ("l2", 0.4),
        ("l1", 12.0),
    ):
        assert eps_warning(norm, eps) is None, (norm, eps)  # equal to a common value, or near none
    assert "128/255" in eps_warning("l2", 0.502) and "0.25" in eps_warning("l2", 0.2499)
    assert "4/255" in eps_warning("linf", 0.0157) and "12" in eps_warning("l1", 11.95)
    assert eps_warning("linf", 0.0309) is not None and eps_warning("linf", 0.0306) is None  # 1.5%, 2.5% away


def _report(**changes):
    report = {
        "attack": "aa",
        "dataset": "cifar10",
        "split": "test",
        "num_examples": 10_000,
        "norm": "linf",
        "eps": 8 / 255,
        "clean_accuracy": 0.88544,
        "robust_accuracy": 0.64251,
    }
    return {**report, **changes}


def test_robustbench_entry_fields():
    # RobustBench's model_info/cifar10/Linf/<Name>.json layout (e.g. Rebuffi2021Fixing_70_16_cutmix_ddpm.json).
    layout = [
        "link",
        "name",
        "authors",
        "additional_data",
        "number_forward_passes",
        "dataset",
        "venue",
        "architecture",
        "eps",
        "clean_acc",
        "reported",
        "autoattack_acc",
        "footnote",
    ]
    assert list(ROBUSTBENCH_FIELDS) == layout
    metadata = {"tfrobust_version": "0.1", "dataset": {"name": "cifar10"}, "training_config": {"model": "wrn-70-16"}}
    entry, about = robustbench_entry(_report(), metadata)
    assert list(entry) == layout
    assert (entry["clean_acc"], entry["autoattack_acc"], entry["eps"]) == ("88.54", "64.25", "8/255")
    assert (entry["dataset"], entry["architecture"]) == ("cifar10", "WideResNet-70-16")
    assert entry["number_forward_passes"] == 1
    assert about["empty_fields"] == ["link", "name", "authors", "additional_data", "venue", "reported", "footnote"]
    assert about["notes"] == []
    # Another attack, fewer images, L2 0.5, a model tfrobust did not export.
    entry, about = robustbench_entry(_report(attack="aa-plus", num_examples=500, norm="l2", eps=0.5), {})
    assert (entry["autoattack_acc"], entry["eps"], entry["architecture"], entry["number_forward_passes"]) == (
        "",
        "0.5",
        "",
        "",
    )
    assert any("--attack aa" in note for note in about["notes"]) and any("500" in note for note in about["notes"])
    entry, about = robustbench_entry(_report(dataset="npz:x.npz", norm="l1", eps=12.0), {"arch": "preact-resnet-18"})
    assert (entry["dataset"], entry["eps"], entry["architecture"]) == ("", "12", "PreActResNet-18")
    assert any("no l1 leaderboard" in note for note in about["notes"])


@pytest.fixture(scope="module")
def linear5():
    classes = 5
    model_fn, _, _ = linear(classes, seed=61)
    x = images(16, seed=62)
    y = np.asarray(model_fn(x)).argmax(-1)
    return model_fn, x, y


@pytest.mark.parametrize("attack", ["aa-plus", "aa-rand"])
def test_versions_run_from_python(linear5, attack, tmp_path):
    model_fn, x, y = linear5
    examples = str(tmp_path / "examples.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the few-classes notes
        evaluation = evaluate(
            model_fn,
            x,
            y,
            attack=attack,
            eps=0.06,
            batch_size=8,
            verbose=False,
            save_examples=examples,
            report_format="robustbench",
        )
    report, stages = evaluation.report, resolve_attack(attack)
    assert [s["attack"] for s in report["stages"]] == list(stages)
    accuracies = [report["clean_accuracy"]] + [s["robust_accuracy"] for s in report["stages"]]
    assert accuracies == sorted(accuracies, reverse=True) and 0 < report["robust_accuracy"] < 1
    # The worst case per example: counts per stage, and in words in the npz.
    counts = report["counts"]
    assert counts["misclassified_clean"] + sum(counts["broken_by_stage"]) + counts["robust"] == len(y)
    assert counts["broken_by_stage"] == [s["broken"] for s in report["stages"]]
    with np.load(examples) as data:
        words = ["robust", "misclassified", *stages]
        np.testing.assert_array_equal(data["worst_case"], np.array(words)[data["broken_at"] + 1])
    assert report["eps_255"] == round(0.06 * 255, 4) and report["seed"] == 0
    eot = [s.get("eot_iter") for s in report["stages"]]
    assert eot == [getattr(STAGES[s]("linf", 0.06), "eot_iter", None) for s in stages]
    assert report["reference"]["version"] == autoattack_version(attack)
    assert evaluation.robustbench["clean_acc"] == str(round(100 * report["clean_accuracy"], 2))


def test_autoattack_versions_and_eot_override(linear5):
    model_fn, x, y = linear5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x_adv = autoattack(
            model_fn, x, y, eps=0.06, version="custom", attacks_to_run=["apgd-dlr", "apgd-ce"], verbose=False
        )
        evaluation = evaluate(model_fn, x, y, attack="aa-rand", eot_iter=2, eps=0.06, batch_size=8, verbose=False)
    broken = np.asarray(model_fn(x_adv)).argmax(-1) != y
    assert 0 < broken.sum() < len(y)
    assert [s["eot_iter"] for s in evaluation.report["stages"]] == [2, 2] and evaluation.report["eot_iter"] == 2
    for bad in ({"version": "plus", "attacks_to_run": ["fab"]}, {"version": "custom"}, {"version": "fast"}):
        with pytest.raises(UserError):
            autoattack(model_fn, x, y, verbose=False, **bad)
    with pytest.raises(UserError, match="eot_iter"):
        evaluate(model_fn, x, y, attack="aa-rand", eot_iter=0, verbose=False)
    with pytest.raises(UserError, match="report format"):
        evaluate(model_fn, x, y, report_format="csv", verbose=False)


def test_a_randomised_model_is_sent_to_aa_rand(tmp_path):
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dropout(0.5), keras.layers.Dense(3)]
    )
    x = images(8, seed=63)
    y = np.zeros(8, np.int64)

    def noisy(z):
        return model(z, training=True)

    with pytest.warns(UserWarning, match="--attack aa-rand"):
        evaluate(noisy, x, y, attack="apgd-ce", eps=0.01, verbose=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        evaluation = evaluate(noisy, x, y, attack="aa-rand", eot_iter=2, eps=0.01, verbose=False)
    assert not [r for r in record if "randomised" in str(r.message)]
    assert not [w for w in evaluation.report["warnings"] if "randomised" in w]


def test_the_eps_warning_leads_the_report(linear5):
    model_fn, x, y = linear5
    with pytest.warns(UserWarning, match="8/255"):
        evaluation = evaluate(model_fn, x, y, attack="apgd-ce", eps=0.031, verbose=False)
    assert "8/255" in evaluation.report["warnings"][0]
    assert evaluation.report["eps"] == 0.031 and evaluation.report["eps_255"] == 7.905


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 4-class linear model exported as `tfrobust train` exports, with an npz of its correctly classified
    images."""
    from tfrobust.export import export_network

    root = tmp_path_factory.mktemp("versions")
    model = keras.Sequential([keras.Input((4, 4, 1), name="images"), keras.layers.Flatten(), keras.layers.Dense(4)])
    rng = np.random.default_rng(64)
    kernel = rng.normal(size=(16, 4)).astype(np.float32)
    model.layers[-1].set_weights([kernel, (-0.5 * kernel.sum(0)).astype(np.float32)])
    x = np.round(images(8, seed=65) * 255).astype(np.uint8)
    y = np.asarray(model(x.astype(np.float32) / 255.0)).argmax(-1)
    npz = str(root / "data.npz")
    np.savez(npz, image=x, label=y.astype(np.int64))
    metadata = {"dataset": {"name": f"npz:{npz}"}, "norm": "linf", "eps": 0.3, "training_config": {"val_size": 0}}
    export_network(model, root=str(root / "saved_models"), name="lin4", metadata=metadata)
    return str(root / "saved_models" / "lin4")


# The command line and `evaluate` share `evaluate_arrays` (test_versions_run_from_python runs each version):
# here the command line's own parsing of a version name and of a custom list.
@pytest.mark.parametrize("attack", ["aa-rand", "apgd-ce,fab,square"])
def test_versions_run_from_the_command_line(exported, attack, tmp_path):
    """eps 0.6 breaks every point in the first stage: the command line's plumbing, quickly (the stages
    themselves run in `test_versions_run_from_python`)."""
    report_path = str(tmp_path / "report.json")
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--model",
            exported,
            "--attack",
            attack,
            "--eot-iter",
            "2",
            "--eps",
            "0.6",
            "--batch-size",
            "8",
            "--report",
            report_path,
            "--format",
            "robustbench",
        ],
    )
    assert result.exit_code == 0, result.output
    with open(report_path) as handle:
        report = json.load(handle)
    assert [s["attack"] for s in report["stages"]] == list(resolve_attack(attack))
    assert report["reference"]["version"] == autoattack_version(attack) and report["eot_iter"] == 2
    assert all(s["eot_iter"] == 2 for s in report["stages"] if s["attack"].startswith("apgd"))
    assert report["robust_accuracy"] == 0.0 and report["eps_255"] == 153.0
    with open(tmp_path / "report.robustbench.json") as handle:
        entry = json.load(handle)
    assert list(entry) == list(ROBUSTBENCH_FIELDS) and entry["clean_acc"] == "100.0" and entry["eps"] == "0.6"
    assert report["robustbench"]["entry"].endswith("report.robustbench.json")
    assert "RobustBench entry:" in result.output and "note:" in result.output


def test_the_command_line_refuses_unknown_attacks_and_eot(exported, tmp_path):
    for args, fragment in (
        (["--attack", "apgd-ce,pgd"], "'pgd'"),
        (["--eot-iter", "0"], "--eot-iter"),
        (["--format", "csv"], "csv"),
    ):
        result = CliRunner().invoke(cli, ["eval", "--model", exported, "--report", str(tmp_path / "r.json"), *args])
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert fragment in result.output
