"""Tests for tfrobust.models: sizes, structure (docs/method.md, "Model"), serialisation, BatchNorm freezing."""

import math
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import randomize_weights

from tfrobust.errors import UserError
from tfrobust.models import wide_resnet as wrn_module
from tfrobust.models.batch_norm import (
    BatchNorm,
    batch_norm_layers,
    frozen_batch_statistics,
)
from tfrobust.models.registry import MODELS, build_model
from tfrobust.models.standardize import Standardize
from tfrobust.models.swish import swish

CIFAR = dict(input_shape=(32, 32, 3), num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
DIGITS = dict(input_shape=(8, 8, 1), num_classes=10, mean=(0.3,), std=(0.4,))


def _images(shape, batch=4, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (batch, *shape)).astype(np.float32)


def _inbound(model, layer_name):
    """Names of the layers whose outputs feed `layer_name` (its single call site)."""
    nodes = model.get_layer(layer_name)._inbound_nodes
    assert len(nodes) == 1
    return [t._keras_history.operation.name for t in nodes[0].input_tensors]


# --------------------------------------------------------------------------------------------------
# Keras-hub style helpers


def run_serialization_test(layer):
    """get_config -> from_config -> get_config is the identity, and (de)serialize_keras_object round-trips."""
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(layer)
    assert revived.get_config() == config
    return revived


def run_model_saving_test(model, inputs, path, atol=1e-6):
    """Saves `model` as .keras, reloads it (safe mode) and checks inference outputs agree."""
    expected = np.asarray(model(inputs, training=False))
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    actual = np.asarray(restored(inputs, training=False))
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=1e-5)
    return restored


# --------------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(
    "name, expected",
    [("wrn-16-4", 2_752_506), ("preact-resnet-18", 12_556_234), ("wrn-28-10", 36_497_146)],
)
def test_parameter_counts(name, expected):
    start = time.time()
    model = build_model(name, **CIFAR)  # built symbolically, never called on data
    # Weights and BatchNorm moving statistics, as the reference's state dicts count them; each BatchNorm's
    # scalar update counter (zero-debiasing state) is left out.
    assert model.count_params() - len(batch_norm_layers(model)) == expected
    if name == "wrn-28-10" and time.time() - start > 10:
        pytest.skip("building wrn-28-10 took > 10 s on this machine (count checked anyway)")


def test_unknown_model_is_user_error():
    with pytest.raises(UserError, match="unknown model"):
        build_model("wrn-28-11", **CIFAR)


def test_bad_depth_and_activation():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        wrn_module.wide_resnet(depth=12, width=1, **DIGITS)
    with pytest.raises(ValueError, match="unknown activation"):
        build_model("wrn-10-1", activation="gelu", **DIGITS)


def test_registry_names_models():
    model = build_model("wrn-10-1", **DIGITS)
    assert model.name == "wrn-10-1"
    assert set(MODELS) >= {"wrn-28-10", "wrn-70-16", "preact-resnet-18"}


# --------------------------------------------------------------------------------------------------
# Behaviour at init and on small inputs


@pytest.mark.parametrize("name", ["wrn-10-1", "preact-resnet-18"])
def test_logits_exactly_zero_at_init_on_digits_shape(name):
    model = build_model(name, **DIGITS)
    x = _images((8, 8, 1), batch=3)
    for training in (False, True):
        logits = np.asarray(model(x, training=training))
        assert logits.shape == (3, 10)
        assert logits.dtype == np.float32
        assert np.all(logits == 0.0)
    head = model.get_layer("logits")
    assert not np.any(head.kernel.numpy()) and not np.any(head.bias.numpy())


def test_relu_activation_option():
    model = build_model("wrn-10-1", activation="relu", **DIGITS)
    acts = [l for l in model.layers if isinstance(l, keras.layers.Activation)]
    assert acts and all(l.activation is keras.activations.relu for l in acts)
    default = build_model("wrn-10-1", **DIGITS)
    acts = [l for l in default.layers if isinstance(l, keras.layers.Activation)]
    assert all(l.activation is swish for l in acts)


def test_batchnorm_settings():
    model = build_model("wrn-10-1", **DIGITS)
    layers = batch_norm_layers(model)
    assert len(layers) == 2 * 3 + 1  # two per block, one in the head
    for layer in layers:
        assert isinstance(layer, BatchNorm)
        assert layer.momentum == pytest.approx(0.99)
        assert layer.epsilon == pytest.approx(1e-5)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert not layer.use_bias


def _truncated_normal_cdf(z):
    """CDF of a standard normal truncated to [-2, 2] (not rescaled): Haiku's TruncatedNormal / stddev."""
    phi = lambda t: 0.5 * (1.0 + math.erf(t / math.sqrt(2.0)))  # noqa: E731
    return (phi(z) - phi(-2.0)) / (phi(2.0) - phi(-2.0))


@pytest.mark.parametrize("name, kwargs", [("wrn-16-2", CIFAR), ("preact-resnet-18", DIGITS)])
def test_convolutions_start_from_haikus_default_initializer(name, kwargs):
    # hk.Conv2D without w_init (the reference's model_zoo.py): TruncatedNormal(stddev = 1 / sqrt(fan_in)),
    # cut at +-2 stddev, not rescaled; fan_in = kh * kw * in_channels. The logits layer stays zero.
    keras.utils.set_random_seed(0)
    model = build_model(name, **kwargs)
    pooled, kernels = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            w = layer.kernel.numpy()
            z = w * math.sqrt(np.prod(w.shape[:-1]))  # in units of the reference's stddev
            assert np.abs(z).max() <= 2.0 + 1e-5, layer.name
            pooled.append(z.ravel())
            kernels.append(w)
    z = np.concatenate(pooled)
    assert z.size > 50_000
    # The empirical CDF follows the truncated normal's (Keras's he_normal is about 1.6x wider).
    for point in (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5):
        assert abs(np.mean(z <= point) - _truncated_normal_cdf(point)) < 0.01, point
    assert np.std(z) == pytest.approx(0.8796, rel=0.02)
    # Each layer draws its own values (one initializer per layer).
    shapes = [k.shape for k in kernels]
    repeated = next(shape for shape in shapes if shapes.count(shape) >= 2)
    first, second = [k for k in kernels if k.shape == repeated][:2]
    assert not np.array_equal(first, second)
    head = model.get_layer("logits")
    assert not np.any(head.kernel.numpy()) and not np.any(head.bias.numpy())


# --------------------------------------------------------------------------------------------------
# Structure (docs/method.md, "Model")


def test_stride2_conv_pads_bottom_right_only():
    model = randomize_weights(build_model("wrn-10-1", **DIGITS))
    conv = model.get_layer("layer_1_block_0_conv_0")
    assert conv.strides == (2, 2)
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 8, 8, 16)).astype(np.float32))
    actual = conv(x).numpy()
    assert actual.shape == (2, 4, 4, 32)
    bottom_right = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])
    expected = tf.nn.conv2d(bottom_right, conv.kernel, strides=2, padding="VALID").numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    # The check discriminates: PyTorch-style symmetric padding gives a different answer.
    symmetric = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), conv.kernel, strides=2, padding="VALID")
    assert symmetric.shape == expected.shape
    assert not np.allclose(symmetric.numpy(), expected, atol=1e-3)


def test_stride2_shortcut_samples_even_positions():
    model = randomize_weights(build_model("wrn-10-1", **DIGITS))
    shortcut = model.get_layer("layer_1_block_0_shortcut")
    assert shortcut.kernel.shape == (1, 1, 16, 32) and shortcut.strides == (2, 2)
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 8, 8, 16)).astype(np.float32))
    expected = tf.nn.conv2d(x[:, ::2, ::2, :], shortcut.kernel, strides=1, padding="VALID").numpy()
    np.testing.assert_allclose(shortcut(x).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("depth, width", [(10, 1), (16, 2)])
def test_wrn_shortcut_exactly_where_width_changes(depth, width):
    model = wrn_module.wide_resnet(depth=depth, width=width, **DIGITS)
    names = {l.name for l in model.layers}
    n = (depth - 4) // 6
    previous_width = 16
    for group, group_width in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(n):
            prefix = f"layer_{group}_block_{block}"
            in_width = previous_width if block == 0 else group_width
            has_shortcut = in_width != group_width
            assert (f"{prefix}_shortcut" in names) == has_shortcut, prefix
            if has_shortcut:
                shortcut = model.get_layer(f"{prefix}_shortcut")
                assert shortcut.kernel.shape[:2] == (1, 1) and not shortcut.use_bias
                # The projection reads the activated input a = act(BN(x)), like the 3x3 conv.
                assert _inbound(model, f"{prefix}_shortcut") == [f"{prefix}_act_0"]
                assert set(_inbound(model, f"{prefix}_add")) == {f"{prefix}_shortcut", f"{prefix}_conv_1"}
            else:
                # Residual adds the raw x: the previous block's sum (or the stem conv).
                raw = (
                    f"layer_{group}_block_{block - 1}_add"
                    if block
                    else ("init_conv" if group == 0 else f"layer_{group - 1}_block_{n - 1}_add")
                )
                assert set(_inbound(model, f"{prefix}_add")) == {raw, f"{prefix}_conv_1"}
            assert _inbound(model, f"{prefix}_conv_0") == [f"{prefix}_act_0"]
        previous_width = group_width
    # Head: act(BN(.)) -> pool -> dense.
    assert _inbound(model, "batchnorm") == [f"layer_2_block_{n - 1}_add"]
    assert _inbound(model, "logits") == ["pool"]
    assert _inbound(model, "init_conv") == ["standardize"]


def test_preact_resnet18_shortcut_is_3x3_on_raw_input():
    model = build_model("preact-resnet-18", **DIGITS)
    names = {l.name for l in model.layers}
    assert "layer_0_block_0_shortcut" not in names  # 64 -> 64, stride 1
    for stage in (1, 2, 3):
        prefix = f"layer_{stage}_block_0"
        shortcut = model.get_layer(f"{prefix}_shortcut")
        assert shortcut.kernel.shape[:2] == (3, 3) and shortcut.strides == (2, 2)
        assert _inbound(model, f"{prefix}_shortcut") == [f"layer_{stage - 1}_block_1_add"]
        assert f"layer_{stage}_block_1_shortcut" not in names


# --------------------------------------------------------------------------------------------------
# Standardize


def test_standardize_applies_mean_and_std():
    layer = Standardize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    x = _images((2, 2, 3), batch=2)
    expected = (x - np.array([0.1, 0.2, 0.3], np.float32)) / np.array([0.5, 0.25, 2.0], np.float32)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6)


def test_standardize_config_round_trip():
    layer = Standardize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0), name="std")
    revived = run_serialization_test(layer)
    assert revived.mean == layer.mean and revived.std == layer.std
    x = _images((2, 2, 3), batch=1)
    np.testing.assert_array_equal(revived(x).numpy(), layer(x).numpy())


def test_standardize_rejects_bad_statistics():
    with pytest.raises(ValueError, match="same length"):
        Standardize((0.1, 0.2), (0.5,))
    with pytest.raises(ValueError, match="positive"):
        Standardize((0.1,), (0.0,))
    with pytest.raises(ValueError, match="channel"):
        Standardize((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))(np.zeros((1, 2, 2, 1), np.float32))


def test_model_standardizes_inside():
    model = build_model("wrn-10-1", **DIGITS)
    layer = model.get_layer("standardize")
    assert layer.mean == (0.3,) and layer.std == (0.4,)


# --------------------------------------------------------------------------------------------------
# Serialisation


def test_batchnorm_config_round_trip():
    layer = BatchNorm(momentum=0.99, epsilon=1e-5, name="bn")
    revived = run_serialization_test(layer)
    assert isinstance(revived, BatchNorm)
    assert revived.update_moving_statistics is True
    assert "update_moving_statistics" not in layer.get_config()


def test_keras_file_round_trip(tmp_path):
    model = randomize_weights(build_model("wrn-10-1", **DIGITS), seed=3)
    x = _images((8, 8, 1), batch=4, seed=4)
    restored = run_model_saving_test(model, x, str(tmp_path / "model.keras"))
    assert isinstance(restored.get_layer("standardize"), Standardize)
    assert restored.get_layer("head_act").activation is swish
    assert restored.get_layer("standardize").mean == (0.3,)
    assert all(isinstance(l, BatchNorm) for l in batch_norm_layers(restored))
    assert len(batch_norm_layers(restored)) == len(batch_norm_layers(model))
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The restored BatchNorm layers still honour the freezing context.
    before = [l.moving_mean.numpy().copy() for l in batch_norm_layers(restored)]
    with frozen_batch_statistics(restored):
        restored(x, training=True)
    for value, layer in zip(before, batch_norm_layers(restored)):
        np.testing.assert_array_equal(value, layer.moving_mean.numpy())


# --------------------------------------------------------------------------------------------------
# frozen_batch_statistics


def _bn_layer(channels=3, seed=0):
    layer = BatchNorm(momentum=0.9, epsilon=1e-3)
    layer.build((None, 4, 4, channels))
    rng = np.random.default_rng(seed)
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype(np.float32))
    layer.beta.assign(rng.normal(0.0, 0.5, channels).astype(np.float32))
    layer.moving_mean.assign(rng.normal(0.0, 1.0, channels).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    return layer


def _batch_norm_reference(layer, x):
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + layer.epsilon) * layer.gamma.numpy() + layer.beta.numpy()


def _stats(layer):
    return layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()


def test_frozen_uses_batch_statistics_without_updating():
    layer = _bn_layer()
    x = np.random.default_rng(5).normal(2.0, 3.0, (8, 4, 4, 3)).astype(np.float32)
    mean0, var0 = _stats(layer)
    with frozen_batch_statistics(layer):
        assert layer.update_moving_statistics is False
        frozen_out = layer(x, training=True).numpy()
    np.testing.assert_array_equal(layer.moving_mean.numpy(), mean0)
    np.testing.assert_array_equal(layer.moving_variance.numpy(), var0)
    np.testing.assert_allclose(frozen_out, _batch_norm_reference(layer, x), atol=1e-4)
    # Identical to the updating training output (same normalisation, only the assigns differ).
    updating_out = layer(x, training=True).numpy()
    np.testing.assert_allclose(frozen_out, updating_out, atol=1e-5)
    # Inference mode inside the context still uses the (unchanged by the context) moving statistics.
    with frozen_batch_statistics(layer):
        mean1, var1 = _stats(layer)
        inference = layer(x, training=False).numpy()
    expected = (x - mean1) / np.sqrt(var1 + layer.epsilon) * layer.gamma.numpy() + layer.beta.numpy()
    np.testing.assert_allclose(inference, expected, atol=1e-4)


@pytest.mark.parametrize("synchronized", [False, True])  # TF's fused kernel / Keras's composite moments
def test_moving_statistics_are_the_zero_debiased_ema_of_the_reference(synchronized):
    # hk.ExponentialMovingAverage(0.9, zero_debias=True) (the reference's hk.BatchNorm), written out:
    # hidden <- d hidden + (1 - d) stat from 0; average = hidden / (1 - d^n); the variance is the biased one.
    layer = BatchNorm(momentum=0.9, epsilon=1e-3, synchronized=synchronized)
    layer.build((None, 4, 4, 3))
    rng = np.random.default_rng(6)
    hidden_mean, hidden_var = np.zeros(3), np.zeros(3)
    for n in range(1, 5):
        x = rng.normal(2.0 + n, 3.0, (8, 4, 4, 3)).astype(np.float32)
        layer(x, training=True)
        hidden_mean = 0.9 * hidden_mean + 0.1 * x.mean(axis=(0, 1, 2))
        hidden_var = 0.9 * hidden_var + 0.1 * x.var(axis=(0, 1, 2))
        np.testing.assert_allclose(layer.moving_mean.numpy(), hidden_mean / (1 - 0.9**n), rtol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), hidden_var / (1 - 0.9**n), rtol=1e-4)
        assert int(layer.moving_updates.numpy()) == n
        if n == 1:  # the first update is the batch statistic itself (Keras would give 0.1 of it)
            np.testing.assert_allclose(layer.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    # Inference (and so the exported model) normalises with the debiased averages.
    x = rng.normal(0.0, 1.0, (2, 4, 4, 3)).astype(np.float32)
    mean, var = hidden_mean / (1 - 0.9**4), hidden_var / (1 - 0.9**4)
    expected = (x - mean) / np.sqrt(var + 1e-3) * layer.gamma.numpy() + layer.beta.numpy()
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_assigned_statistics_are_used_as_they_are():
    # What the PyTorch importer does: assign running statistics; inference reads them unchanged (the update
    # counter, still 0, only matters to training).
    layer = _bn_layer()
    mean, var = _stats(layer)
    assert int(layer.moving_updates.numpy()) == 0
    x = np.random.default_rng(7).normal(0.0, 1.0, (2, 4, 4, 3)).astype(np.float32)
    expected = (x - mean) / np.sqrt(var + layer.epsilon) * layer.gamma.numpy() + layer.beta.numpy()
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_frozen_context_on_whole_model():
    model = randomize_weights(build_model("wrn-10-1", **DIGITS), seed=7)
    x = _images((8, 8, 1), batch=4, seed=8)
    layers = batch_norm_layers(model)
    before = [_stats(l) for l in layers]
    with frozen_batch_statistics(model):
        assert all(l.update_moving_statistics is False for l in layers)
        model(x, training=True)
    for (m, v), layer in zip(before, layers):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), m)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), v)
    assert all(l.update_moving_statistics is True for l in layers)
    model(x, training=True)
    assert all(not np.array_equal(l.moving_mean.numpy(), m) for (m, _), l in zip(before, layers))


def test_frozen_flag_restored_after_exception_and_nesting():
    layer = _bn_layer()
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_batch_statistics(layer):
            raise RuntimeError("boom")
    assert layer.update_moving_statistics is True
    with frozen_batch_statistics(layer):
        with frozen_batch_statistics(layer):
            assert layer.update_moving_statistics is False
        assert layer.update_moving_statistics is False  # inner exit restores the outer state
    assert layer.update_moving_statistics is True


def test_frozen_context_applies_to_call_sites_traced_inside_tf_function():
    layer = _bn_layer()
    x = tf.constant(np.random.default_rng(9).normal(1.0, 2.0, (8, 4, 4, 3)).astype(np.float32))
    x_adv = x + 0.5

    @tf.function
    def step(clean, adv):
        with frozen_batch_statistics(layer):
            clean_out = layer(clean, training=True)  # no update
        adv_out = layer(adv, training=True)  # updates (the TRADES adversarial pass)
        return clean_out, adv_out

    for n in (1, 2):  # the second call reuses the trace
        mean0, _ = _stats(layer)
        clean_out, _ = step(x, x_adv)
        # One zero-debiased update per call: update n moves (1 - d) / (1 - d^n) of the way (1 at n = 1).
        assert int(layer.moving_updates.numpy()) == n
        expected_mean = mean0 + (x_adv.numpy().mean(axis=(0, 1, 2)) - mean0) * 0.1 / (1 - 0.9**n)
        np.testing.assert_allclose(layer.moving_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(clean_out.numpy(), _batch_norm_reference(layer, x.numpy()), atol=1e-4)
    assert layer.update_moving_statistics is True

    @tf.function
    def frozen_forward(images):
        with frozen_batch_statistics(layer):
            return layer(images, training=True)

    frozen_forward(x)  # traced inside the context: baked in as non-updating ...
    mean0, var0 = _stats(layer)
    frozen_forward(x)  # ... also when called later, outside any context
    np.testing.assert_array_equal(layer.moving_mean.numpy(), mean0)
    np.testing.assert_array_equal(layer.moving_variance.numpy(), var0)


# --------------------------------------------------------------------------------------------------
# Mixed precision


@pytest.mark.parametrize("policy, compute", [("mixed_bfloat16", tf.bfloat16), ("mixed_float16", tf.float16)])
def test_mixed_precision_logits_are_float32(policy, compute):
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(policy)
        model = randomize_weights(build_model("wrn-10-1", **DIGITS), seed=10)
        assert model.get_layer("init_conv").compute_dtype == compute.name
        assert model.get_layer("init_conv").kernel.dtype == "float32"
        assert model.get_layer("standardize").compute_dtype == "float32"
        x = _images((8, 8, 1), batch=2)
        for training in (False, True):
            logits = model(x, training=training)
            assert logits.dtype == tf.float32
            assert np.all(np.isfinite(logits.numpy()))
        with frozen_batch_statistics(model):
            assert model(x, training=True).dtype == tf.float32
            bn = model.get_layer("layer_0_block_0_batchnorm_1")
            assert bn(tf.zeros((1, 8, 8, 16), compute), training=True).dtype == compute
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == "float32"
