"""Tests for tfrobust.models.swish: the value is tf.nn.silu's, the fused gradient is as accurate as
tf.nn.silu's, and it is used exactly where the shape is static and large."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.models.swish import swish


def _gradient_function(shape, dtype, activation=swish):
    """A graph function returning activation(x) and its gradient against `dy`, traced for `shape`."""
    spec = tf.TensorSpec(shape, dtype)

    @tf.function(input_signature=[spec, spec])
    def value_and_gradient(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = activation(x)
        return y, tape.gradient(y, x, output_gradients=dy)

    return value_and_gradient.get_concrete_function()


def _calls_fused_gradient(concrete) -> bool:
    return any("swish_gradient" in f.signature.name for f in concrete.graph.as_graph_def().library.function)


def _silu_value_and_gradient(x, dy):
    """tf.nn.silu's value and gradient in a graph of the same shape (oneDNN fuses the value there)."""
    return _gradient_function(x.shape, x.dtype, tf.nn.silu)(x, dy)


# Tails of the sigmoid (|x| up to 30, where s or 1 - s underflows) and the region around 0.
X = np.concatenate([np.linspace(-30.0, 30.0, 601), np.random.default_rng(0).normal(0.0, 3.0, 423)]).astype(np.float32)
DY = np.random.default_rng(1).normal(0.0, 1.0, X.size).astype(np.float32)


@pytest.fixture
def fuse_any_size(monkeypatch):
    from tfrobust.models import swish as module

    monkeypatch.setattr(module, "FUSED_MIN_ELEMENTS", 1)


@pytest.mark.parametrize("dtype, tolerance", [(tf.float32, 1e-6), (tf.bfloat16, 2**-6), (tf.float16, 2**-9)])
def test_static_shape_gradient_is_fused_and_as_accurate_as_tf_nn_silu(dtype, tolerance, fuse_any_size):
    x, dy = tf.cast(X.reshape(4, 16, 16), dtype), tf.cast(DY.reshape(4, 16, 16), dtype)
    fused = _gradient_function(x.shape, dtype)
    assert _calls_fused_gradient(fused)
    y, dx = fused(x, dy)
    y_ref, dx_ref = _silu_value_and_gradient(x, dy)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(tf.cast(y, tf.float32).numpy(), tf.cast(y_ref, tf.float32).numpy())
    # Both against the exact gradient at the rounded inputs, relative to (|exact| + 1): rounding of the
    # result and of the intermediate values in `dtype`.
    x64, dy64 = (tf.cast(t, tf.float64).numpy() for t in (x, dy))
    s = 1.0 / (1.0 + np.exp(-x64))
    exact = dy64 * s * (1.0 + x64 * (1.0 - s))
    for gradient in (dx, dx_ref):
        error = np.abs(tf.cast(gradient, tf.float64).numpy() - exact) / (np.abs(exact) + 1.0)
        assert error.max() <= tolerance


def test_free_dimension_small_tensors_and_eager_mode_are_tf_nn_silu_itself():
    x, dy = tf.constant(X.reshape(4, 256)), tf.constant(DY.reshape(4, 256))
    free = _gradient_function([None, 256], tf.float32)
    assert not _calls_fused_gradient(free)
    assert not _calls_fused_gradient(_gradient_function([4, 256], tf.float32))  # 1,024 elements
    assert _calls_fused_gradient(_gradient_function([4, 256, 256], tf.float32))  # 2^18
    y_ref, dx_ref = _silu_value_and_gradient(x, dy)
    free_ref = _gradient_function([None, 256], tf.float32, tf.nn.silu)
    for actual, expected in zip(free(x, dy), free_ref(x, dy)):
        np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y, y_ref = swish(x), tf.nn.silu(x)
    np.testing.assert_array_equal(y.numpy(), y_ref.numpy())
    np.testing.assert_array_equal(
        tape.gradient(y, x, output_gradients=dy).numpy(), tape.gradient(y_ref, x, output_gradients=dy).numpy()
    )


def test_second_call_with_another_static_shape_does_not_retrace_the_fused_gradient(fuse_any_size):
    from tfrobust.models import swish as module

    before = module._fused_gradient(tf.float32).experimental_get_tracing_count()
    for shape in ((2, 3), (5, 7, 2)):
        x = tf.ones(shape)
        _gradient_function(shape, tf.float32)(x, x)
    assert module._fused_gradient(tf.float32).experimental_get_tracing_count() <= max(before, 1)


def test_activation_layer_serializes_under_the_registered_name():
    layer = keras.layers.Activation(swish, name="act")
    config = keras.saving.serialize_keras_object(layer)
    assert "tfrobust>swish" in str(config)
    revived = keras.saving.deserialize_keras_object(config)
    assert revived.activation is swish


def test_a_fit_on_fixed_size_batches_takes_the_fused_gradient(monkeypatch, fuse_any_size):
    from tfrobust.attacks.pgd import trades_attack
    from tfrobust.models import swish as module
    from tfrobust.models.registry import build_model
    from tfrobust.training.trainer import AdversarialTrainer

    traced_shapes = []
    static = module._swish_static

    def recording(x):
        traced_shapes.append(tuple(x.shape))
        return static(x)

    monkeypatch.setattr(module, "_swish_static", recording)
    network = build_model("wrn-10-1", input_shape=(8, 8, 1), num_classes=10, mean=(0.3,), std=(0.4,))
    trainer = AdversarialTrainer(network, loss="trades", attack=trades_attack("linf", 0.1, num_steps=1), seed=0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (20, 8, 8, 1)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 20)]
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8, drop_remainder=True)
    trainer.fit(data, epochs=1, verbose=0)
    activations = sum(isinstance(layer, keras.layers.Activation) for layer in network.layers)
    # Every activation of the clean pass, the attack's pass and the adversarial pass, at batch 8.
    assert len(traced_shapes) >= 3 * activations
    assert {shape[0] for shape in traced_shapes} == {8}
