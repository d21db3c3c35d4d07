"""Tests for the evaluation cascades built from the new attacks (`STAGES`, `CASCADES` in tfrobust.evaluation)
and the checks against a false sense of security (randomised defences, gradient masking, few classes)."""

import dataclasses
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import (
    images,
    linear,
    linear_one_direction,
    worst_l1_margin,
    worst_linf_margin,
)

from tfrobust.attacks.square import Square
from tfrobust.errors import UserError
from tfrobust.evaluation import (
    CASCADES,
    STAGES,
    Evaluator,
    check_random_streams,
    check_randomized,
    check_square,
)


def _dataset(x, y, classes, batch=8):
    return tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, classes))).batch(batch)


def test_cascade_table():
    assert CASCADES["aa"] == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert CASCADES["aa+mt"] == ("apgd-ce-5x100", "apgd-dlr-5x100", "mt")
    for name in ("mt", "apgd-ce", "apgd-t", "apgd-dlr", "fab-t", "square", "pgd40"):
        assert all(stage in STAGES for stage in CASCADES[name])
    for name, factory in STAGES.items():
        attack = factory("linf", 8 / 255)
        assert dataclasses.is_dataclass(attack) and attack == factory("linf", 8 / 255), name
        with pytest.raises(dataclasses.FrozenInstanceError):
            attack.eps = 1.0
    assert STAGES["apgd-ce"]("l2", 0.5).n_iter == 100 and STAGES["apgd-ce-5x100"]("l2", 0.5).n_restarts == 5
    assert STAGES["apgd-t"]("l2", 0.5).n_target_classes == 9 and STAGES["square"]("l2", 0.5).n_queries == 5000
    assert (STAGES["mt"]("linf", 0.1).n_restarts, STAGES["mt"]("linf", 0.1).n_steps) == (10, 200)


def test_l1_stages_are_the_references_l1_standard_version():
    """fra31/auto-attack `autoattack.py` `set_version("standard")` with norm "L1": APGD-CE with 5 restarts
    and APGD-T with 5 target classes, both with `use_largereps`; FAB-T and Square as for Linf and L2."""
    ce, t = STAGES["apgd-ce"]("l1", 12.0), STAGES["apgd-t"]("l1", 12.0)
    assert (ce.norm, ce.loss, ce.n_iter, ce.n_restarts, ce.use_largereps) == ("l1", "ce", 100, 5, True)
    assert (t.loss, t.n_iter, t.n_restarts, t.n_target_classes, t.use_largereps) == ("dlr-targeted", 100, 1, 5, True)
    fab, square = STAGES["fab-t"]("l1", 12.0), STAGES["square"]("l1", 12.0)
    assert (fab.norm, fab.n_target_classes, square.norm, square.n_queries) == ("l1", 9, "l1", 5000)
    # Linf and L2 keep the standard version's 1 restart and 9 targets, without the L1 schedule.
    for norm in ("linf", "l2"):
        assert STAGES["apgd-ce"](norm, 0.1).n_restarts == 1 and not STAGES["apgd-ce"](norm, 0.1).use_largereps
        assert STAGES["apgd-t"](norm, 0.1).n_target_classes == 9
    # The paper's MultiTargeted and model selection's PGD-40 have no L1 version: one clear error.
    for cascade in ("aa+mt", "pgd40", "mt"):
        with pytest.raises(UserError, match="APGD-L1"):
            Evaluator(CASCADES[cascade], norm="l1", eps=12.0)


def test_aa_l1_on_a_linear_model(monkeypatch):
    """`aa` with norm l1 on a linear model whose worst case over the L1 ball ∩ box is known exactly
    (`support.linear_one_direction`, `worst_l1_margin`): sound, and exact away from the threshold. The
    stages keep their L1 configuration with fewer iterations (30 for APGD, 20 for FAB, 300 Square
    queries), which this model needs, to keep the test short."""
    shorter = {
        "apgd-ce": {"n_iter": 30},
        "apgd-t": {"n_iter": 30},
        "fab-t": {"n_iter": 20},
        "square": {"n_queries": 300},
    }
    for name, changes in shorter.items():
        factory = STAGES[name]
        monkeypatch.setitem(
            STAGES, name, lambda norm, eps, f=factory, c=changes: dataclasses.replace(f(norm, eps), **c)
        )
    classes, eps = 5, 1.0
    model_fn, kernel, bias = linear_one_direction(classes, seed=1)
    x = images(16, seed=45)
    y = np.asarray(model_fn(x)).argmax(-1)
    y[0] = (y[0] + 1) % classes  # one clean mistake
    worst = worst_l1_margin(x, y, kernel, bias, eps)
    with pytest.warns(UserWarning, match="4 target classes"):  # 5 classes: 4 targets for APGD-T and FAB-T
        result = Evaluator(CASCADES["aa"], norm="l1", eps=eps).run(
            model_fn, _dataset(x, y, classes), seed=0, keep_adversarial=True
        )
    keep = np.abs(worst) > 0.02
    keep[0] = False
    assert (worst[keep] > 0).any() and (worst[keep] < 0).any()
    np.testing.assert_array_equal(result.robust[keep], worst[keep] < 0)
    assert not result.robust[0]
    broken = ~result.robust & result.clean_correct
    delta = (result.adversarial[broken] - x[broken]).reshape(broken.sum(), -1).astype(np.float64)
    assert np.all(np.abs(delta).sum(1) <= eps * (1 + 1e-6) + 1e-6)


@pytest.mark.parametrize("cascade", ["aa", "aa+mt"])
def test_cascades_on_a_linear_model(cascade):
    classes, eps = 5, 0.06
    model_fn, kernel, bias = linear(classes, seed=41)
    x = images(16, seed=42)
    y = np.asarray(model_fn(x)).argmax(-1)
    y[0] = (y[0] + 1) % classes  # one clean mistake
    worst = worst_linf_margin(x, y, kernel, bias, eps)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = Evaluator(CASCADES[cascade], norm="linf", eps=eps).run(model_fn, _dataset(x, y, classes), seed=0)
    after = result.robust_after_stage
    assert after[0] <= result.clean_accuracy
    assert all(b <= a for a, b in zip(after, after[1:]))  # monotone table
    assert after[-1] == pytest.approx(result.robust_accuracy)
    assert not result.robust[0]
    # Sound and (away from the threshold) exact.
    assert not np.any(~result.robust[1:] & (worst[1:] < 0))
    keep = np.abs(worst) > 0.02
    keep[0] = False
    np.testing.assert_array_equal(result.robust[keep], worst[keep] < 0)
    # Deterministic model, no masking: the only notes say that 5 classes allow 4 targets, not 9.
    assert result.warnings and all("4 target classes" in w for w in result.warnings)
    assert not [r for r in record if "randomised" in str(r.message) or "masking" in str(r.message)]


def test_few_classes_note():
    model_fn, _, _ = linear(3, seed=43)
    x = images(4, seed=44)
    y = np.asarray(model_fn(x)).argmax(-1)
    evaluator = Evaluator(["apgd-t", "fab-t"], norm="linf", eps=0.01)
    with pytest.warns(UserWarning, match="APGD-T skipped"):
        result = evaluator.run(model_fn, _dataset(x, y, 3))
    assert any("FAB-T uses 2 target classes" in w for w in result.warnings)


@pytest.fixture
def noop(monkeypatch):
    """Stage "noop": returns the clean images (breaks nothing)."""
    monkeypatch.setitem(STAGES, "noop", lambda norm, eps: lambda model_fn, x, labels, seed: tf.identity(x))


def test_randomised_defence_warning(noop):
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dropout(0.5), keras.layers.Dense(3)]
    )
    x = images(8, seed=45)
    y = np.zeros(8, np.int64)
    random_fn = lambda images: model(images, training=True)  # noqa: E731  dropout active
    with pytest.warns(UserWarning, match="randomised defence"):
        result = Evaluator(["noop"], norm="linf", eps=0.1).run(random_fn, _dataset(x, y, 3))
    assert any("randomised" in w for w in result.warnings)
    fixed_fn = lambda images: model(images, training=False)  # noqa: E731
    result = Evaluator(["noop"], norm="linf", eps=0.1).run(fixed_fn, _dataset(x, y, 3))
    assert result.warnings == ()
    # Additive noise is caught as well; the check itself on a deterministic function says nothing.
    noisy = tf.function(lambda z: fixed_fn(z) + tf.random.normal([tf.shape(z)[0], 3], stddev=1e-2))
    assert check_randomized(noisy, tf.constant(x), noisy(tf.constant(x)).numpy())
    det = tf.function(fixed_fn)
    assert check_randomized(det, tf.constant(x), det(tf.constant(x)).numpy()) is None


def test_random_draws_that_start_over_in_each_function_are_caught(noop):
    x = tf.constant(images(4, seed=48))
    w = tf.constant(np.random.default_rng(49).normal(size=(16, 3)).astype(np.float32))

    def net(z):
        return tf.reshape(z, [-1, 16]) @ w

    keras.utils.set_random_seed(0)  # a global seed: op-seeded ops start one stream in each function
    op_seeded = lambda z: net(z + 0.1 * tf.random.normal(tf.shape(z)))  # noqa: E731
    assert "tf.random.Generator" in check_random_streams(op_seeded, x)
    generator = tf.random.Generator.from_seed(0)  # one state for every function: independent draws
    assert check_random_streams(lambda z: net(z + 0.1 * generator.normal(tf.shape(z))), x) is None
    dropout = keras.layers.Dropout(0.5)  # Keras draws from a SeedGenerator: a shared state as well
    assert check_random_streams(lambda z: net(dropout(z, training=True)), x) is None
    assert check_random_streams(net, x) is None
    # The evaluation runs the check where it expects a randomised model (an EOT stage).
    y = np.asarray(net(x)).argmax(-1)
    with pytest.warns(UserWarning, match="start over in every new tf.function"):
        result = Evaluator(["noop"], norm="linf", eps=0.1).run(op_seeded, _dataset(x.numpy(), y, 3))
    assert any("tf.random.Generator" in w for w in result.warnings)


def test_square_breaking_more_than_gradient_attacks_warns(monkeypatch):
    # A gradient stage that finds nothing (as on a gradient-masked model), then Square.
    monkeypatch.setitem(STAGES, "apgd-ce", lambda norm, eps: lambda model_fn, x, labels, seed: tf.identity(x))
    monkeypatch.setitem(STAGES, "square", lambda norm, eps: Square(norm, eps, n_queries=300))
    model_fn, _, _ = linear(3, seed=46)
    x = images(8, seed=47)
    y = np.asarray(model_fn(x)).argmax(-1)
    with pytest.warns(UserWarning, match="gradient masking"):
        result = Evaluator(["apgd-ce", "square"], norm="linf", eps=0.5).run(model_fn, _dataset(x, y, 3))
    assert result.robust_after_stage[1] < result.robust_after_stage[0]
    # The rule itself: only a drop after a gradient stage, larger than 0.2 points, counts.
    assert check_square(("apgd-ce", "square"), 0.9, (0.5, 0.49)) is not None
    assert check_square(("apgd-ce", "square"), 0.9, (0.5, 0.499)) is None
    assert check_square(("square",), 0.9, (0.1,)) is None
    assert check_square(("apgd-ce", "apgd-t"), 0.9, (0.5, 0.1)) is None


def test_run_eval_with_the_aa_cascade(tmp_path):
    """What `tfrobust eval --attack aa` runs, end to end on an exported linear model (4 classes). eps is large
    (APGD-CE breaks every point, the later stages have nothing left): this checks the plumbing quickly; the
    stages themselves are tested above and in the attack tests."""
    from tfrobust.evaluation import EvalSettings, run_eval
    from tfrobust.export import export_network

    model = keras.Sequential([keras.Input((4, 4, 1), name="images"), keras.layers.Flatten(), keras.layers.Dense(4)])
    rng = np.random.default_rng(48)
    kernel = rng.normal(size=(16, 4)).astype(np.float32)
    model.layers[-1].set_weights([kernel, (-0.5 * kernel.sum(0)).astype(np.float32)])
    x = np.round(images(8, seed=49) * 255).astype(np.uint8)
    y = np.asarray(model(x.astype(np.float32) / 255.0)).argmax(-1)
    npz = str(tmp_path / "data.npz")
    np.savez(npz, image=x, label=y.astype(np.int64))
    metadata = {"dataset": {"name": f"npz:{npz}"}, "norm": "linf", "eps": 0.3, "training_config": {"val_size": 0}}
    export_network(model, root=str(tmp_path / "saved_models"), name="lin4", metadata=metadata)
    out = run_eval(
        EvalSettings(
            model_path=str(tmp_path / "saved_models" / "lin4"),
            attack="aa",
            split="train",
            batch_size=8,
            report=str(tmp_path / "report.json"),
        )
    )
    report = out["report"]
    assert [s["attack"] for s in report["stages"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    values = [report["clean_accuracy"]] + [s["robust_accuracy"] for s in report["stages"]]
    assert all(b <= a for a, b in zip(values, values[1:]))
    assert report["clean_accuracy"] == 1.0 and report["robust_accuracy"] < 1.0
    assert any("3 target classes" in w for w in report["warnings"])
    assert "apgd-t" in out["table"] and "square" in out["table"]
