"""The public Python API: `tfrobust.AdversarialTrainer` on user models, the BatchNorm rule for any model,
input and label conventions, serialisation, `tfrobust.callbacks` in a plain `fit`, `tfrobust.layers` in a
`tf.data` map, and the public names themselves (lazy, documented)."""

import ast
import inspect
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import REPO

import tfrobust
from tfrobust.attacks.pgd import trades_attack
from tfrobust.errors import UserError
from tfrobust.models.registry import build_model
from tfrobust.training.schedules import ema_decay
from tfrobust.training.trainer import decayed_variables, training_attack

EPS = 0.3
MOMENTUM = 0.5  # far from 1, so one moving-statistics update more or less shows


def user_cnn(
    seed=0, classes=10, shape=(12, 12, 3), batch_norm=True, synchronized=False, momentum=MOMENTUM, regularizer=None
):
    """A user-style functional CNN with plain keras BatchNormalization (or none)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = inputs
    for i, (filters, stride) in enumerate([(6, 1), (8, 2)]):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"conv{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=momentum, synchronized=synchronized, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, kernel_regularizer=regularizer, name="logits")(x))


def data(batch=16, shape=(12, 12, 3), classes=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.2, 0.8, size=(batch, *shape)).astype(np.float32)
    return images, rng.integers(0, classes, size=batch)


class RecordingAttack:
    """Wraps an attack and keeps its last output: the adversarial images the step trained on."""

    def __init__(self, inner, shape):
        self.inner = inner
        self.last = tf.Variable(tf.zeros(shape), trainable=False)

    def __call__(self, model_fn, x, target, seed):
        adv = self.inner(model_fn, x, target, seed)
        self.last.assign(adv)
        return adv


def numpy_forward_moments(model, images):
    """Batch mean and biased variance at the input of every BatchNormalization of `user_cnn` in training
    mode, with the BatchNorm arithmetic in NumPy (the convolutions are the model's own layers)."""
    x = images.astype(np.float64)
    moments = {}
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
            moments[layer.name] = (mean, var)
            x = (x - mean) / np.sqrt(var + layer.epsilon) * layer.gamma.numpy() + layer.beta.numpy()
        elif isinstance(layer, keras.layers.ReLU):
            x = np.maximum(x, 0.0)
        elif isinstance(layer, keras.layers.Conv2D):
            x = layer(tf.constant(x, tf.float32)).numpy().astype(np.float64)
        else:
            break
    return moments


def bn_state(model):
    return {
        layer.name: (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    }


# ------------------------------------------------------------------ the BatchNorm rule for any model


@pytest.mark.parametrize("loss", ["trades", "pgd-at"])
def test_plain_keras_batchnorm_moves_once_per_step_by_the_adversarial_batch(loss):
    images, labels = data()
    model = user_cnn()
    attack = RecordingAttack(training_attack(loss, "linf", EPS, num_steps=3), images.shape)
    trainer = tfrobust.AdversarialTrainer(model, loss=loss, eps=EPS, attack=attack)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))  # weights stay: the expected moments use them
    before = bn_state(model)
    trainer.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0)
    adv = attack.last.numpy()
    assert np.abs(adv - images).max() > 0.1  # the attack moved: clean and adversarial moments differ
    expected = numpy_forward_moments(model, adv)
    clean = numpy_forward_moments(model, images)
    for name, (mean, var) in expected.items():
        mean0, var0 = before[name]
        # One Keras momentum update with the adversarial batch's moments (Keras: biased variance).
        np.testing.assert_allclose(bn_state(model)[name][0], MOMENTUM * mean0 + (1 - MOMENTUM) * mean, atol=2e-5)
        np.testing.assert_allclose(bn_state(model)[name][1], MOMENTUM * var0 + (1 - MOMENTUM) * var, rtol=1e-4)
        # Told apart from a second update by the clean pass (clean first, then adversarial).
        twice = MOMENTUM * (MOMENTUM * var0 + (1 - MOMENTUM) * clean[name][1]) + (1 - MOMENTUM) * var
        assert np.abs(twice - bn_state(model)[name][1]).max() > 1e-3


def test_keras_application_batchnorm_moves_once_per_step_by_the_adversarial_batch():
    """MobileNetV3Small (weights=None, 32x32, 10 classes; its own Rescaling expects 0..255): every BatchNorm's
    moving statistics after one step equal those of one plain Keras training call on the adversarial images."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None, dropout_rate=0.0
    )
    bn_layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bn_layers:
        layer.momentum = MOMENTUM  # 0.999 in MobileNetV3: one update more or less would hardly show
    images, labels = data(batch=8, shape=(32, 32, 3))
    attack = RecordingAttack(trades_attack("linf", EPS, num_steps=2), images.shape)
    trainer = tfrobust.AdversarialTrainer(model, eps=EPS, attack=attack, input_range=(0, 255))
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    start = [v.numpy().copy() for v in model.non_trainable_variables]
    trainer.train_step((tf.constant(images), tf.constant(labels)))  # eagerly: tracing this network takes longer
    after = bn_state(model)
    adv = attack.last.numpy()
    assert np.abs(adv - images).max() > 0.1

    def keras_updates(*batches):
        """Moving statistics after ordinary Keras training calls on `batches` (0..255) from the same start."""
        for variable, value in zip(model.non_trainable_variables, start):
            variable.assign(value)
        for batch in batches:
            model(tf.constant(batch * 255.0), training=True)
        return bn_state(model)

    expected, clean_then_adv = keras_updates(adv), keras_updates(images, adv)
    assert len(expected) == len(bn_layers) > 30
    told_apart = 0
    for name, (mean, var) in expected.items():
        np.testing.assert_allclose(after[name][0], mean, rtol=1e-3, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(after[name][1], var, rtol=1e-3, atol=1e-4, err_msg=name)
        told_apart += int(np.abs(clean_then_adv[name][1] - var).max() > 1e-2 * np.abs(var).max())
    assert told_apart > 30  # an update by the clean pass too would show in most layers


def test_a_model_without_batchnorm_trains():
    images, labels = data()
    model = user_cnn(batch_norm=False)
    trainer = tfrobust.AdversarialTrainer(model, eps=8 / 255, attack_steps=2)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = trainer.fit(tf.data.Dataset.from_tensors((images, labels)).repeat(2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and history.history["loss"][-1] > 0
    assert all(np.abs(a - w.numpy()).max() > 0 for a, w in zip(before, model.trainable_weights))


def test_batchnorm_rule_under_mirrored_strategy_on_two_devices():
    """tests/api_distributed_check.py: plain Keras BatchNormalization, per replica and synchronised."""
    import json

    env = {**os.environ, "PYTHONPATH": REPO}
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "api_distributed_check.py")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads([l for l in result.stdout.splitlines() if l.startswith("REPORT ")][-1][len("REPORT ") :])
    # Per replica (synchronized=False): copy k is one momentum update with replica k's adversarial rows.
    for k in range(2):
        adv = np.array(report["per_replica_adv"][k])
        mean, var = adv.mean(axis=(0, 1, 2)), adv.var(axis=(0, 1, 2))
        np.testing.assert_allclose(report["per_replica_mean"][k], (1 - MOMENTUM) * mean, atol=2e-5)
        np.testing.assert_allclose(report["per_replica_var"][k], MOMENTUM + (1 - MOMENTUM) * var, rtol=1e-4)
    assert np.abs(np.subtract(*report["per_replica_mean"])).max() > 1e-3  # the replicas' rows differ
    # Synchronised: both copies are one update with the moments of all adversarial rows.
    adv = np.concatenate([np.array(a) for a in report["sync_adv"]])
    for k in range(2):
        np.testing.assert_allclose(report["sync_mean"][k], (1 - MOMENTUM) * adv.mean(axis=(0, 1, 2)), atol=2e-5)
        np.testing.assert_allclose(
            report["sync_var"][k], MOMENTUM + (1 - MOMENTUM) * adv.var(axis=(0, 1, 2)), rtol=1e-4
        )
    assert report["sync_attack_unrolled"] and not report["per_replica_attack_unrolled"]
    assert all(np.isfinite(report["fit_loss"]))
    # WeightAveraging created by fit (no network given) under the strategy: mirrored, one update per step.
    assert report["averaging_updates"] == [2, 2] and all(report["averages_mirrored"])


# ------------------------------------------------------------------ inputs and labels


def _weights_after_one_step(trainer, model, batch):
    trainer.compile(optimizer=keras.optimizers.SGD(0.5))
    trainer.train_step(batch)
    return [v.numpy() for v in model.variables]


def test_integer_and_one_hot_labels_give_the_same_step():
    images, labels = data()
    results = []
    for y in (labels, labels[:, None], np.eye(10, dtype=np.float32)[labels]):
        model = user_cnn()
        trainer = tfrobust.AdversarialTrainer(model, eps=EPS, attack_steps=2)
        results.append(_weights_after_one_step(trainer, model, (tf.constant(images), tf.constant(y))))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_uint8_images_are_divided_by_255():
    trainer = tfrobust.AdversarialTrainer(user_cnn(), eps=EPS)
    pixels = np.arange(16 * 12 * 12 * 3).reshape(16, 12, 12, 3) % 256
    images, labels = trainer.prepare_batch((tf.constant(pixels.astype(np.uint8)), tf.constant(np.arange(16) % 10)))
    np.testing.assert_allclose(images.numpy(), pixels / 255.0, atol=1e-7)
    np.testing.assert_array_equal(labels.numpy(), np.eye(10)[np.arange(16) % 10])


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.zeros((16, 5), np.float32), "labels have 5 classes but the model's logits have 10"),
        (np.zeros((16, 10, 1), np.float32), "labels must be class ids"),
        (np.zeros((16, 10), np.int64), "labels must be class ids"),
    ],
)
def test_label_mismatches_are_one_clear_error(labels, message):
    images, _ = data()
    trainer = tfrobust.AdversarialTrainer(user_cnn(), eps=EPS)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(UserError, match=message):
        trainer.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0)


def test_bad_models_and_options_are_refused():
    features = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3)])
    trainer = tfrobust.AdversarialTrainer(features, eps=EPS)
    with pytest.raises(UserError, match=r"logits of shape \[batch, classes\]"):
        trainer.prepare_batch(data())
    with pytest.raises(UserError, match="pixel units"):
        tfrobust.AdversarialTrainer(user_cnn(), eps=8)
    with pytest.raises(UserError, match="norm"):
        tfrobust.AdversarialTrainer(user_cnn(), norm="l1")
    with pytest.raises(UserError, match="input_range"):
        tfrobust.AdversarialTrainer(user_cnn(), input_range=(1, 0))
    with pytest.raises(UserError, match="preprocess must be a keras layer"):
        tfrobust.AdversarialTrainer(user_cnn(), preprocess=lambda x: x)
    with pytest.raises(UserError, match="no loss="):
        tfrobust.AdversarialTrainer(user_cnn()).compile(optimizer="sgd", loss="mse")


def test_input_range_and_preprocess_equal_the_conversion_inside_the_model():
    """A model that expects 0..255 (then normalises) trained with input_range=(0, 255) and preprocess takes the
    step the [0, 1] model with the same arithmetic inside takes: the attack works in [0, 1] units."""
    images, labels = data()
    mean, variance = [0.3, 0.5, 0.7], [0.04, 0.09, 0.01]
    batch = (tf.constant(images), tf.constant(labels))

    inner = user_cnn()
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(255.0)(inputs)
    x = keras.layers.Normalization(mean=[m * 255 for m in mean], variance=[v * 255**2 for v in variance])(x)
    inside = keras.Model(inputs, inner(x))
    expected = _weights_after_one_step(tfrobust.AdversarialTrainer(inside, eps=EPS, attack_steps=3), inner, batch)

    inner = user_cnn()
    trainer = tfrobust.AdversarialTrainer(
        inner,
        eps=EPS,
        attack_steps=3,
        input_range=(0, 255),
        preprocess=keras.layers.Normalization(mean=[m * 255 for m in mean], variance=[v * 255**2 for v in variance]),
    )
    actual = _weights_after_one_step(trainer, inner, batch)
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    step = trainer.loss_and_gradients(*trainer.prepare_batch(batch))
    delta = step["adv_images"].numpy() - images
    assert 0.2 < np.abs(delta).max() <= EPS + 1e-6  # the eps ball is in [0, 1] units
    # The inference model takes [0, 1] images, as the trainer does.
    np.testing.assert_allclose(trainer.inference_model()(images).numpy(), trainer(images).numpy(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ weight decay and the model's own losses


def test_decayed_variables_are_kernels_and_biases_never_normalisation():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.SeparableConv2D(4, 1, name="separable")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))
    names = sorted(v.path for v in decayed_variables(model))
    assert names == sorted(
        [
            "conv/kernel",
            "conv/bias",
            "depthwise/kernel",
            "depthwise/bias",
            "separable/depthwise_kernel",
            "separable/pointwise_kernel",
            "separable/bias",
            "dense/kernel",
            "dense/bias",
        ]
    )
    # tfrobust's WRN: the conv kernels, the dense kernel and the dense bias, in the model's order.
    wrn = build_model("wrn-10-1", input_shape=(8, 8, 3), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    expected = [
        w
        for layer in wrn._flatten_layers(include_self=False)
        for w in (
            [layer.kernel]
            if isinstance(layer, keras.layers.Conv2D)
            else [layer.kernel, layer.bias]
            if isinstance(layer, keras.layers.Dense)
            else []
        )
    ]
    assert [v.path for v in decayed_variables(wrn)] == [v.path for v in expected]


def test_the_models_own_regularisation_losses_are_added():
    images, labels = data()
    model = user_cnn(batch_norm=False, regularizer=keras.regularizers.L2(0.05))
    trainer = tfrobust.AdversarialTrainer(model, eps=EPS, attack_steps=1, weight_decay=0.0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    step = trainer.loss_and_gradients(*trainer.prepare_batch((images, labels)))
    parts = step["parts"]
    expected = float(parts["ce"] + 6.0 * parts["kl"]) + 0.05 * float(
        np.sum(model.get_layer("logits").kernel.numpy() ** 2)
    )
    assert float(step["total"]) == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ serialisation


def test_config_round_trip_and_keras_files(tmp_path):
    model = user_cnn()
    trainer = tfrobust.AdversarialTrainer(
        model,
        loss="pgd-at",
        eps=0.5,
        norm="l2",
        beta=3.0,
        attack_steps=4,
        attack_optimizer="sign",
        weight_decay=1e-4,
        input_range=(-1, 1),
        preprocess=keras.layers.Rescaling(2.0),
        seed=5,
    )
    config = trainer.get_config()
    clone = tfrobust.AdversarialTrainer.from_config(config)
    assert clone.get_config() == config
    assert clone.attack == trainer.attack and clone.input_range == (-1.0, 1.0)
    images, _ = data()
    # The wrapped model saves and reloads as .keras in safe mode (no lambdas).
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded(images).numpy(), model(images).numpy(), rtol=1e-6, atol=1e-6)
    # So do the trainer and its inference model (input conversion included).
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    trainer.fit(tf.data.Dataset.from_tensors((images, data()[1])), epochs=1, verbose=0)
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.saving.load_model(tmp_path / "trainer.keras", safe_mode=True)
    assert isinstance(loaded, tfrobust.AdversarialTrainer) and loaded.get_config()["norm"] == "l2"
    assert int(loaded.optimizer.iterations.numpy()) == 1  # the optimizer state came back too
    np.testing.assert_allclose(loaded(images).numpy(), trainer(images).numpy(), rtol=1e-5, atol=1e-6)
    trainer.inference_model().save(tmp_path / "inference.keras")
    inference = keras.saving.load_model(tmp_path / "inference.keras", safe_mode=True)
    np.testing.assert_allclose(inference(images).numpy(), trainer(images).numpy(), rtol=1e-5, atol=1e-6)


def test_a_custom_attack_has_no_config():
    trainer = tfrobust.AdversarialTrainer(user_cnn(), attack=trades_attack("linf", EPS, num_steps=2))
    with pytest.raises(UserError, match="custom attack"):
        trainer.get_config()


# ------------------------------------------------------------------ callbacks in a plain fit


class RecordWeights(keras.callbacks.Callback):
    def __init__(self, network):
        super().__init__()
        self.network, self.seen = network, []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([w.numpy().copy() for w in self.network.trainable_weights])


def test_weight_averaging_in_a_plain_fit_of_a_trainer_and_of_a_keras_model():
    images, labels = data()
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(3)
    for wrap in (True, False):
        model = user_cnn()
        initial = [w.numpy().copy() for w in model.trainable_weights]
        if wrap:
            fitted = tfrobust.AdversarialTrainer(model, eps=EPS, attack_steps=1)
            fitted.compile(optimizer=keras.optimizers.SGD(0.1))
        else:
            fitted = model
            fitted.compile(
                optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            )
        recorder, averaging = RecordWeights(model), tfrobust.callbacks.WeightAveraging(decay=0.5)
        fitted.fit(dataset, epochs=1, verbose=0, callbacks=[recorder, averaging])
        fitted.fit(dataset, epochs=1, verbose=0, callbacks=[recorder, averaging])  # continues the same average
        assert averaging.network is model
        expected = initial
        for t, weights in enumerate(recorder.seen):
            d = float(ema_decay(t, 0.5))
            expected = [d * e + (1 - d) * w for e, w in zip(expected, weights)]
        for average, value in zip(averaging.averages, expected):
            np.testing.assert_allclose(average.numpy(), value, rtol=1e-5, atol=1e-6)
        assert int(averaging.num_updates.numpy()) == 6
        averaged = averaging.sync_averaged_network()
        assert any(
            np.abs(a.numpy() - w.numpy()).max() > 0 for a, w in zip(averaged.trainable_weights, model.trainable_weights)
        )


def test_model_selection_in_a_plain_fit_keeps_the_best_averaged_weights(capsys):
    images, labels = data(batch=32)
    model = user_cnn()
    trainer = tfrobust.AdversarialTrainer(model, eps=8 / 255, attack_steps=1)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05))
    averaging = tfrobust.callbacks.WeightAveraging(decay=0.5)
    held_out = tf.data.Dataset.from_tensor_slices((images[:16], labels[:16])).batch(8)
    selection = tfrobust.callbacks.ModelSelection(averaging, validation_data=held_out)
    history = trainer.fit(
        tf.data.Dataset.from_tensors((images[16:], labels[16:])).repeat(2),
        epochs=3,
        verbose=0,
        callbacks=[averaging, selection],
    )
    robust = history.history["val_avg_pgd40_accuracy"]
    assert len(robust) == 3 and all(0.0 <= r <= 1.0 for r in robust)
    assert selection.best["epoch"] == 1 + int(np.argmax(robust))
    assert "validation clean/PGD-40" in capsys.readouterr().out
    best = selection.restore_best()
    assert best is averaging.averaged_network
    # The PGD-40 robust accuracy of the restored weights is the best epoch's.
    again = selection.evaluate(best)
    assert again["robust_accuracy"] == pytest.approx(max(robust))
    with pytest.raises(UserError, match="exactly one of"):
        tfrobust.callbacks.ModelSelection(averaging)


# ------------------------------------------------------------------ layers in a tf.data map


def test_layers_run_in_a_tf_data_map_with_explicit_seeds():
    images, labels = data(batch=8)
    one_hot = np.eye(10, dtype=np.float32)[labels]
    layers = [
        tfrobust.layers.PadCrop(padding=2),
        tfrobust.layers.CutMix(),
        tfrobust.layers.MixUp(),
        tfrobust.layers.Cutout(window=4),
        tfrobust.layers.Ricap(),
        tfrobust.layers.AutoAugment(),
        tfrobust.layers.RandAugment(num_ops=2, magnitude=9),
    ]

    def augment(step, batch):
        out = {"images": batch[0], "labels": batch[1]}
        for k, layer in enumerate(layers):
            out = layer(out, training=True, seed=tf.stack([tf.constant(k, tf.int64), step]))
        return out["images"], out["labels"]

    dataset = tf.data.Dataset.from_tensors((images, one_hot)).repeat(2).enumerate().map(augment)
    first, second = list(dataset), list(dataset)
    for (x1, y1), (x2, _y2) in zip(first, second):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())  # same seeds, same batches
        assert x1.shape == images.shape and 0.0 <= x1.numpy().min() and x1.numpy().max() <= 1.0
        np.testing.assert_allclose(y1.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(first[0][0].numpy() - images).max() > 0.1
    assert np.abs(first[0][0].numpy() - first[1][0].numpy()).max() > 0.1  # the step index changes the draw


# ------------------------------------------------------------------ public names


def _public_objects():
    for name in tfrobust.__all__:
        value = getattr(tfrobust, name)
        yield f"tfrobust.{name}", value
        if inspect.ismodule(value):
            for inner in value.__all__:
                yield f"tfrobust.{name}.{inner}", getattr(value, inner)


def _example_code(doc):
    """The literal block after `Example::`: its indented lines, dedented."""
    lines = doc.split("Example::", 1)[1].splitlines()[1:]
    block = []
    for line in lines:
        if line.strip() and not line.startswith((" ", "\t")):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip()


def test_every_public_symbol_has_a_docstring_with_an_example():
    """Every class, function and module among the public names has an `Example::` block of Python that uses
    the name; a registry or typing alias (no docstring of its own) is documented in its module's docstring."""
    names = [name for name, _ in _public_objects()]
    assert names[0] == "tfrobust.AdversarialTrainer" and "tfrobust.layers.CutMix" in names
    assert "tfrobust.callbacks.WeightAveraging" in names and "tfrobust.callbacks.ModelSelection" in names
    assert "tfrobust.attacks.PGD" in names and "tfrobust.attacks.apgd_t" in names
    aliases = []
    for name, value in [("tfrobust", tfrobust), *_public_objects()]:
        short = name.rsplit(".", 1)[-1]
        if not (inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value)):
            module = name.rsplit(".", 1)[0]
            assert f"`{short}`" in (inspect.getdoc(sys.modules[module]) or ""), (
                f"{name} is neither a class, a function nor a module: {module}'s docstring must document it"
            )
            aliases.append(name)
            continue
        doc = inspect.getdoc(value) or ""
        assert "Example::" in doc, f"{name} has no docstring with an example (an 'Example::' block)"
        code = _example_code(doc)
        assert code, f"{name}: empty example"
        try:
            ast.parse(code)
        except SyntaxError as error:
            raise AssertionError(f"{name}: the example is not Python: {error}") from None
        assert short.lower() in code.lower(), f"{name}: the example does not use {short}"
    assert {"tfrobust.attacks.ATTACKS", "tfrobust.attacks.ModelFn", "tfrobust.attacks.LossFn"} <= set(aliases)
    for name, value in _public_objects():
        if inspect.isclass(value) and value.__module__.startswith("tfrobust"):
            assert value.__module__ not in ("tfrobust.layers", "tfrobust.callbacks"), f"{name} has one home"


def test_import_tfrobust_stays_cheap_and_public_names_load_lazily():
    code = (
        "import sys, tfrobust; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
        "assert sorted(tfrobust.__all__) == sorted(set(dir(tfrobust)) & set(tfrobust.__all__)); "
        "tfrobust.AdversarialTrainer; assert 'tensorflow' in sys.modules; print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tfrobust.nothing  # noqa: B018
