"""tfrobust.inspection: an untrusted model is checked before anything in it runs (SavedModel ops, .keras config).

The crafted SavedModels write only into `tmp_path`. Where one writes a file, the test also shows (with
`trust_model=True`) that the file is written once the model is allowed to run: the refusal is what kept it
from being written. Others edit a real export's `saved_model.pb` (protobuf only, nothing runs).
"""

import json
import os
import shutil
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import randomize_weights
from tensorflow.core.protobuf import saved_model_pb2

from tfrobust.errors import UserError
from tfrobust.export import export_network, load_model
from tfrobust.inspection import (
    CHECKPOINT_READ_OPS,
    CHECKPOINT_WRITE_OPS,
    INFERENCE_OPS,
    inspect_keras_file,
    inspect_saved_model,
    saved_model_ops,
)
from tfrobust.models.registry import build_model

SPEC = tf.TensorSpec([None, 4, 4, 1], tf.float32, name="images")


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def _logits(images):
    return tf.reshape(images, [-1, 16])[:, :3] * 2.0 - 1.0


def _save_serving(tmp_path, name, body):
    """A SavedModel whose serving_default runs `body(images)` (for its side effect) and returns logits."""

    class Crafted(tf.Module):
        @tf.function(input_signature=[SPEC])
        def serve(self, images):
            with tf.control_dependencies(body(images)):
                return {"logits": tf.identity(_logits(images))}

    module = Crafted()
    path = str(tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.py_function's "not serializable" warning
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


# --------------------------------------------------------------------------------------------------
# Refused SavedModels


def test_serving_function_that_writes_a_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "written.txt"
    path = _save_serving(tmp_path, "writer", lambda images: [tf.io.write_file(str(marker), "pwned")])
    assert not marker.exists()

    with pytest.raises(UserError) as excinfo:
        inspect_saved_model(path)
    message = _one_line(excinfo)
    assert message.startswith(f"refusing to run model {path}: function __inference_serve_")
    assert "uses op WriteFile (file system); pass --trust-model" in message
    assert not marker.exists()

    with pytest.raises(UserError, match=r"function __inference_serve_\d+ uses op WriteFile \(file system\)"):
        load_model(path)
    assert not marker.exists()

    # Trusted, the model loads and load_model's probe runs it: the file the check kept from being written.
    loaded = load_model(path, trust_model=True)
    assert marker.read_text() == "pwned"
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (2, 4, 4, 1)).astype(np.float32))
    np.testing.assert_allclose(loaded.logits(x).numpy(), _logits(x).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "name, body, op",
    [
        ("py_function", lambda x: [tf.py_function(lambda t: t, [x], tf.float32)], "EagerPyFunc"),
        ("numpy_function", lambda x: [tf.numpy_function(lambda t: t, [x], tf.float32)], "PyFunc"),
    ],
)
def test_python_callbacks_are_refused(tmp_path, name, body, op):
    path = _save_serving(tmp_path, name, body)
    with pytest.raises(UserError) as excinfo:
        load_model(path)
    assert f"uses op {op} (Python)" in _one_line(excinfo)


def test_reading_a_file_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    path = _save_serving(tmp_path, "reader", lambda images: [tf.io.read_file(str(secret))])
    with pytest.raises(UserError, match=r"function __inference_serve_\d+ uses op ReadFile \(file system\)"):
        load_model(path)


def test_write_inside_a_while_body_is_found(tmp_path):
    """Nested function bodies are inspected: the op is reported in the While body that holds it."""
    marker = tmp_path / "loop.txt"

    def body(images):
        def step(i):
            with tf.control_dependencies([tf.io.write_file(str(marker), tf.strings.as_string(i))]):
                return [i + 1]

        return tf.while_loop(lambda i: i < tf.shape(images)[0], step, [tf.constant(0)])

    path = _save_serving(tmp_path, "loop", body)
    # The body also uses AsString (not on the list): the message names the dangerous op.
    with pytest.raises(UserError, match=r"function \S*while_body_\d+ uses op WriteFile \(file system\)"):
        load_model(path)
    assert not marker.exists()


class _WritingResource(tf.saved_model.experimental.TrackableResource):
    """A resource whose initializer writes a file: `tf.saved_model.load` itself runs it."""

    def __init__(self, marker):
        self.marker = marker
        super().__init__()

    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")

    def _initialize(self):
        tf.io.write_file(self.marker, "written at load")
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)


def test_code_that_runs_at_load_time_is_refused_before_loading(tmp_path):
    marker = tmp_path / "load.txt"
    module = tf.Module()
    module.resource = _WritingResource(str(marker))
    module.serve = tf.function(_logits, input_signature=[SPEC])
    path = str(tmp_path / "resource")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    assert not marker.exists()
    with pytest.raises(UserError, match=r"function __inference__initializer_\d+ uses op WriteFile \(file system\)"):
        load_model(path)
    assert not marker.exists()
    load_model(path, trust_model=True)
    assert marker.read_text() == "written at load"  # written by tf.saved_model.load, before any call


def test_checkpoint_write_in_a_serving_function_is_refused(tmp_path):
    """SaveV2 is legitimate in the saver's own function, never in a function that tfrobust calls."""
    prefix = tmp_path / "ckpt"
    path = _save_serving(
        tmp_path,
        "saver",
        lambda images: [
            tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=["x"], shape_and_slices=[""], tensors=[images])
        ],
    )
    with pytest.raises(UserError, match=r"function __inference_serve_\d+ uses op SaveV2 \(checkpoint I/O outside"):
        load_model(path)
    assert not any(name.startswith("ckpt") for name in os.listdir(tmp_path))
    load_model(path, trust_model=True)
    assert os.path.isfile(str(prefix) + ".index")  # what the refusal kept from being written


# --------------------------------------------------------------------------------------------------
# Accepted models, and the saver rule on them


@pytest.fixture(scope="module")
def tfrobust_export(tmp_path_factory):
    network = randomize_weights(build_model("wrn-10-1", input_shape=(8, 8, 1), num_classes=10, mean=(0.3,), std=(0.4,)))
    path = export_network(network, root=str(tmp_path_factory.mktemp("models")), name="wrn", metadata={})
    return network, path


def _proto(path):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    return proto


def _write_copy(source, target, proto):
    shutil.copytree(source, target)
    with open(os.path.join(target, "saved_model.pb"), "wb") as handle:
        handle.write(proto.SerializeToString())
    return str(target)


def test_tfrobust_export_passes_and_its_saver_is_the_only_checkpoint_io(tfrobust_export):
    network, path = tfrobust_export
    inspect_saved_model(path)
    ops = saved_model_ops(path)
    saver = {name for name in ops if "_traced_save_" in name or "_traced_restore_" in name}
    assert len(saver) == 2
    for name, used in ops.items():
        extra = used - INFERENCE_OPS
        if "_traced_restore_" in name:
            assert extra == {"RestoreV2"} and extra <= CHECKPOINT_READ_OPS
        elif "_traced_save_" in name:
            assert "SaveV2" in extra and extra <= CHECKPOINT_WRITE_OPS
        else:
            assert not extra, (name, extra)
    x = tf.constant(np.random.default_rng(1).uniform(0, 1, (3, 8, 8, 1)).astype(np.float32))
    np.testing.assert_allclose(load_model(path).logits(x).numpy(), network(x, training=False).numpy(), atol=1e-5)


def test_saver_function_reached_from_a_signature_is_refused(tfrobust_export, tmp_path):
    """The serving node is rewired to call __traced_save: the same function, now reachable by tfrobust."""
    _, path = tfrobust_export
    proto = _proto(path)
    graph = proto.meta_graphs[0].graph_def
    saver_node = proto.meta_graphs[0].saver_def.save_tensor_name.split(":")[0]
    save_function = next(n for n in graph.node if n.name == saver_node).attr["f"].func.name
    serving_node = proto.meta_graphs[0].signature_def["serving_default"].outputs["logits"].name.split(":")[0]
    next(n for n in graph.node if n.name == serving_node).attr["f"].func.name = save_function
    copy = _write_copy(path, tmp_path / "rewired", proto)
    with pytest.raises(UserError) as excinfo:
        inspect_saved_model(copy)
    message = _one_line(excinfo)
    assert f"function {save_function} uses op" in message and "(checkpoint I/O outside the saver)" in message


def test_checkpoint_write_in_the_restore_function_is_refused(tfrobust_export, tmp_path):
    """The restore function may read the checkpoint (RestoreV2), not write or delete files with it."""
    _, path = tfrobust_export
    proto = _proto(path)
    graph = proto.meta_graphs[0].graph_def
    restore_node = proto.meta_graphs[0].saver_def.restore_op_name
    restore_function = next(n for n in graph.node if n.name == restore_node).attr["f"].func.name
    function = next(f for f in graph.library.function if f.signature.name == restore_function)
    next(n for n in function.node_def if n.op == "NoOp").op = "MergeV2Checkpoints"
    copy = _write_copy(path, tmp_path / "restore", proto)
    with pytest.raises(
        UserError,
        match=rf"function {restore_function} uses op MergeV2Checkpoints \(checkpoint write "
        r"reachable from the saver's restore op\)",
    ):
        inspect_saved_model(copy)


def test_call_to_a_function_outside_the_file_is_refused(tfrobust_export, tmp_path):
    """A StatefulPartitionedCall naming a function the SavedModel does not define (one of the process's)."""
    _, path = tfrobust_export
    proto = _proto(path)
    graph = proto.meta_graphs[0].graph_def
    serving_node = proto.meta_graphs[0].signature_def["serving_default"].outputs["logits"].name.split(":")[0]
    next(n for n in graph.node if n.name == serving_node).attr["f"].func.name = "__inference_process_fn_7"
    copy = _write_copy(path, tmp_path / "outside", proto)
    with pytest.raises(
        UserError,
        match=rf"graph node {serving_node} uses op StatefulPartitionedCall \(calls "
        r"function __inference_process_fn_7, which the SavedModel does not define\)",
    ):
        inspect_saved_model(copy)


def test_function_that_nothing_calls_is_checked(tfrobust_export, tmp_path):
    _, path = tfrobust_export
    proto = _proto(path)
    library = proto.meta_graphs[0].graph_def.library
    orphan = library.function.add()
    orphan.CopyFrom(next(f for f in library.function if f.signature.name.startswith("__inference_logits_fn")))
    orphan.signature.name = "orphan\nfn"  # a crafted name cannot break the message's single line
    orphan.node_def[0].op = "MatchingFiles"
    copy = _write_copy(path, tmp_path / "orphan", proto)
    with pytest.raises(UserError) as excinfo:
        inspect_saved_model(copy)
    assert "function 'orphan\\nfn' uses op MatchingFiles (file system)" in _one_line(excinfo)


def test_unknown_op_is_refused(tfrobust_export, tmp_path):
    _, path = tfrobust_export
    proto = _proto(path)
    function = next(
        f
        for f in proto.meta_graphs[0].graph_def.library.function
        if f.signature.name.startswith("__inference_logits_fn")
    )
    function.node_def[-1].op = "MyCustomOp"
    copy = _write_copy(path, tmp_path / "custom", proto)
    with pytest.raises(UserError, match=r"uses op MyCustomOp \(not on the allow-list of inference ops\)"):
        inspect_saved_model(copy)


def test_tf1_graph_saver_nodes_pass_only_as_the_saver(tmp_path):
    """A TF1 SavedModel keeps its saver as graph nodes (save/SaveV2, save/RestoreV2): allowed there only."""
    path = str(tmp_path / "v1")
    weights = np.random.default_rng(2).normal(size=(16, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 4, 4, 1], name="images")
        kernel = tf.compat.v1.get_variable("kernel", initializer=weights)
        logits = tf.matmul(tf.reshape(images, [-1, 16]), kernel)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            signature = tf.compat.v1.saved_model.predict_signature_def({"images": images}, {"logits": logits})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()
    ops = saved_model_ops(path)["graph"]
    assert {"SaveV2", "RestoreV2", "MergeV2Checkpoints"} <= ops
    x = np.random.default_rng(3).uniform(0, 1, (2, 4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(load_model(path).logits(tf.constant(x)).numpy(), x.reshape(2, 16) @ weights, atol=1e-5)

    proto = _proto(path)
    proto.meta_graphs[0].ClearField("saver_def")  # the same nodes, no longer the saver's
    copy = _write_copy(path, tmp_path / "nosaver", proto)
    with pytest.raises(UserError, match=r"graph node save/\S+ uses op \w+ \(checkpoint I/O outside the saver\)"):
        inspect_saved_model(copy)


def test_pytorch_imported_model_passes(tmp_path):
    torch = pytest.importorskip("torch", reason="needs the [import] extra: pip install -e '.[import]'")
    from torch_reference import CIFAR10, RefWideResNet

    from tfrobust.importer import import_checkpoint

    torch.manual_seed(0)
    checkpoint = str(tmp_path / "wrn.pt")
    torch.save(RefWideResNet(10, 1, 10, *CIFAR10, "swish").state_dict(), checkpoint)
    out = import_checkpoint(checkpoint, arch="wrn-10-1", dataset="cifar10", out=str(tmp_path / "m" / "imported" / "1"))
    inspect_saved_model(out)
    assert load_model(out).metadata["arch"] == "wrn-10-1"


def test_corrupt_saved_model_is_one_line(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError) as excinfo:
        inspect_saved_model(str(tmp_path))
    assert _one_line(excinfo).startswith(f"cannot load SavedModel {tmp_path}")


# --------------------------------------------------------------------------------------------------
# .keras files


def _small_keras(tmp_path, middle=None, name="model.keras"):
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Flatten()(inputs)
    if middle is not None:
        x = middle(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / name)
    model.save(path)
    return model, path


def test_python_lambda_refused_unless_trusted(tmp_path):
    model, path = _small_keras(tmp_path, keras.layers.Lambda(lambda t: t * 2.0, name="doubler"))
    with pytest.raises(UserError) as excinfo:
        load_model(path)
    message = _one_line(excinfo)
    assert message.startswith(f"refusing to load model {path}: layer 'doubler' holds a Python lambda")
    assert message.endswith("pass --trust-model (Python: trust_model=True) to run it anyway")
    x = tf.constant(np.random.default_rng(4).uniform(0, 1, (2, 4, 4, 1)).astype(np.float32))
    np.testing.assert_allclose(load_model(path, trust_model=True).logits(x).numpy(), model(x).numpy(), atol=1e-6)


class _Unregistered(keras.layers.Layer):
    def call(self, inputs):
        return inputs


def test_unknown_custom_object_is_one_clear_line(tmp_path):
    _, path = _small_keras(tmp_path, _Unregistered(name="mystery"))
    with pytest.raises(UserError) as excinfo:
        load_model(path)
    message = _one_line(excinfo)
    module = _Unregistered.__module__  # the name pytest imported this file under
    assert message.startswith(f"cannot load {path}: layer 'mystery' uses class '_Unregistered' (module '{module}')")
    assert "neither a Keras class nor registered" in message and "--trust-model" not in message
    # Trusted, Keras itself cannot build it either; its multi-line error becomes one line naming the cause.
    with pytest.raises(UserError) as excinfo:
        load_model(path, trust_model=True)
    assert "TypeError: Could not locate class '_Unregistered'" in _one_line(excinfo)


def _edit_config(path, target, edit):
    """Rewrites the archive at `path` into `target` with `edit(config)` applied to config.json."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            out.writestr(item, data)
    return str(target)


def _head(config):
    return next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == "head")


@pytest.mark.parametrize(
    "entry, start",
    [
        (
            {"module": "keras.utils", "class_name": "function", "config": "get_file", "registered_name": "get_file"},
            (
                "refusing to load model {path}: layer 'head' names function 'get_file' from module 'keras.utils', not a "
                "Keras modelling function; pass --trust-model"
            ),
        ),
        (
            {
                "module": "keras.config",
                "class_name": "function",
                "config": "enable_unsafe_deserialization",
                "registered_name": "function",
            },
            (
                "refusing to load model {path}: layer 'head' names function 'enable_unsafe_deserialization' from module "
                "'keras.config', not a Keras modelling function"
            ),
        ),
        (
            {"module": "os", "class_name": "function", "config": "system", "registered_name": "system"},
            (
                "cannot load {path}: layer 'head' names function 'system' from module 'os', which is neither a Keras "
                "function nor registered"
            ),
        ),
    ],
)
def test_non_modelling_functions_refused(tmp_path, entry, start):
    _, path = _small_keras(tmp_path)
    crafted = _edit_config(path, tmp_path / "crafted.keras", lambda c: _head(c)["config"].update(activation=entry))
    with pytest.raises(UserError) as excinfo:
        inspect_keras_file(crafted)
    assert _one_line(excinfo).startswith(start.format(path=crafted))


def test_keras_modelling_function_passes(tmp_path):
    entry = {"module": "keras.activations", "class_name": "function", "config": "gelu", "registered_name": "gelu"}
    model, path = _small_keras(tmp_path)
    crafted = _edit_config(path, tmp_path / "gelu.keras", lambda c: _head(c)["config"].update(activation=entry))
    inspect_keras_file(crafted)
    x = tf.constant(np.random.default_rng(5).uniform(0, 1, (2, 4, 4, 1)).astype(np.float32))
    np.testing.assert_allclose(
        load_model(crafted).logits(x).numpy(), keras.activations.gelu(model(x)).numpy(), atol=1e-5
    )


def test_tfsm_layer_refused(tmp_path):
    _, path = _small_keras(tmp_path)

    def to_tfsm(config):
        head = _head(config)
        head["class_name"] = "TFSMLayer"
        head["config"]["filepath"] = "/elsewhere/model"

    crafted = _edit_config(path, tmp_path / "tfsm.keras", to_tfsm)
    with pytest.raises(UserError, match="layer 'head' is a TFSMLayer, which loads the SavedModel '/elsewhere/model'"):
        load_model(crafted)


def test_keras_builtins_and_registered_tfrobust_layers_pass(tmp_path):
    network = build_model("wrn-10-1", input_shape=(8, 8, 1), num_classes=10, mean=(0.3,), std=(0.4,))
    path = str(tmp_path / "wrn.keras")
    network.save(path)
    inspect_keras_file(path)  # Standardize and the initializers are registered by tfrobust.models
    _, plain = _small_keras(tmp_path, keras.layers.Activation("gelu"), name="plain.keras")
    inspect_keras_file(plain)
