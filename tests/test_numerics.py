"""Tests for tfrobust.numerics: TensorFloat-32 off for attacks, verdicts and model selection."""

import keras
import pytest
import tensorflow as tf

from tfrobust.numerics import full_float32, numerics_record, tf32_enabled
from tfrobust.training import callbacks as cb


@pytest.fixture
def tf32_on():
    previous = tf32_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(True)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(previous)


def test_full_float32_turns_tf32_off_and_restores_it(tf32_on):
    assert tf32_enabled() and numerics_record() == {"tf32": True}
    with full_float32():
        assert not tf32_enabled() and numerics_record() == {"tf32": False}
        with full_float32():
            assert not tf32_enabled()
        assert not tf32_enabled()  # the inner block restores the outer block's setting
    assert tf32_enabled()
    with pytest.raises(RuntimeError):
        with full_float32():
            raise RuntimeError("interrupted")
    assert tf32_enabled()  # restored on an exception too


def test_model_selection_evaluates_without_tf32(tf32_on, tmp_path):
    network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    averaging = cb.WeightAveraging(network, 0.9)
    seen = []

    def evaluate(model):
        seen.append(tf32_enabled())
        return {"clean_accuracy": 0.5, "robust_accuracy": 0.25}

    selection = cb.ModelSelection(averaging, evaluate, every=1, total_epochs=1, best_path=str(tmp_path / "best.npz"))
    logs = {}
    selection.on_epoch_end(0, logs)
    assert seen == [False, False]  # raw and averaged weights
    assert logs["val_avg_pgd40_accuracy"] == 0.25
    assert tf32_enabled()
