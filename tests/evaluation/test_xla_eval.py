"""Evaluation under XLA (`Evaluator(jit_compile=True)`, docs/xla.md "Evaluation under XLA"): each attack
compiles once at a fixed batch shape, padded rows and masked (fixed-shape) runs change no other row's
result, and the success sets equal the plain graph's (the float32 kernels of XLA's CPU backend round
differently, so the adversarial examples agree within float tolerance)."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.attacks import common, rng
from tfrobust.attacks.apgd import APGD
from tfrobust.attacks.fab import FABTargeted
from tfrobust.attacks.square import Square
from tfrobust.errors import UserError
from tfrobust.evaluation import STAGES, Evaluator, check_options, resolve_jit_compile
from tfrobust.evaluation.engine import pad_rows

CLASSES, N, BATCH = 10, 20, 8  # batches of 8, 8 and 4 points: the last one is padded under XLA
SEED = tf.constant([3, 4], tf.int64)
EPS = {"linf": 4 / 255, "l2": 0.15}
# The cascade's attacks with fewer iterations (the same code paths, a test's runtime).
FAST = {
    "apgd-ce": lambda norm, eps: APGD(norm, eps, "ce", n_iter=20),
    "apgd-t": lambda norm, eps: APGD(norm, eps, "dlr-targeted", n_iter=10, n_target_classes=3),
    "fab-t": lambda norm, eps: FABTargeted(norm, eps, n_iter=10, n_target_classes=3),
    "square": lambda norm, eps: Square(norm, eps, n_queries=60),
    "pgd40": STAGES["pgd40"],
}


def _model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES),
        ]
    )
    return lambda images: tf.cast(net(images, training=False), tf.float32)


MODEL_FN = _model()


def _data():
    x = np.random.default_rng(0).uniform(size=(N, 6, 6, 3)).astype(np.float32)
    y = MODEL_FN(x).numpy().argmax(-1)
    y[[2, 13]] = (y[[2, 13]] + 1) % CLASSES  # two clean mistakes, never attacked
    return x, np.eye(CLASSES, dtype=np.float32)[y]


X, ONEHOT = _data()


def test_partition_and_rank_match_boolean_mask():
    mask = np.random.default_rng(1).uniform(size=13) < 0.4
    values = np.arange(13) * 10
    order, count = common.partition(tf.constant(mask))
    order = order.numpy()
    assert int(count) == mask.sum() and sorted(order) == list(range(13))
    np.testing.assert_array_equal(values[order][: mask.sum()], values[mask])  # survivors first, in order
    np.testing.assert_array_equal(values[order][mask.sum() :], values[~mask])  # then the others, in order
    ranks = common.rank(tf.constant(mask)).numpy()
    np.testing.assert_array_equal(ranks[mask], np.arange(mask.sum()))


def test_philox_draws_of_a_larger_batch_begin_with_the_smaller_batchs():
    # What makes fixed-shape runs draw what the shrinking runs draw, with and without XLA.
    # The Philox words and the uniform draws made from them are exact; the normal draws go through log
    # and cos, whose vectorised kernels round the last elements of a tensor their own way (1 ulp).
    def draws(rows):
        return [
            rng.uniform_bits([rows, 5, 3], SEED),
            rng.uniform([rows, 5, 3], SEED),
            rng.uniform([rows, 1, 1, 3], SEED, -1.0, 1.0),
            rng.normal([rows, 7], SEED),
        ]

    small = draws(3)
    xla = tf.function(lambda: draws(8), jit_compile=True, autograph=False)()
    for k, (s, big, compiled) in enumerate(zip(small, draws(8), xla)):
        if k < 3:
            np.testing.assert_array_equal(big.numpy()[:3], s.numpy())
            np.testing.assert_array_equal(compiled.numpy(), big.numpy())
        else:
            np.testing.assert_allclose(big.numpy()[:3], s.numpy(), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(compiled.numpy(), big.numpy(), rtol=1e-6, atol=1e-6)


class _Recording:
    """A fake single run: breaks the rows whose value (column 0) is in `breaks[c]` on run c and records
    the rows it is given (all of them, and the live ones)."""

    def __init__(self, breaks):
        self.breaks, self.calls = breaks, []

    def __call__(self, xs, ys, target, restart, seed, live=None):
        rows = xs.numpy()[:, 0].astype(int)
        live = np.ones(len(rows), bool) if live is None else live.numpy()
        self.calls.append((rows[live].tolist(), None if target is None else target.numpy()[live].tolist()))
        broken = tf.constant([row in self.breaks[len(self.calls) - 1] for row in rows])
        return xs + 100.0 * len(self.calls), broken


def test_run_targets_with_fixed_shapes_runs_the_same_rows_in_the_same_order():
    x = tf.constant(np.repeat(np.arange(6, dtype=np.float32)[:, None], 2, axis=1))
    y = tf.zeros([6], tf.int32)
    robust = tf.constant([False, True, True, True, True, True])
    targets = tf.constant([[10 + i, 20 + i] for i in range(6)], tf.int32)
    # Row 0 (never attacked) would be "broken" by every run: only live rows may count.
    breaks = [{0, 1}, {0, 2, 3}, {0}, {0, 4}]
    outputs, calls = [], []
    for fixed in (False, True):
        run = _Recording(breaks)
        outputs.append(
            common.run_targets(run, x, y, robust, SEED, n_restarts=2, targets=targets, fixed_shape=fixed).numpy()
        )
        calls.append(run.calls)
    assert calls[0] == calls[1]
    assert calls[1][0] == ([1, 2, 3, 4, 5], [11, 12, 13, 14, 15]) and calls[1][2] == ([4, 5], [24, 25])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[1][:, 0], [0, 101, 202, 203, 404, 5])


def test_fixed_shape_attacks_on_a_padded_batch_equal_the_attacks_on_the_batch():
    """Padding rows (zero images, class 0) and masking the rows that leave a run change no real row's
    result: fixed-shape attacks on 5 real + 3 padded rows against the default attacks on the 5 rows, in
    plain graphs (the same kernels: the same adversarial examples to float32 rounding of the model's
    batch-size-dependent kernels). The attacks whose runs drop points: APGD's and FAB's early exits,
    Square's per-point draws (APGD-T runs APGD's code; the L2 paths: the XLA evaluation test below)."""
    norm = "linf"
    real = slice(3, 8)
    x, y = X[real], ONEHOT[real]
    xp, yp = pad_rows(x, BATCH), pad_rows(y, BATCH, onehot=True)
    assert xp.shape == (BATCH, 6, 6, 3) and (xp[5:] == 0).all() and (yp[5:].argmax(-1) == 0).all()
    for name in ("apgd-ce", "fab-t", "square"):
        attack = FAST[name](norm, EPS[norm])
        fixed = dataclasses.replace(attack, fixed_shape=True) if hasattr(attack, "fixed_shape") else attack
        plain = tf.function(lambda a, b, s, attack=attack: attack(MODEL_FN, a, b, s))(x, y, SEED).numpy()
        padded = tf.function(lambda a, b, s, attack=fixed: attack(MODEL_FN, a, b, s))(xp, yp, SEED).numpy()
        np.testing.assert_allclose(padded[:5], plain, atol=1e-5, err_msg=name)


def _tracing_counts(evaluator):
    ((predict, attacks),) = evaluator._compiled.values()
    return predict.experimental_get_tracing_count(), [f.experimental_get_tracing_count() for f in attacks]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_xla_evaluation_compiles_each_attack_once_and_breaks_the_same_points(norm, monkeypatch):
    for name, make in FAST.items():
        monkeypatch.setitem(STAGES, name, make)
    stages = ["apgd-ce", "apgd-t", "fab-t", "square", "pgd40"]
    dataset = tf.data.Dataset.from_tensor_slices((X, ONEHOT)).batch(BATCH)
    results = {}
    for jit in (False, True):
        evaluator = Evaluator(stages, norm=norm, eps=EPS[norm], jit_compile=jit)
        results[jit] = evaluator.run(MODEL_FN, dataset, seed=5, keep_adversarial=True)
        if jit:
            # A run whose last batch is partial and whose survivors shrink stage by stage: one trace (so one
            # XLA compilation, the input shape being fixed) per function.
            assert _tracing_counts(evaluator) == (1, [1] * len(stages))
    graph, xla = results[False], results[True]
    assert 0 < graph.robust.sum() < graph.clean_correct.sum()  # some points broken, some robust
    np.testing.assert_array_equal(xla.clean_correct, graph.clean_correct)
    np.testing.assert_array_equal(xla.broken_at, graph.broken_at)
    np.testing.assert_allclose(xla.adversarial, graph.adversarial, atol=1e-5)


def test_jit_compile_must_be_a_bool():
    with pytest.raises(UserError, match="jit_compile must be True or False"):
        Evaluator(["pgd40"], norm="linf", eps=0.1, jit_compile="on")
    for attack in (APGD("linf", 0.1), FABTargeted("linf", 0.1), Square("linf", 0.1)):
        with pytest.raises(UserError, match="fixed_shape must be True or False"):
            dataclasses.replace(attack, fixed_shape=1)


def test_resolve_jit_compile_auto_follows_the_accelerator():
    accelerator = any(d.device_type in ("GPU", "TPU") for d in tf.config.list_logical_devices())
    assert resolve_jit_compile("auto") is accelerator
    assert resolve_jit_compile("on") is True and resolve_jit_compile(True) is True
    assert resolve_jit_compile("off") is False and resolve_jit_compile(False) is False
    with pytest.raises(UserError, match="jit_compile must be one of auto, on, off"):
        resolve_jit_compile("yes")
    with pytest.raises(UserError, match="--jit-compile must be one of auto, on, off"):
        check_options(attack="pgd40", batch_size=8, jit_compile="yes", flag=lambda n: "--" + n.replace("_", "-"))


def test_model_selection_follows_the_training_steps_xla_setting():
    from tfrobust.training.callbacks import ModelSelection, WeightAveraging
    from tfrobust.training.trainer import AdversarialTrainer

    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Flatten(), keras.layers.Dense(CLASSES)])
    trainer = AdversarialTrainer(network, eps=4 / 255)
    held_out = tf.data.Dataset.from_tensor_slices((X[:10], ONEHOT[:10])).batch(BATCH)  # batches of 8 and 2
    accelerator = resolve_jit_compile("auto")
    for jit in (False, True):
        trainer.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        selection = ModelSelection(WeightAveraging(network), validation_data=held_out)
        selection.set_model(trainer)
        # Under XLA where the step is and an accelerator is present; never on a CPU (XLA's CPU backend is slower).
        assert selection._resolved_jit(trainer) is (jit and accelerator)
    selection = ModelSelection(WeightAveraging(network), validation_data=held_out, jit_compile=True)
    selection.set_model(trainer)
    measured = selection.evaluate(network)  # PGD-40 compiled, the batch of 2 padded
    assert selection._evaluator.jit_compile is True and 0.0 <= measured["robust_accuracy"] <= 1.0
    graph = ModelSelection(WeightAveraging(network), validation_data=held_out, jit_compile=False)
    graph.set_model(trainer)
    assert graph.evaluate(network) == measured
    assert graph._evaluator.jit_compile is False
    with pytest.raises(UserError, match="jit_compile must be None, True or False"):
        ModelSelection(WeightAveraging(network), validation_data=held_out, jit_compile="on")


def test_exported_attack_programs_run_through_jax_as_tfrobust_eval_runs_them(tmp_path, monkeypatch):
    """benchmarks/xla_export_attack.py + xla_run_attack.py: the HLO of an evaluation stage, run by JAX's XLA
    client, gives TensorFlow's candidates, and the runner's cascade gives `Evaluator(jit_compile=True)`'s
    verdicts point by point (seeds, padding, verification)."""
    pytest.importorskip("jax")  # the [test] extra installs it; the runner needs nothing else
    import sys

    from support import REPO, randomize_weights

    from tfrobust.evaluation.engine import keras_logits_fn
    from tfrobust.importer import reference_state_dict
    from tfrobust.models.registry import build_model

    sys.path.insert(0, f"{REPO}/benchmarks")
    import xla_export_attack
    import xla_run_attack

    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    network = randomize_weights(build_model("wrn-10-1", input_shape=(32, 32, 3), num_classes=10, mean=mean, std=std))
    images = np.random.default_rng(0).uniform(0.0, 1.0, (12, 32, 32, 3)).astype(np.float32)
    labels = network(images, training=False).numpy().argmax(-1)  # every point starts correct
    arch = dict(depth=10, width=1, num_classes=10, mean=mean, std=std, activation="swish")
    weights = {f"w/{k}": v for k, v in reference_state_dict(network, "wrn-10-1").items()}
    bundle = str(tmp_path / "bundle.npz")
    np.savez(bundle, image=images, label=labels, arch=np.array(json.dumps(arch)), **weights)

    prefix, eps, iterations = str(tmp_path / "xla" / "aa"), 5 / 255, 3
    xla_export_attack.main(
        ["--bundle", bundle, "--eps", "5", "--attack", "apgd-t", "--batch-size", "8"]
        + ["--iterations", str(iterations), "--values", "--out", prefix]
    )
    spec, programs, arrays = xla_run_attack.load(prefix, "highest")
    checked = xla_run_attack.check(spec, programs, arrays, tolerance=1e-5)
    assert checked["passed"], checked
    result = xla_run_attack.evaluate(spec, programs, images, labels)
    assert result["clean_accuracy"] == 1.0 and result["stages"][0]["attacked"] == 12

    fast = xla_export_attack.stage_attack("apgd-t", "linf", eps, iterations)
    monkeypatch.setitem(STAGES, "apgd-t", lambda norm, eps: fast)
    data = tf.data.Dataset.from_tensor_slices((images, np.eye(10, dtype=np.float32)[labels])).batch(8)
    expected = Evaluator(["apgd-t"], norm="linf", eps=eps, jit_compile=True).run(keras_logits_fn(network), data)
    assert result["robust"] == expected.robust.tolist()
    assert 0 < sum(result["robust"]) < 12  # some points broken, some not: the comparison decides something
