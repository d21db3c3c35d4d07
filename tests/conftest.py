"""Shared test setup: quiet TensorFlow logging and small helpers for models with random weights."""

import os

# Must be set before TensorFlow is first imported (by any test module).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


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
        "train", "--dataset", f"npz:{npz}", "--model", "wrn-10-1", "--batch-size", "32", "--epochs", str(epochs),
        "--val-size", "64", "--eval-every", "1", "--attack-steps", "2", "--warmup-epochs", "1", "--eps", "0.1",
        "--ema-decay", "0.9", "--export-dir", export_dir, "--out", out,
    ]
