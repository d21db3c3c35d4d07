"""examples/ run at their --tiny size in a fresh process, as a user runs them; what they write reloads."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from support import REPO


def run_example(name, out):
    env = {**os.environ, "PYTHONPATH": REPO}
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", name), "--tiny", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_train_your_own_model(tmp_path):
    line = run_example("train_your_own_model.py", tmp_path)
    accuracy = float(re.search(r"clean accuracy ([0-9.]+) on 128 test images", line).group(1))
    assert 0.0 <= accuracy <= 1.0
    model = keras.saving.load_model(tmp_path / "averaged.keras", safe_mode=True)
    images = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype(np.float32)
    saved_model = tf.saved_model.load(str(tmp_path / "saved_model"))  # held: its variables live in it
    served = saved_model.serve(tf.constant(images))
    np.testing.assert_allclose(served.numpy(), model(images).numpy(), rtol=1e-5, atol=1e-5)


def test_finetune_keras_application(tmp_path):
    line = run_example("finetune_keras_application.py", tmp_path)
    assert re.search(r"clean accuracy [0-9.]+ on 64 test images", line), line
    model = keras.saving.load_model(tmp_path / "finetuned.keras", safe_mode=True)
    # The saved model takes [0, 1] images: its first layer maps them to the 0..255 MobileNetV3 expects.
    assert model.get_layer("input_range").get_config()["scale"] == 255.0
    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)
