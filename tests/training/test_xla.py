"""XLA: the jit-compiled TRADES step equals the graph step, compiles once per run, and its HLO runs in JAX.

The HLO test is the CPU half of the GPU measurement (benchmarks/xla_export.py -> benchmarks/xla_run.py):
the program that the GPU machine times is the one checked here against TensorFlow's own step.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import REPO

from tfrobust.attacks import rng
from tfrobust.attacks.pgd import trades_attack
from tfrobust.config import TrainConfig, make_config
from tfrobust.errors import UserError
from tfrobust.models.registry import build_model
from tfrobust.training.distribute import resolve_jit_compile
from tfrobust.training.trainer import AdversarialTrainer

sys.path.insert(0, os.path.join(REPO, "benchmarks"))

SEEDS = [[0, 0], [0, 7], [2**62, -(2**62)], [-1, -1], [123456789012, 987654321]]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_draws_are_identical_with_and_without_xla(seed):
    seed = tf.constant(seed, tf.int64)
    draws = {
        "uniform": lambda s: rng.uniform([6, 7], s, -1.0, 1.0),
        "normal": lambda s: rng.normal([6, 7], s),
        "split": lambda s: tf.cast(rng.split(s, 3), tf.float64),
        "fold_in": lambda s: tf.cast(rng.fold_in(s, 5), tf.float64),
    }
    for name, draw in draws.items():
        graph = tf.function(draw, autograph=False)(seed).numpy()
        xla = tf.function(draw, autograph=False, jit_compile=True)(seed).numpy()
        if name == "normal":  # log and cos may differ in the last bit between XLA and Eigen
            np.testing.assert_allclose(graph, xla, rtol=0, atol=2e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(graph, xla, err_msg=name)


def test_random_draws_have_the_right_distribution():
    u = rng.uniform([200_000], tf.constant([1, 2], tf.int64), -1.0, 1.0).numpy()
    z = rng.normal([200_000], tf.constant([3, 4], tf.int64)).numpy()
    assert u.min() >= -1.0 and u.max() < 1.0
    assert abs(u.mean()) < 0.01 and abs(u.var() - 1 / 3) < 0.01
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.01
    # Different seeds and the two halves of a split give different streams.
    a, b = tf.unstack(rng.split(tf.constant([1, 2], tf.int64)))
    assert not np.array_equal(rng.uniform([8], a).numpy(), rng.uniform([8], b).numpy())


def test_jit_compile_auto_is_off_on_cpu():
    assert tf.config.list_logical_devices("GPU") == []
    assert resolve_jit_compile("auto") is False
    assert resolve_jit_compile("on") is True and resolve_jit_compile("off") is False
    assert TrainConfig().jit_compile == "auto"
    # A boolean in a config.json means on/off.
    assert TrainConfig.from_dict({"jit_compile": True}).jit_compile == "on"
    assert TrainConfig.from_dict({"jit_compile": False}).jit_compile == "off"
    with pytest.raises(UserError, match="jit-compile"):
        make_config(None, {"jit_compile": "yes"})


def _trainer(norm: str, precision: str = "float32", attack_steps: int = 3, batch: int = 8):
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        network = build_model("wrn-10-1", input_shape=(16, 16, 3), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
        eps = 8 / 255 if norm == "linf" else 0.5
        trainer = AdversarialTrainer(
            network, loss="trades", attack=trades_attack(norm, eps, num_steps=attack_steps), seed=3
        )
        trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
        trainer.optimizer.build(network.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    data = np.random.default_rng(0)
    x = tf.constant(data.uniform(size=(batch, 16, 16, 3)), tf.float32)
    y = tf.one_hot(data.integers(0, 10, batch), 10)
    return trainer, x, y


def _variables(trainer):
    return trainer.network.variables + trainer.optimizer.variables


def _one_step(trainer, step, x, y, start):
    """Runs `step` from the variable values `start` with fresh metric trackers; returns metrics and state."""
    for v, value in zip(_variables(trainer), start):
        v.assign(value)
    for m in trainer.metrics:
        m.reset_state()
    metrics = {k: float(v) for k, v in step((x, y)).items()}
    return metrics, [v.numpy().astype(np.float64) for v in _variables(trainer)]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_xla_step_equals_graph_step(norm):
    """Same random start (tfrobust.attacks.rng), same BatchNorm rule, same update: float32 noise apart."""
    trainer, x, y = _trainer(norm)
    graph = tf.function(trainer.train_step, autograph=False)
    xla = tf.function(trainer.train_step, autograph=False, jit_compile=True)
    graph((x, y))  # one step first: from the zero-initialised logits layer most gradients are 0
    start = [v.numpy() for v in _variables(trainer)]
    metrics_graph, after_graph = _one_step(trainer, graph, x, y, start)
    metrics_xla, after_xla = _one_step(trainer, xla, x, y, start)
    for name, value in metrics_graph.items():
        assert metrics_xla[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    # Linf: the attack's Adam steps (epsilon 1e-9) take the sign of gradients that are at rounding level
    # for some pixels, where the two compilations round differently; L2's normalised steps are smooth.
    atol = 1e-6 if norm == "l2" else 3e-5
    changed = 0
    for a, b, s in zip(after_graph, after_xla, start):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=atol)
        changed += int(not np.allclose(a, s))
    assert changed > 10  # weights, BatchNorm statistics and momenta all moved


def test_xla_step_under_mixed_bfloat16_is_close_to_the_graph_step():
    trainer, x, y = _trainer("l2", precision="mixed_bfloat16")
    graph = tf.function(trainer.train_step, autograph=False)
    graph((x, y))
    start = [v.numpy() for v in _variables(trainer)]
    metrics_graph, after_graph = _one_step(trainer, graph, x, y, start)
    metrics_xla, after_xla = _one_step(
        trainer, tf.function(trainer.train_step, autograph=False, jit_compile=True), x, y, start
    )
    assert all(v.dtype == "float32" for v in trainer.network.trainable_variables)  # weights stay float32
    assert metrics_xla["loss"] == pytest.approx(metrics_graph["loss"], rel=2e-2)
    for a, b in zip(after_graph, after_xla):
        np.testing.assert_allclose(b, a, rtol=2e-2, atol=2e-3)


def test_xla_step_is_traced_once_across_steps_and_epochs(tmp_path, monkeypatch):
    """`tfrobust train --jit-compile on` traces (and so XLA-compiles) its step once for the whole run,
    although it calls `fit` once per epoch and its epochs differ in length."""
    from support import write_digits_npz

    from tfrobust.training.run import train

    traces = []
    original = AdversarialTrainer.train_step

    def counting(self, data):
        traces.append(1)  # Python runs only while TensorFlow traces
        return original(self, data)

    monkeypatch.setattr(AdversarialTrainer, "train_step", counting)
    npz = write_digits_npz(tmp_path / "digits.npz", n=200)
    config = make_config(
        None,
        dict(
            dataset=f"npz:{npz}",
            model="wrn-10-1",
            batch_size=48,
            epochs=3,
            val_size=64,
            eval_every=0,
            attack_steps=2,
            warmup_epochs=1,
            eps=0.1,
            aug_repeats=1,
            jit_compile="on",
            export_dir=str(tmp_path / "export"),
        ),
    )
    summary = train(config, str(tmp_path / "run"), verbose=0)
    assert len(traces) == 1
    assert summary["epochs"] == 3 and summary["train_images_per_second"] > 0


def test_train_batches_have_a_static_shape():
    """XLA compiles per input shape: the training pipeline never yields a smaller last batch."""
    from tfrobust.data.datasets import Split
    from tfrobust.data.pipeline import train_dataset

    images = np.zeros((50, 8, 8, 1), np.uint8)
    split = Split(images=images, labels=(np.arange(50) % 10).astype(np.int64))
    ds = train_dataset(split, num_classes=10, batch_size=16, seed=0, first_epoch=0, steps_per_epoch=3, augment=None)
    assert ds.element_spec[0].shape.as_list() == [16, 8, 8, 1]


def test_hlo_of_the_step_runs_through_jax_and_equals_tensorflow(tmp_path):
    """benchmarks/xla_export.py + xla_run.py --check: TF's HLO run by JAX's XLA client equals TF's step."""
    pytest.importorskip("jax")  # the [test] extra installs it; the bridge needs nothing else
    prefix = str(tmp_path / "wrn10")
    env = {**os.environ, "PYTHONPATH": REPO}
    export = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "benchmarks", "xla_export.py"),
            "--model",
            "wrn-10-1",
            "--batch-size",
            "4",
            "--attack-steps",
            "3",
            "--precision",
            "float32",
            "--image-size",
            "16",
            "--values",
            "--out",
            prefix,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    import xla_run

    result = xla_run.main([prefix, "--check", "--tolerance", "1e-5"])
    check = result["check"]
    assert check["passed"], check
    for reference in ("vs_tf_xla", "vs_tf"):
        for group in ("weights", "optimizer", "batch_norm_statistics"):
            assert check[reference][group]["scale"] > 0
    # The runner's random-weight timing path works on the same program.
    timed = xla_run.main([prefix, "--steps", "2", "--warmup", "1", "--peak-size", "256"])
    assert timed["images_per_second"] > 0 and 0 < timed["mfu"]["input"] < 1
    assert np.all(np.isfinite(timed["losses"]))


@pytest.mark.slow
def test_xla_step_under_mirrored_strategy_equals_the_graph_step(tmp_path, digits_npz):
    """Two replicas: each compiles its own step (the optimizer update stays outside XLA); the result is
    the graph step's."""
    npz = digits_npz
    reports, states = {}, {}
    for jit in ("off", "on"):
        out = str(tmp_path / f"{jit}.npz")
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, "tests", "training", "xla_mirrored_check.py"), npz, jit, out],
            env={**os.environ, "PYTHONPATH": REPO},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        reports[jit] = json.loads([line for line in result.stdout.splitlines() if line.startswith("REPORT ")][-1][7:])
        states[jit] = dict(np.load(out))
    assert reports["on"]["replicas"] == 2 and reports["on"]["xla_per_replica"] and not reports["on"]["keras_jit"]
    assert not reports["off"]["xla_per_replica"]
    assert reports["on"]["loss"] == pytest.approx(reports["off"]["loss"], rel=1e-4)
    for name, value in states["off"].items():
        np.testing.assert_allclose(states["on"][name], value, rtol=1e-4, atol=3e-5, err_msg=name)


def test_synchronised_batch_norm_on_several_devices_refuses_xla():
    from tfrobust.training.distribute import resolve_jit_compile

    assert resolve_jit_compile("on", replicas=2) is True
    assert resolve_jit_compile("auto", replicas=2, synchronized_bn=True) is False
    assert resolve_jit_compile("on", replicas=1, synchronized_bn=True) is True
    with pytest.raises(UserError, match="sync-batch-norm"):
        resolve_jit_compile("on", replicas=2, synchronized_bn=True)
