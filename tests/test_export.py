"""Tests for tfrobust.export: TF Serving layout, endpoints, metadata, versions, and loading any model back."""

import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import randomize_weights

from tfrobust.errors import UserError
from tfrobust.export import (
    METADATA_PATH,
    export_metadata,
    export_network,
    load_model,
    resolve_model_dir,
)
from tfrobust.models.batch_norm import frozen_batch_statistics
from tfrobust.models.registry import build_model
from tfrobust.models.standardize import Standardize

SHAPE = (8, 8, 1)
METADATA = {
    "dataset": {"name": "digits", "num_classes": 10, "class_names": [str(i) for i in range(10)]},
    "norm": "linf",
    "eps": 8 / 255,
    "validation": {"clean_accuracy": 0.5, "robust_accuracy": 0.25},
    "training_config": {"model": "wrn-10-1", "batch_size": 16, "nested": [1, 2.5, None, True]},
}


def _images(shape=SHAPE, batch=6, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0.0, 1.0, (batch, *shape)).astype(np.float32))


def _linear_model(classes=3, softmax=False, seed=0):
    """A tiny functional model on 4x4x1 images (exports in well under a second)."""
    inputs = keras.Input((4, 4, 1), name="images")
    x = Standardize((0.5,), (0.25,), name="standardize")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.get_layer("logits").set_weights(
        [rng.normal(size=(16, classes)).astype(np.float32), rng.normal(size=classes).astype(np.float32)]
    )
    return model


def _probability_warnings(record):
    return [w for w in record if "probabilities" in str(w.message)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A wrn-10-1 with random weights and random BN moving statistics, exported once for the module."""
    network = randomize_weights(build_model("wrn-10-1", input_shape=SHAPE, num_classes=10, mean=(0.3,), std=(0.4,)))
    root = str(tmp_path_factory.mktemp("saved_models"))
    path = export_network(network, root=root, name="digits-wrn", metadata=METADATA)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loaded = load_model(path)
    assert not _probability_warnings(record)  # logits do not look like probabilities
    return network, root, path, loaded


# --------------------------------------------------------------------------------------------------
# Endpoints


def test_layout_and_files(exported):
    _, root, path, loaded = exported
    assert path == os.path.join(root, "digits-wrn", "1")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.path.isdir(os.path.join(path, "variables"))
    assert os.path.isfile(os.path.join(path, METADATA_PATH))
    assert loaded.path == path
    assert sorted(os.listdir(os.path.join(root, "digits-wrn"))) == ["1"]  # no temporary directory left


def test_exported_logits_match_keras(exported):
    network, _, _, loaded = exported
    x = _images(batch=8, seed=1)
    expected = network(x, training=False).numpy()
    # The random moving statistics matter: batch statistics would give something else.
    with frozen_batch_statistics(network):  # (without updating the moving statistics)
        assert not np.allclose(network(x, training=True).numpy(), expected, atol=1e-3)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(loaded.logits(x).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(loaded.keepalive.logits(x).numpy(), expected, atol=1e-5)
    # Exporting must not have changed the network's moving statistics.
    np.testing.assert_array_equal(network(x, training=False).numpy(), expected)


def test_serving_default_outputs(exported):
    network, _, _, loaded = exported
    signature = loaded.keepalive.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["images"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, *SHAPE]
    x = _images(batch=5, seed=2)
    out = signature(images=x)
    assert set(out) == {"logits", "probabilities", "classes"}
    assert out["logits"].dtype == tf.float32 and out["logits"].shape == (5, 10)
    assert out["probabilities"].dtype == tf.float32 and out["probabilities"].shape == (5, 10)
    assert out["classes"].dtype == tf.int64 and out["classes"].shape == (5,)
    logits = network(x, training=False).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), logits, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=1e-6)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy(), logits.argmax(-1))


def test_metadata_round_trip(exported):
    _, _, path, loaded = exported
    with open(os.path.join(path, METADATA_PATH)) as handle:
        on_disk = json.load(handle)
    assert on_disk == loaded.metadata
    assert loaded.metadata["format"] == "tfrobust-savedmodel-1"
    assert loaded.metadata["input_shape"] == list(SHAPE)
    for key, value in METADATA.items():
        assert loaded.metadata[key] == value


def test_export_metadata_fields_are_defined_once(tmp_path):
    import tfrobust
    from tfrobust.data.datasets import DatasetInfo

    info = DatasetInfo(
        name="digits",
        num_classes=2,
        class_names=("zero", "one"),
        image_shape=(8, 8, 1),
        mean=(0.3,),
        std=(0.4,),
        allow_flip=False,
    )
    metadata = export_metadata(
        dataset=info, norm="l2", eps=0.5, weights="imported", arch="wrn-10-1", source={"sha256": None}
    )
    assert metadata == {
        "tfrobust_version": tfrobust.__version__,
        "tensorflow_version": tf.__version__,
        "dataset": {
            "name": "digits",
            "num_classes": 2,
            "class_names": ("zero", "one"),
            "image_shape": (8, 8, 1),
            "mean": (0.3,),
            "std": (0.4,),
            "allow_flip": False,
        },
        "norm": "l2",
        "eps": 0.5,
        "weights": "imported",
        "arch": "wrn-10-1",
        "source": {"sha256": None},
    }
    for taken in ("tfrobust_version", "format", "input_shape", "features"):
        with pytest.raises(ValueError, match=taken):
            export_metadata(dataset=info, norm="l2", eps=0.5, weights="imported", **{taken: 1})
    # Written by export_network as the JSON every export carries.
    path = export_network(_linear_model(), root=str(tmp_path), name="lin", metadata=metadata)
    with open(os.path.join(path, METADATA_PATH)) as handle:
        text = handle.read()
    assert text == json.dumps(
        {
            **json.loads(json.dumps(metadata)),
            "format": "tfrobust-savedmodel-1",
            "input_shape": [4, 4, 1],
            "features": {"layer": "logits", "size": 16},
        },
        indent=2,
        sort_keys=True,
    )


def test_gradients_through_reloaded_logits_match_keras(exported):
    network, _, _, loaded = exported
    x = _images(batch=4, seed=3)
    weights = tf.constant(np.random.default_rng(4).normal(size=(4, 10)).astype(np.float32))

    def grad(fn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            objective = tf.reduce_sum(fn(x) * weights)
        return tape.gradient(objective, x)

    g_loaded = grad(loaded.logits)
    g_keras = grad(lambda images: network(images, training=False))
    assert g_loaded is not None
    assert np.abs(g_loaded.numpy()).max() > 1e-4
    assert np.count_nonzero(g_loaded.numpy()) > g_loaded.numpy().size // 2
    np.testing.assert_allclose(g_loaded.numpy(), g_keras.numpy(), atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Versions


def test_versions_increment_and_never_overwrite(tmp_path):
    root = str(tmp_path)
    model = _linear_model()
    first = export_network(model, root=root, name="lin", metadata={"run": 1})
    second = export_network(model, root=root, name="lin", metadata={"run": 2})
    assert first == os.path.join(root, "lin", "1") and second == os.path.join(root, "lin", "2")
    with open(os.path.join(first, "saved_model.pb"), "rb") as handle:
        before = handle.read()
    with pytest.raises(UserError, match="already exists"):
        export_network(_linear_model(seed=5), root=root, name="lin", metadata={"run": 3}, version=1)
    with open(os.path.join(first, "saved_model.pb"), "rb") as handle:
        assert handle.read() == before
    assert load_model(first).metadata["run"] == 1
    assert sorted(os.listdir(os.path.join(root, "lin"))) == ["1", "2"]


def test_base_dir_resolves_to_highest_numeric_version(tmp_path):
    root = str(tmp_path)
    x = _images((4, 4, 1), batch=3)
    models = {v: _linear_model(seed=v) for v in (2, 9, 10)}
    for version, model in models.items():
        export_network(model, root=root, name="lin", metadata={"v": version}, version=version)
    base = os.path.join(root, "lin")
    os.makedirs(os.path.join(base, "11"))  # a version being written / broken: no saved_model.pb
    os.makedirs(os.path.join(base, "not-a-version"))
    assert resolve_model_dir(base) == os.path.join(base, "10")  # numeric, not lexicographic, order
    loaded = load_model(base)
    assert loaded.path == os.path.join(base, "10") and loaded.metadata["v"] == 10
    np.testing.assert_allclose(loaded.logits(x).numpy(), models[10](x).numpy(), atol=1e-5)
    # Without an explicit version the next one follows the highest directory name.
    assert export_network(models[2], root=root, name="lin", metadata={}) == os.path.join(base, "12")
    # A version directory is used as it is.
    assert load_model(os.path.join(base, "2")).metadata["v"] == 2


# --------------------------------------------------------------------------------------------------
# Errors


def test_missing_and_invalid_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no model"):
        load_model(str(tmp_path / "nothing-here"))
    with pytest.raises(UserError, match="no model"):
        load_model(str(tmp_path / "nothing.keras"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("not a model")
    with pytest.raises(UserError, match="neither a SavedModel"):
        load_model(str(empty))
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(UserError, match="cannot load"):
        load_model(str(garbage))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError, match="cannot load SavedModel"):
        load_model(str(broken))


# --------------------------------------------------------------------------------------------------
# Other model formats


def test_keras_file_loads(tmp_path):
    model = _linear_model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loaded = load_model(path)
    assert not _probability_warnings(record)
    assert loaded.metadata == {} and loaded.path == path
    x = _images((4, 4, 1), batch=5)
    np.testing.assert_allclose(loaded.logits(x).numpy(), model(x).numpy(), atol=1e-6)
    assert loaded.logits(x).dtype == tf.float32


def test_keras_wrn_file_loads(tmp_path):
    network = randomize_weights(build_model("wrn-10-1", input_shape=SHAPE, num_classes=10, mean=(0.3,), std=(0.4,)))
    path = str(tmp_path / "wrn.keras")
    network.save(path)
    loaded = load_model(path)
    x = _images(batch=4, seed=6)
    np.testing.assert_allclose(loaded.logits(x).numpy(), network(x, training=False).numpy(), atol=1e-5)


def test_softmax_model_warns(tmp_path):
    path = str(tmp_path / "softmax.keras")
    _linear_model(softmax=True).save(path)
    # The check runs at load time, so it also fires for `tfrobust eval`, which calls the model only
    # inside tf.function (where outputs cannot be inspected).
    with pytest.warns(UserWarning, match="probabilities"):
        loaded = load_model(path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loaded.logits(_images((4, 4, 1), batch=2))
    assert not _probability_warnings(record)  # once only

    exported = export_network(_linear_model(softmax=True), root=str(tmp_path), name="soft", metadata={})
    with pytest.warns(UserWarning, match="probabilities"):
        load_model(exported)


class _Plain(tf.Module):
    """A non-tfrobust model: linear logits on 4x4x1 images, served under the output key `key`."""

    def __init__(self, key="logits", softmax=False):
        super().__init__()
        rng = np.random.default_rng(11)
        self.kernel = tf.Variable(rng.normal(size=(16, 3)).astype(np.float32))
        self.key, self.softmax = key, softmax

    def forward(self, images):
        z = tf.reshape(images, [-1, 16]) @ self.kernel
        return tf.nn.softmax(z) if self.softmax else z

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32, name="pixels")])
    def serve(self, pixels):
        outputs = {self.key: self.forward(pixels)}
        if self.key == "logits":
            outputs["classes"] = tf.argmax(outputs["logits"], axis=-1)
        return outputs


def _save_plain(module, path):
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def test_plain_saved_model_loads_through_serving_default(tmp_path):
    module = _Plain()
    path = _save_plain(module, str(tmp_path / "plain"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loaded = load_model(path)
    assert not _probability_warnings(record)
    assert loaded.metadata == {} and loaded.path == path
    x = _images((4, 4, 1), batch=4)
    expected = module.forward(x).numpy()
    np.testing.assert_allclose(loaded.logits(x).numpy(), expected, atol=1e-5)
    # Differentiable through the signature, as the attacks need.
    with tf.GradientTape() as tape:
        tape.watch(x)
        objective = tf.reduce_sum(loaded.logits(x)[:, 0])
    gradient = tape.gradient(objective, x).numpy()
    np.testing.assert_allclose(
        gradient, np.broadcast_to(module.kernel.numpy()[:, 0].reshape(4, 4, 1), gradient.shape), atol=1e-6
    )


def test_plain_saved_model_output_choice(tmp_path):
    single = _Plain(key="scores")
    loaded = load_model(_save_plain(single, str(tmp_path / "single")))
    x = _images((4, 4, 1), batch=2)
    np.testing.assert_allclose(loaded.logits(x).numpy(), single.forward(x).numpy(), atol=1e-5)

    with pytest.warns(UserWarning, match="probabilities"):
        load_model(_save_plain(_Plain(key="probs", softmax=True), str(tmp_path / "probs")))

    class TwoOutputs(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32)])
        def serve(self, images):
            flat = tf.reshape(images, [-1, 16])
            return {"a": flat[:, :3], "b": flat[:, 3:6]}

    two = TwoOutputs()
    with pytest.raises(UserError, match="expected 'logits'"):
        load_model(_save_plain(two, str(tmp_path / "two")))

    no_signature = tf.Module()
    no_signature.v = tf.Variable(1.0)
    tf.saved_model.save(no_signature, str(tmp_path / "nosig"))
    with pytest.raises(UserError, match="no serving_default"):
        load_model(str(tmp_path / "nosig"))
