"""AdversarialTrainer.train_step: BatchNorm rule, attack placement, losses; WeightAveraging (EMA)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.attacks.pgd import pgd_at_attack, trades_attack
from tfrobust.errors import UserError
from tfrobust.models.batch_norm import BatchNorm, frozen_batch_statistics
from tfrobust.training.callbacks import WeightAveraging
from tfrobust.training.schedules import ema_decay
from tfrobust.training.trainer import AdversarialTrainer

EPS = 0.3


def tiny_network(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 1))
    x = BatchNorm(momentum=0.99, epsilon=1e-5, name="bn")(inputs)
    x = keras.layers.Flatten()(x)
    logits = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, logits)


class RecordingAttack:
    """Wraps an attack and keeps its last output, so a test can see what the train step attacked with."""

    def __init__(self, inner, shape):
        self.inner = inner
        self.last = tf.Variable(tf.zeros(shape), trainable=False)

    def __call__(self, model_fn, x, target, seed):
        adv = self.inner(model_fn, x, target, seed)
        self.last.assign(adv)
        return adv


def batch():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0.3, 0.7, size=(16, 4, 4, 1)), tf.float32)
    y = tf.one_hot(rng.integers(0, 3, size=16), 3)
    return x, y


def make_trainer(loss, attack, lr=0.0):
    network = tiny_network()
    trainer = AdversarialTrainer(network, loss=loss, attack=attack, beta=6.0, weight_decay=5e-4, seed=1)
    trainer.compile(optimizer=keras.optimizers.SGD(lr))
    return trainer, network


@pytest.mark.parametrize("loss, factory", [("trades", trades_attack), ("pgd-at", pgd_at_attack)])
def test_only_the_adversarial_pass_updates_batchnorm_statistics(loss, factory):
    x, y = batch()
    attack = RecordingAttack(factory("linf", EPS, num_steps=3), x.shape)
    trainer, network = make_trainer(loss, attack)
    bn = network.get_layer("bn")
    tf.function(trainer.train_step)((x, y))
    adv = attack.last.numpy()
    assert np.abs(adv - x.numpy()).max() > 0.1  # the attack moved: clean and adversarial stats differ
    # One zero-debiased update of the moving averages (hk.ExponentialMovingAverage(zero_debias=True)):
    # the first update sets them to the adversarial batch's mean and biased variance.
    np.testing.assert_allclose(bn.moving_mean.numpy(), [adv.mean()], rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [adv.var()], rtol=1e-4)
    assert int(bn.moving_updates.numpy()) == 1
    # The alternatives are told apart by these tolerances: statistics from the clean batch, or a second
    # update by the clean pass (update 2 moves the average by (1 - d) / (1 - d^2) = 0.5025 of the way).
    # The variance tells them apart (a +-eps perturbation hardly moves the mean).
    assert abs(x.numpy().var() - adv.var()) > 1e-3 * adv.var()
    clean_then_adv = x.numpy().var() + (adv.var() - x.numpy().var()) * 0.01 / (1 - 0.99**2)
    assert abs(clean_then_adv - adv.var()) > 1e-4 * adv.var()


def test_attack_output_is_inside_the_ball_and_box():
    x, y = batch()
    attack = RecordingAttack(trades_attack("linf", EPS, num_steps=3), x.shape)
    trainer, _ = make_trainer("trades", attack)
    trainer.train_step((x, y))
    adv = attack.last.numpy()
    assert np.abs(adv - x.numpy()).max() <= EPS + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0


def test_standard_loss_updates_statistics_from_the_clean_batch():
    x, y = batch()
    trainer, network = make_trainer("standard", None)
    trainer.train_step((x, y))
    np.testing.assert_allclose(network.get_layer("bn").moving_mean.numpy(), [x.numpy().mean()], rtol=1e-5)


@pytest.mark.parametrize("loss, factory", [("trades", trades_attack), ("pgd-at", pgd_at_attack), ("standard", None)])
def test_train_step_reports_metrics_and_moves_weights(loss, factory):
    x, y = batch()
    attack = factory("linf", EPS, num_steps=2) if factory else None
    trainer, network = make_trainer(loss, attack, lr=0.1)
    before = [w.numpy().copy() for w in network.trainable_weights]
    logs = trainer.train_step((x, y))
    assert float(logs["loss"]) > 0  # the tracked metric, not a stale 0
    assert 0.0 <= float(logs["clean_accuracy"]) <= 1.0
    if loss != "standard":
        assert "adv_accuracy" in logs
    after = [w.numpy() for w in network.trainable_weights]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after))


def test_same_seed_and_step_give_the_same_update():
    x, y = batch()
    results = []
    for _ in range(2):
        trainer, network = make_trainer("trades", trades_attack("linf", EPS, num_steps=3), lr=0.1)
        trainer.train_step((x, y))
        results.append([w.numpy() for w in network.weights])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_unknown_loss_is_refused_and_a_missing_attack_is_the_papers():
    with pytest.raises(UserError, match="unknown loss"):
        AdversarialTrainer(tiny_network(), loss="mart", attack=None)
    with pytest.raises(UserError, match="without an attack"):
        AdversarialTrainer(tiny_network(), loss="standard", attack=trades_attack("linf", EPS))
    # No attack: the one `tfrobust train` builds (10 Adam steps on the KL, Linf 8/255 by default).
    assert AdversarialTrainer(tiny_network(), loss="trades", attack=None).attack == trades_attack("linf", 8 / 255)
    assert AdversarialTrainer(tiny_network(), loss="pgd-at", norm="l2", eps=0.5, attack_steps=7).attack == (
        pgd_at_attack("l2", 0.5, num_steps=7)
    )
    assert AdversarialTrainer(tiny_network(), loss="standard").attack is None


def test_weight_averaging_follows_the_warmed_up_ema_formula():
    network = tiny_network()
    averaging = WeightAveraging(network, decay=0.9)
    rng = np.random.default_rng(0)
    expected = [w.numpy().copy() for w in network.trainable_weights]
    for t in range(15):
        for w in network.trainable_weights:
            w.assign(rng.normal(size=w.shape).astype("float32"))
        averaging.on_train_batch_end(t)
        d = min(0.9, (1 + t) / (10 + t))
        assert float(ema_decay(t, 0.9)) == pytest.approx(d)
        expected = [d * e + (1 - d) * w.numpy() for e, w in zip(expected, network.trainable_weights)]
    for average, value in zip(averaging.averages, expected):
        np.testing.assert_allclose(average.numpy(), value, rtol=1e-5, atol=1e-6)
    assert int(averaging.num_updates.numpy()) == 15


def test_averaged_network_has_averaged_weights_and_raw_batchnorm_statistics():
    network = tiny_network()
    averaging = WeightAveraging(network, decay=0.5)
    bn = network.get_layer("bn")
    bn.moving_mean.assign([0.25])
    bn.moving_variance.assign([2.0])
    for w in network.trainable_weights:
        w.assign(w + 1.0)
    averaging.on_train_batch_end(0)
    averaged = averaging.sync_averaged_network()
    avg_bn = averaged.get_layer("bn")
    assert float(avg_bn.moving_mean.numpy()[0]) == pytest.approx(0.25)
    assert float(avg_bn.moving_variance.numpy()[0]) == pytest.approx(2.0)
    for w, a in zip(averaged.trainable_weights, averaging.averages):
        np.testing.assert_array_equal(w.numpy(), a.numpy())
    # and the averages are not simply the raw weights
    assert any(
        np.abs(w.numpy() - r.numpy()).max() > 0 for w, r in zip(averaged.trainable_weights, network.trainable_weights)
    )


class TargetRecordingAttack:
    """Keeps the target the train step hands to the attack."""

    def __init__(self, inner, shape):
        self.inner = inner
        self.target = tf.Variable(tf.zeros(shape), trainable=False)

    def __call__(self, model_fn, x, target, seed):
        self.target.assign(target)
        return self.inner(model_fn, x, target, seed)


@pytest.mark.parametrize("mixing", [False, True])
def test_trades_attack_target_is_clean_softmax_or_mixed_labels(mixing):
    x, _ = batch()
    soft = tf.constant(np.random.default_rng(1).dirichlet([1, 1, 1], size=16), tf.float32)  # CutMix-like labels
    attack = TargetRecordingAttack(trades_attack("linf", EPS, num_steps=1), soft.shape)
    network = tiny_network()
    trainer = AdversarialTrainer(network, loss="trades", attack=attack, seed=1, labels_as_attack_target=mixing)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    with frozen_batch_statistics(network):
        clean_softmax = tf.nn.softmax(network(x, training=True)).numpy()
    trainer.train_step((x, soft))
    expected = soft.numpy() if mixing else clean_softmax
    np.testing.assert_allclose(attack.target.numpy(), expected, atol=1e-6)
