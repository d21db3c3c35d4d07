"""Helpers shared by the tests: models with random weights, a small real dataset, tiny training runs,
and linear models whose worst case under attack is known exactly."""

import os

import numpy as np
import tensorflow as tf

# The repository root (scripts and the package are found from it).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def randomize_weights(model, seed: int = 0):
    """Gives every conv/dense/BatchNorm weight of `model` a random value, BN moving statistics included.

    The zero-initialised logits layer would otherwise make every output 0, and fresh moving statistics
    (mean 0, variance 1) would hide whether inference mode uses them.
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.1, c).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0.0, 0.2, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            for weight in layer.weights:
                shape = tuple(weight.shape)
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                scale = np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.1
                weight.assign(rng.normal(0.0, scale, shape).astype(np.float32))
    return model


def tiny_conv_bn_network():
    """Conv -> Keras BatchNorm -> ReLU -> pool -> float32 logits on 6x6x1 images, 3 classes, seeded, built
    under the current mixed-precision policy (the precision tests' network)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu", name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, dtype="float32", name="logits")(x), name="tiny")


def write_digits_npz(path, n: int = 400) -> str:
    """A small real dataset for training tests: the first `n` scikit-learn digits as uint8 8x8x1 npz."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images[:n] * 255.0 / 16.0).astype(np.uint8)[..., None]
    np.savez(path, image=images, label=digits.target[:n].astype(np.int64))
    return str(path)


def tiny_train_args(npz: str, out: str, export_dir: str, epochs: int = 2) -> list[str]:
    """CLI arguments of a training run that takes seconds: wrn-10-1 on a 400-image digits npz."""
    return [
        "train",
        "--dataset",
        f"npz:{npz}",
        "--model",
        "wrn-10-1",
        "--batch-size",
        "32",
        "--epochs",
        str(epochs),
        "--val-size",
        "64",
        "--eval-every",
        "1",
        "--attack-steps",
        "2",
        "--warmup-epochs",
        "1",
        "--eps",
        "0.1",
        "--ema-decay",
        "0.9",
        "--export-dir",
        export_dir,
        "--out",
        out,
    ]


def linear(classes, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    kernel = (scale * rng.normal(size=(16, classes))).astype(np.float32)
    # Centred: the decision boundaries pass near the middle of the box, so points of both kinds (breakable
    # and robust at small eps) exist.
    bias = (-0.5 * kernel.sum(axis=0) + 0.1 * rng.normal(size=classes)).astype(np.float32)
    k, b = tf.constant(kernel), tf.constant(bias)

    def model_fn(images):
        return tf.matmul(tf.reshape(images, [-1, 16]), k) + b

    return model_fn, kernel.astype(np.float64), bias.astype(np.float64)


def linear_one_direction(classes, seed=0):
    """A linear model of 4x4x1 images whose logits all depend on x through u = ⟨s, x⟩ alone, s ∈ {±1}^16:
    z_j = c_j·u + b_j. Every logit difference has coefficients of equal magnitude, so each unit of L1 mass
    is worth the same on every coordinate it may move (the knapsack of `worst_l1_margin` has no order to
    find), and every loss's input gradient is ±s: sign steps are steepest ascent, the case in which
    APGD-L1's equal steps over its top-k coordinates reach the exact worst case."""
    rng = np.random.default_rng(seed)
    s = rng.choice([-1.0, 1.0], size=16)
    c = 2.0 * rng.normal(size=classes)
    kernel = s[:, None] * c[None, :]
    bias = -0.5 * kernel.sum(axis=0) + 0.3 * rng.normal(size=classes)
    k, b = tf.constant(kernel, tf.float32), tf.constant(bias, tf.float32)

    def model_fn(images):
        return tf.matmul(tf.reshape(images, [-1, 16]), k) + b

    return model_fn, kernel.astype(np.float32).astype(np.float64), bias.astype(np.float32).astype(np.float64)


def images(n, seed=1, low=0.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=(n, 4, 4, 1)).astype(np.float32)


def worst_linf_margin(x, y, kernel, bias, eps):
    """max over ball ∩ box of max_{j≠y} z_j − z_y, per example (exact for a linear model)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    low, high = np.maximum(flat - eps, 0.0), np.minimum(flat + eps, 1.0)
    out = np.full(len(x), -np.inf)
    for i in range(len(x)):
        for j in range(kernel.shape[1]):
            if j != y[i]:
                w = kernel[:, j] - kernel[:, y[i]]
                out[i] = max(out[i], np.sum(np.where(w > 0, w * high[i], w * low[i])) + bias[j] - bias[y[i]])
    return out


def knapsack_l1_gain(w, x, eps):
    """max ⟨w, d⟩ over ‖d‖₁ <= eps, x + d ∈ [0, 1]^D: a fractional knapsack (every unit of L1 mass is
    worth |w_i| on coordinate i, which holds room_i = 1 − x_i (w_i > 0) or x_i (w_i < 0) of it), solved
    greedily by decreasing |w_i|."""
    w, x = np.asarray(w, np.float64).ravel(), np.asarray(x, np.float64).ravel()
    room = np.where(w > 0, 1.0 - x, x)
    gain, left = 0.0, eps
    for i in np.argsort(-np.abs(w), kind="stable"):
        if left <= 0 or w[i] == 0:
            break
        take = min(room[i], left)
        gain += abs(w[i]) * take
        left -= take
    return gain


def worst_l1_margin(x, y, kernel, bias, eps):
    """max over L1 ball ∩ box of max_{j≠y} z_j − z_y, per example (exact for a linear model)."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    out = np.full(len(x), -np.inf)
    for i in range(len(x)):
        for j in range(kernel.shape[1]):
            if j != y[i]:
                w = kernel[:, j] - kernel[:, y[i]]
                out[i] = max(out[i], flat[i] @ w + bias[j] - bias[y[i]] + knapsack_l1_gain(w, flat[i], eps))
    return out


def check_inside(adv, x, norm, eps):
    adv, x = np.asarray(adv), np.asarray(x)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    d = (adv - x).reshape(len(x), -1).astype(np.float64)
    if norm == "linf":
        n = np.abs(d).max(1)
    elif norm == "l1":
        n = np.abs(d).sum(1)
    else:
        n = np.sqrt((d**2).sum(1))
    assert np.all(n <= eps * (1 + 1e-6) + 1e-6)


def exact_linf_distance(x, y, kernel, bias):
    """Minimum Linf distance inside [0, 1] to misclassification (any class) of a linear model, by bisection
    on `worst_linf_margin`."""
    out = []
    for i in range(len(x)):
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if worst_linf_margin(x[i : i + 1], y[i : i + 1], kernel, bias, mid)[0] < 0 else (lo, mid)
        out.append(hi)
    return np.array(out)
