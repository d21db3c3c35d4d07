"""tfrobust/training/checkpoint.py: every array is keyed by its group and its variable's path, loading
matches by key whatever the order, and a checkpoint that does not fit the model is one clear error line."""

import json
import os

import keras
import numpy as np
import pytest

from tfrobust.errors import UserError
from tfrobust.models.registry import build_model
from tfrobust.training import callbacks as cb
from tfrobust.training import checkpoint as ckpt
from tfrobust.training.optimizers import TraceSGD

SHAPE = (8, 8, 1)


def training_state(model_name="wrn-10-1", seed=0):
    """A network compiled with TraceSGD (built), its WeightAveraging and ModelSelection, every variable
    (weights, BatchNorm statistics, averages, update counts, traces) set to random values."""
    network = build_model(model_name, input_shape=SHAPE, num_classes=10, mean=(0.5,), std=(0.25,))
    network.compile(optimizer=TraceSGD(learning_rate=0.1, momentum=0.9))
    network.optimizer.build(network.trainable_variables)
    averaging = cb.WeightAveraging(network, 0.99)
    selection = cb.ModelSelection(averaging, lambda model: {}, every=0, total_epochs=1, best_path="unused")
    rng = np.random.default_rng(seed)
    for variable in [*network.weights, *averaging.state_variables(), *network.optimizer.variables]:
        shape = tuple(variable.shape)
        if "int" in str(variable.dtype):
            variable.assign(rng.integers(1, 1000, shape).astype(variable.dtype))
        else:
            variable.assign(rng.normal(size=shape).astype(variable.dtype))
    return network, averaging, selection


def save(path, network, averaging, selection):
    callback = cb.TrainingCheckpoint(path, averaging, selection, epoch_examples=400)
    callback.set_model(network)
    callback.on_epoch_end(0)


def snapshot(network, averaging):
    return {
        "network": {w.path: w.numpy() for w in network.weights},
        "averaging": [v.numpy() for v in averaging.state_variables()],
        "optimizer": {v.path: v.numpy() for v in network.optimizer.variables},
    }


def test_keys_are_variable_paths(tmp_path):
    network, averaging, selection = training_state()
    path = str(tmp_path / "checkpoint.npz")
    save(path, network, averaging, selection)
    trainable = [w.path for w in network.trainable_weights]
    with np.load(path) as data:
        files = set(data.files)
        assert files == {
            "state_json",
            *(f"network/{w.path}" for w in network.weights),
            *(f"averaging/{p}" for p in trainable),
            "averaging/num_updates",
            *(f"optimizer/{v.path}" for v in network.optimizer.variables),
        }
        assert "network/layer_0_block_0_conv_0/kernel" in files
        assert "optimizer/trace_sgd/layer_0_block_0_conv_0_kernel_trace" in files
        assert not any(name.rsplit("/", 1)[-1].isdigit() or "ema_" in name for name in files)  # no positions
        for w in network.weights:
            np.testing.assert_array_equal(data[f"network/{w.path}"], w.numpy())
        for p, average in zip(trainable, averaging.averages):  # each average under its weight's path
            np.testing.assert_array_equal(data[f"averaging/{p}"], average.numpy())
        assert int(data["averaging/num_updates"]) == int(averaging.num_updates.numpy())
        for v in network.optimizer.variables:
            np.testing.assert_array_equal(data[f"optimizer/{v.path}"], v.numpy())
        state = json.loads(str(data["state_json"]))
    assert state["epoch"] == 1 and state["epoch_examples"] == 400 and state["optimizer"] == "TraceSGD"
    assert state["checkpoint_format"] == ckpt.CHECKPOINT_FORMAT
    assert ckpt.read_state(path) == {k: v for k, v in state.items() if k != "checkpoint_format"}

    # Restored into a freshly built run (other random values), every variable gets its saved value.
    network2, averaging2, selection2 = training_state(seed=1)
    assert cb.restore(path, network2, averaging2, selection2, epoch_examples=400) == 1
    want, got = snapshot(network, averaging), snapshot(network2, averaging2)
    for key in want["network"]:
        np.testing.assert_array_equal(got["network"][key], want["network"][key], err_msg=key)
    for a, b in zip(got["averaging"], want["averaging"]):
        np.testing.assert_array_equal(a, b)
    for key in want["optimizer"]:
        np.testing.assert_array_equal(got["optimizer"][key], want["optimizer"][key], err_msg=key)


def test_a_mid_epoch_checkpoint_round_trips_its_step_and_metrics(tmp_path):
    """`TrainingCheckpoint.save(epoch_step=...)` (a stop request, training/faults.py) records the step within
    the epoch and the metrics' running sums; `restore_position` gives them back; an epoch's end has step 0."""
    import keras

    network, averaging, selection = training_state()
    path = str(tmp_path / "checkpoint.npz")
    callback = cb.TrainingCheckpoint(path, averaging, selection, epoch_examples=400)
    callback.set_model(network)
    loss = keras.metrics.Mean(name="loss")
    loss.update_state(2.0)
    loss.update_state(4.0)
    callback.save(3, epoch_step=5, extra_groups={"metrics": ckpt.by_path(loss.variables, "metrics")})
    assert ckpt.read_state(path)["epoch_step"] == 5
    network2, averaging2, selection2 = training_state(seed=1)
    epochs, step, metrics = cb.restore_position(path, network2, averaging2, selection2, epoch_examples=400)
    assert (epochs, step) == (3, 5)
    assert {key: float(value) for key, value in metrics.items()} == {"loss/total": 6.0, "loss/count": 2.0}
    np.testing.assert_array_equal(network2.weights[0].numpy(), network.weights[0].numpy())

    callback.save(4)  # an epoch's end
    assert cb.restore_position(path, network2, averaging2, selection2)[:2] == (4, 0)
    groups, state = ckpt.load_arrays(path)  # a mid-epoch state without its metrics cannot continue exactly
    ckpt.save_arrays(path, {k: v for k, v in groups.items() if k != "metrics"}, {**state, "epoch_step": 2})
    with pytest.raises(UserError, match="a mid-epoch checkpoint without its 'metrics' arrays"):
        cb.restore_position(path, network2, averaging2, selection2)


def test_a_checkpoint_of_another_width_or_depth_is_one_clear_line(tmp_path):
    network, averaging, selection = training_state("wrn-10-1")
    path = str(tmp_path / "checkpoint.npz")
    save(path, network, averaging, selection)

    wider, wider_averaging, wider_selection = training_state("wrn-10-2", seed=1)
    before = [w.numpy() for w in wider.weights]
    with pytest.raises(UserError) as error:
        cb.restore(path, wider, wider_averaging, wider_selection)
    message = str(error.value)
    assert "\n" not in message
    # Width 2 adds a shortcut conv to the first block and doubles every channel count.
    assert message.startswith(
        f"checkpoint {path} does not fit this model: network is missing 1 variable "
        "(layer_0_block_0_shortcut/kernel); network has "
    )
    assert (
        "variables of another shape (model vs checkpoint: layer_0_block_0_conv_0/kernel (3, 3, 16, 32) vs "
        "(3, 3, 16, 16), " in message
    )
    for a, w in zip(before, wider.weights):  # nothing was assigned
        np.testing.assert_array_equal(a, w.numpy())

    wider_path = str(tmp_path / "wider.npz")
    save(wider_path, wider, wider_averaging, wider_selection)
    deeper, deeper_averaging, deeper_selection = training_state("wrn-16-2", seed=1)
    with pytest.raises(UserError) as error:
        cb.restore(wider_path, deeper, deeper_averaging, deeper_selection)
    message = str(error.value)
    missing = len(deeper.weights) - len(wider.weights)
    assert "\n" not in message
    assert f"does not fit this model: network is missing {missing} variables (layer_0_block_1_" in message

    best = tmp_path / "best.npz"
    ckpt.save_arrays(str(best), {"network": {w.path: w.numpy() for w in network.weights}}, {"best": {}})
    with pytest.raises(UserError, match=r"best.npz does not fit this model: network is missing 1 variable"):
        cb.load_best_weights(str(best), wider)


def test_missing_unexpected_and_reshaped_keys_are_named():
    variables = {name: keras.Variable(np.zeros(2, np.float32), name=name) for name in "abcde"}
    arrays = {"a": np.zeros(2), "b": np.zeros(3), "x": np.zeros(2)}
    with pytest.raises(UserError) as error:
        ckpt.assign_group(variables, arrays, "network", "run/checkpoint.npz")
    assert str(error.value) == (
        "checkpoint run/checkpoint.npz does not fit this model: network is missing 3 variables (c, d, e); "
        "network has 1 variable this model lacks (x); "
        "network has 1 variable of another shape (model vs checkpoint: b (2,) vs (3,))"
    )
    many = {f"v{i}": np.zeros(2) for i in range(5)}
    with pytest.raises(UserError, match=r"missing 5 variables \(v0, v1, v2, \.\.\.\)"):
        ckpt.assign_group({**many, **variables}, dict(variables), "optimizer", "c.npz")


def test_arrays_load_by_key_whatever_the_order(tmp_path):
    def two_branches(order, seed):
        """One function; its two Dense branches called in the given order, so `weights` lists them so."""
        inputs = keras.Input((3,))
        outputs = keras.layers.Add()([keras.layers.Dense(2, name=name)(inputs) for name in order])
        model = keras.Model(inputs, outputs)
        rng = np.random.default_rng(seed)
        for w in model.weights:
            w.assign(rng.normal(size=tuple(w.shape)).astype(np.float32))
        return model

    saved = two_branches(("left", "right"), seed=0)
    loaded = two_branches(("right", "left"), seed=1)
    assert [w.path for w in saved.weights] != [w.path for w in loaded.weights]
    assert sorted(w.path for w in saved.weights) == sorted(w.path for w in loaded.weights)
    path = str(tmp_path / "best.npz")
    # Written in a third order (reversed), loaded into the second.
    ckpt.save_arrays(path, {"network": {w.path: w.numpy() for w in reversed(saved.weights)}}, {"best": {"epoch": 2}})
    assert cb.load_best_weights(path, loaded) == {"epoch": 2}
    want = {w.path: w.numpy() for w in saved.weights}
    for w in loaded.weights:
        np.testing.assert_array_equal(w.numpy(), want[w.path], err_msg=w.path)
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), saved(x).numpy(), rtol=1e-6)


def test_a_positional_checkpoint_is_refused_as_an_older_format(tmp_path):
    path = str(tmp_path / "checkpoint.npz")
    np.savez(
        path,
        state_json=np.array(json.dumps({"epoch": 3, "epoch_examples": 400})),
        **{"network/00000": np.zeros(3), "network/00001": np.zeros(2)},
    )
    with pytest.raises(
        UserError,
        match=r"^checkpoint .*checkpoint.npz is of an older tfrobust format \(variables "
        r"stored by position",
    ):
        ckpt.load_arrays(path)
    assert ckpt.read_state(path) == {"epoch": 3, "epoch_examples": 400}  # its state stays readable (report)


def test_unreadable_and_missing_checkpoints(tmp_path):
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(UserError, match="no checkpoint at"):
        ckpt.read_state(str(path))
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    for read in (ckpt.read_state, ckpt.load_arrays):
        with pytest.raises(UserError, match=r"^unreadable checkpoint .*BadZipFile"):
            read(str(path))


def test_variables_sharing_a_path_cannot_be_checkpointed():
    twins = [keras.Variable(np.zeros(2), name="kernel"), keras.Variable(np.ones(2), name="kernel")]
    assert twins[0].path == twins[1].path
    with pytest.raises(UserError, match="two of its variables have the path 'kernel'"):
        ckpt.by_path(twins, "network")
    with pytest.raises(ValueError, match="reserved"):
        ckpt.save_arrays(os.devnull, {}, {"checkpoint_format": 1})
