"""Mixed precision (tfrobust/training/trainer.py, "Precision"): a mixed_float16 step computes what the float32
step computes up to float16 rounding; dynamic loss scaling halves its scale and skips the update on an
overflow, doubles it after its growth period, and the non-finite guard lets a skipped step pass; the loss
scale is checkpointed and a restored run continues bit for bit; the attack's input gradient is scaled so
that float16 underflow does not weaken it; two replicas skip together."""

import functools
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import REPO, randomize_weights, tiny_conv_bn_network

from tfrobust.attacks.losses import kl_to_target
from tfrobust.attacks.pgd import trades_attack
from tfrobust.errors import NonFiniteError
from tfrobust.models.registry import build_model
from tfrobust.training import callbacks as cb
from tfrobust.training import faults
from tfrobust.training.optimizers import StepCountingLossScaleOptimizer, TraceSGD
from tfrobust.training.trainer import (
    AdversarialTrainer,
    _plus,
    attack_gradient_scale,
    computes_in_float16,
    loss_scaled_logits,
)

INF_GRADIENT, NAN_LOSS = 1, 2  # what `Poisoned.poison` injects


class Poisoned(AdversarialTrainer):
    """A trainer whose next step can be given an infinite gradient or a NaN loss (`poison`, a variable, so
    one traced step serves every case)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.poison = tf.Variable(0, trainable=False, dtype=tf.int32)

    def loss_and_gradients(self, images, labels):
        out = super().loss_and_gradients(images, labels)
        first = out["gradients"][0]
        inf = tf.fill(tf.shape(first), tf.constant(np.inf, first.dtype))
        out["gradients"] = [tf.where(tf.equal(self.poison, INF_GRADIENT), inf, first), *out["gradients"][1:]]
        out["total"] = tf.where(tf.equal(self.poison, NAN_LOSS), tf.constant(np.nan), out["total"])
        return out


def tiny_trainer(policy, optimizer=None):
    """Conv -> Keras BatchNorm -> ReLU -> pool -> float32 logits, built under `policy`, TRADES with a 2-step
    attack, compiled (and built) with TraceSGD or `optimizer`."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        network = tiny_conv_bn_network()
        trainer = Poisoned(network, eps=0.1, attack_steps=2, seed=1)
        trainer.compile(optimizer=optimizer or TraceSGD(0.1, momentum=0.9))
        trainer.optimizer.build(network.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return trainer


def batch():
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(size=(8, 6, 6, 1)), tf.float32), tf.one_hot(rng.integers(0, 3, 8), 3)


def values(variables):
    return [np.array(v.numpy()) for v in variables]


def test_a_float16_step_is_the_float32_step_within_float16_rounding():
    fp32, fp16 = tiny_trainer("float32"), tiny_trainer("mixed_float16")
    assert not computes_in_float16(fp32.network) and computes_in_float16(fp16.network)
    assert type(fp32.optimizer) is TraceSGD  # float32 runs keep the optimizer as given
    assert type(fp16.optimizer) is StepCountingLossScaleOptimizer
    assert type(fp16.optimizer.inner_optimizer) is TraceSGD
    fp16.network.set_weights(fp32.network.get_weights())
    data = batch()
    metrics = {}
    for name, trainer in (("fp32", fp32), ("fp16", fp16)):
        metrics[name] = {k: float(np.sum(v)) for k, v in tf.function(trainer.train_step, autograph=False)(data).items()}
    for key in ("loss", "ce", "kl"):
        assert metrics["fp16"][key] == pytest.approx(metrics["fp32"][key], rel=1e-2, abs=1e-3), key
    assert metrics["fp16"][faults.NONFINITE_KEY] == 0
    for a, b in zip(fp32.network.weights, fp16.network.weights):
        assert b.dtype == "float32"  # weights and BatchNorm statistics stay float32
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-2, atol=2e-3, err_msg=a.path)
    # The loss scale multiplied the gradients and was divided out: the update is the float32 one, not
    # 2**15 times it; one finite step counts towards growth.
    assert float(fp16.optimizer.dynamic_scale.numpy()) == 2.0**15
    assert int(fp16.optimizer.step_counter.numpy()) == 1 and int(fp16.optimizer.iterations.numpy()) == 1


def test_loss_scale_halves_and_skips_on_overflow_doubles_after_its_period_and_resumes_exactly(tmp_path):
    def fresh():
        return tiny_trainer(
            "mixed_float16", StepCountingLossScaleOptimizer(TraceSGD(0.1, momentum=0.9), dynamic_growth_steps=2)
        )

    trainer = fresh()
    optimizer = trainer.optimizer
    step = tf.function(trainer.train_step, autograph=False)
    averaging = cb.WeightAveraging(trainer.network, 0.9)
    guard = faults.FaultGuard(averaging, str(tmp_path / "checkpoint.npz"), lambda epoch: 10)
    data = batch()

    def run(poison=0):
        trainer.poison.assign(poison)
        logs = step(data)
        averaging.on_train_batch_end(0)
        return {k: np.asarray(v) for k, v in logs.items()}

    run()  # a first finite step: momenta are non-zero from here on
    before = values(trainer.network.trainable_weights + optimizer.inner_optimizer.variables[1:])
    logs = run(INF_GRADIENT)
    after = values(trainer.network.trainable_weights + optimizer.inner_optimizer.variables[1:])
    # Skipped: weights and momenta unchanged, the scale halved, the step counted. (The step's finite forward
    # pass updated the BatchNorm statistics, as in Keras's own train_step.)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(b, a)
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**14 and int(optimizer.step_counter.numpy()) == 0
    assert int(optimizer.iterations.numpy()) == 2
    assert float(logs[faults.NONFINITE_KEY]) == 0
    guard.on_train_batch_end(1, dict(logs))  # the guard lets an overflow pass

    run()
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**14 and int(optimizer.step_counter.numpy()) == 1
    run()  # the second finite step in a row: the growth period (2) is over
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**15 and int(optimizer.step_counter.numpy()) == 0
    assert int(optimizer.iterations.numpy()) == 4

    # The loss scale is part of the checkpoint, and a restored run continues bit for bit.
    selection = cb.ModelSelection(averaging, lambda model: {}, every=0, total_epochs=1, best_path="unused")
    checkpoint = cb.TrainingCheckpoint(str(tmp_path / "checkpoint.npz"), averaging, selection, epoch_examples=80)
    checkpoint.set_model(trainer)
    checkpoint.on_epoch_end(0)
    with np.load(checkpoint.path) as saved:
        assert float(saved["optimizer/loss_scale_optimizer/dynamic_scale"]) == 2.0**15
        assert "optimizer/loss_scale_optimizer/step_counter" in saved.files
    restored = fresh()
    restored_averaging = cb.WeightAveraging(restored.network, 0.9)
    restored_selection = cb.ModelSelection(restored_averaging, lambda m: {}, every=0, total_epochs=1, best_path="x")
    assert cb.restore(checkpoint.path, restored, restored_averaging, restored_selection, epoch_examples=80) == 1
    run()
    tf.function(restored.train_step, autograph=False)(data)
    for a, b in zip(
        trainer.network.weights + optimizer.variables, restored.network.weights + restored.optimizer.variables
    ):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)

    # A non-finite loss still stops training; so do non-finite gradients once the scale is below 1.
    with pytest.raises(NonFiniteError, match="the loss is NaN"):
        guard.on_train_batch_end(5, dict(run(NAN_LOSS)))
    optimizer.dynamic_scale.assign(0.5)
    with pytest.raises(NonFiniteError, match="a gradient is infinite"):
        guard.on_train_batch_end(6, dict(run(INF_GRADIENT)))


@pytest.mark.parametrize(
    "code, scale, expected",
    [(0, 2.0**15, 0), (8, 2.0**15, 0), (12, 1.0, 0), (9, 2.0**15, 1), (2, 4.0, 2), (8, 0.5, 8), (13, 0.25, 13)],
)
def test_a_loss_scaled_step_drops_only_its_gradient_bits_while_the_scale_is_at_least_1(code, scale, expected):
    assert float(faults.loss_scaled_code(tf.constant(float(code)), tf.constant(scale))) == expected


def test_attack_gradient_scale_is_a_power_of_two_per_example():
    for loss_scale, examples, expected in [
        (2.0**15, 16, 2.0**11),
        (2.0**15, 24, 2.0**10),
        (1.0, 3, 0.25),
        (1e-40, 1, 2.0**-126),
    ]:
        assert float(attack_gradient_scale(tf.constant(loss_scale), tf.constant(examples))) == expected
    # The gradient poisoning of several replicas: dense and sparse gradients, None kept.
    sparse = tf.IndexedSlices(tf.ones([2, 3]), tf.constant([0, 2]), tf.constant([4, 3]))
    assert np.isnan(_plus(sparse, tf.constant(np.nan)).values.numpy()).all() and _plus(None, 1.0) is None
    np.testing.assert_array_equal(_plus(tf.ones([2]), tf.constant(0.0)).numpy(), [1.0, 1.0])


@pytest.fixture(scope="module")
def small_logit_networks():
    """wrn-10-1 in float32 and in mixed_float16 with the same random weights, the logits layer scaled by
    0.01: the small logits of early training, where the attack's gradients are small."""
    networks = {}
    for policy in ("float32", "mixed_float16"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            networks[policy] = build_model(
                "wrn-10-1", input_shape=(16, 16, 3), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3
            )
        finally:
            keras.mixed_precision.set_global_policy("float32")
    randomize_weights(networks["float32"], seed=3)
    logits = networks["float32"].get_layer("logits")
    logits.set_weights([w * 0.01 for w in logits.get_weights()])
    networks["mixed_float16"].set_weights(networks["float32"].get_weights())
    return networks["float32"], networks["mixed_float16"]


def test_float16_underflow_weakens_the_attack_and_the_scaled_gradient_restores_it(small_logit_networks):
    fp32, fp16 = small_logit_networks
    x = tf.constant(np.random.default_rng(0).uniform(size=(8, 16, 16, 3)), tf.float32)
    target = tf.nn.softmax(fp32(x, training=False))
    attack = trades_attack("linf", 8 / 255, num_steps=5)
    scale = attack_gradient_scale(tf.constant(2.0**15), tf.constant(8))  # the trainer's S at the first step
    reached = {}
    for name, model_fn in (
        ("fp32", lambda im: fp32(im, training=False)),
        ("fp16", lambda im: fp16(im, training=False)),
        ("fp16 scaled", loss_scaled_logits(lambda im: fp16(im, training=False), scale)),
    ):
        x_adv = tf.function(functools.partial(attack, model_fn, x, target, tf.constant([0, 1])), autograph=False)()
        reached[name] = float(tf.reduce_mean(kl_to_target(fp32(x_adv, training=False), target)))
    # Measured: 3.06e-5 (fp32), 8.7e-6 (fp16: most input gradients underflow to 0), 3.06e-5 (scaled).
    assert reached["fp16"] < 0.6 * reached["fp32"], reached
    assert reached["fp16 scaled"] == pytest.approx(reached["fp32"], rel=0.05), reached

    # A power-of-two scale changes neither the logits nor, where nothing underflows, the gradient; an
    # overflowing one gives zeros, not NaN.
    def input_gradient(model_fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model_fn(x)
            loss = tf.reduce_sum(kl_to_target(logits, target))
        return logits, tape.gradient(loss, x)

    plain_logits, plain = input_gradient(lambda im: fp32(im, training=False))
    scaled_logits, scaled = input_gradient(loss_scaled_logits(lambda im: fp32(im, training=False), scale))
    np.testing.assert_array_equal(scaled_logits.numpy(), plain_logits.numpy())
    np.testing.assert_allclose(scaled.numpy(), plain.numpy(), rtol=1e-6, atol=1e-14)
    _, overflowed = input_gradient(loss_scaled_logits(lambda im: fp16(im, training=False), tf.constant(2.0**60)))
    assert np.isfinite(overflowed.numpy()).all()


MIRRORED_CHECK = os.path.join(REPO, "tests", "training", "mixed_float16_mirrored_check.py")


@pytest.mark.slow
def test_two_replicas_skip_together_when_one_overflows():
    """Two logical CPUs (a fresh process): an infinite gradient on the second replica only skips the update
    on both (Keras's LossScaleOptimizer alone decides from the first replica's gradients and applies the
    infinite sum), halves the scale, and the step reports no fault."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, MIRRORED_CHECK], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads([line for line in result.stdout.splitlines() if line.startswith("REPORT ")][-1][7:])
    assert report["replicas"] == 2
    assert report["finite_step"] == {"nonfinite": 0.0, "scale": 2.0**15, "iterations": 1, "weights_moved": True}
    assert report["overflow_step"] == {"nonfinite": 0.0, "scale": 2.0**14, "iterations": 2, "weights_moved": False}


@pytest.mark.slow
def test_a_mixed_float16_run_checkpoints_its_loss_scale_and_exports_float32(tmp_path):
    """`tfrobust train --precision mixed_float16` end to end (3 steps): the run's optimizer is the loss-scale
    optimizer, its state is in the checkpoint, and the exported model has no float16 tensor."""
    from support import write_digits_npz

    from tfrobust.config import make_config
    from tfrobust.export import load_model
    from tfrobust.training.run import train

    npz = write_digits_npz(tmp_path / "digits.npz", n=120)
    options = dict(dataset=f"npz:{npz}", model="wrn-10-1", batch_size=32, epochs=1, val_size=24, eval_every=0)
    options.update(attack_steps=1, warmup_epochs=1, eps=0.1, aug_repeats=1, export_dir=str(tmp_path / "export"))
    try:
        summary = train(make_config(None, {**options, "precision": "mixed_float16"}), str(tmp_path / "run"), verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with np.load(tmp_path / "run" / "checkpoint.npz") as saved:
        assert float(saved["optimizer/loss_scale_optimizer/dynamic_scale"]) == 2.0**15  # 3 finite steps
        assert json.loads(str(saved["state_json"]))["optimizer"] == "StepCountingLossScaleOptimizer"
    signature = tf.saved_model.load(summary["export"]).signatures["serving_default"]
    assert "DT_HALF" not in str(signature.graph.as_graph_def())  # no float16 anywhere, nested functions included
    x = tf.constant(np.random.default_rng(0).uniform(size=(2, 8, 8, 1)), tf.float32)
    assert load_model(summary["export"]).logits(x).dtype == tf.float32
