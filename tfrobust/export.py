"""SavedModel export in TF Serving's layout, and loading any exported model back as a logits function.

`export_network` writes `<root>/<name>/<version>/` (a SavedModel; TF Serving serves
`--model_base_path=<root>/<name>` and picks the highest numeric version). Endpoints:

- `serving_default`: float32 images [N, H, W, C] in [0, 1] -> {"logits", "probabilities", "classes"};
- `logits`: the same images -> logits, a differentiable function for attacks (the evaluator uses it);
- `features`: the same images -> the penultimate activations (the input of the final Dense layer), for
  `tfrobust diversity`'s feature space; written when the network is a functional/Sequential Keras model
  ending in a Dense layer (every tfrobust model), and named in the metadata's `features`.

The metadata (dataset, class names, input shape, norm, eps, training config, validation metrics) is
written to `assets.extra/tfrobust.json`, the directory TF Serving reserves for files beside a model. Its
format, `tfrobust-savedmodel-1`, is defined here: `export_metadata` builds the fields every export
carries (versions, dataset, threat model, where the weights come from) for training and `tfrobust import`
alike, `export_network` adds those read off the network (input shape, `features`).
The version directory appears atomically: it is written under a non-numeric temporary name (which TF
Serving ignores) and published with `tfrobust.fileio.publish_directory`, and an existing version is never
overwritten. A network with a NaN or infinite weight is refused before anything is written, and a write
the system refuses (no space left, a read-only directory; TensorFlow's own writer included) is one
`WriteError` line naming the export; nothing of it stays behind.

`load_model(path)` accepts a tfrobust export (or its base directory: the highest version is used), any
other SavedModel whose `serving_default` maps images to logits, or a `.keras` file. Its `features` is the
`features` endpoint (or, for a `.keras` file, the input of the final Dense layer), None where there is none.

`export_model(model, "saved_models/name", norm=..., eps=...)` is the public export of any Keras classifier
(a user's functional, Sequential or subclassed model, a `keras.applications` network): `export_network`
with the metadata `tfrobust eval` reads, and the model's own input range converted from [0, 1].
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobust.errors import NonFiniteError, UserError, WriteError
from tfrobust.fileio import publish_directory, write_error, write_json_atomic
from tfrobust.inspection import inspect_keras_file, inspect_saved_model
from tfrobust.integrity import check_saved_model_files, check_zip_archive, one_line

METADATA_PATH = os.path.join("assets.extra", "tfrobust.json")
METADATA_FORMAT = "tfrobust-savedmodel-1"


def export_metadata(*, dataset: Any, norm: str, eps: float, weights: str, **fields: Any) -> dict[str, Any]:
    """The metadata of a tfrobust export (`tfrobust-savedmodel-1`), for `export_network`.

    Every export carries `tfrobust_version`, `tensorflow_version`, `dataset` (the `DatasetInfo`: name,
    class names, image shape, mean/std), the threat model `norm` / `eps` (`tfrobust eval`'s defaults) and
    `weights` (where the weights come from, in words); `fields` adds the producer's own (training:
    `validation`, `training_config`, `run_dir`; `tfrobust import`: `arch`, `source`, ...; `export_model`:
    `input_range`). `dataset` may also be a plain dict (`export_model`: name, classes, class names).
    `export_network` adds `format`, `input_shape` and `features`.
    """
    import tfrobust

    metadata = {
        "tfrobust_version": tfrobust.__version__,
        "tensorflow_version": tf.__version__,
        "dataset": dataclasses.asdict(dataset) if dataclasses.is_dataclass(dataset) else dict(dataset),
        "norm": norm,
        "eps": eps,
        "weights": weights,
    }
    reserved = sorted((set(metadata) | {"format", "input_shape", "features"}) & set(fields))
    if reserved:
        raise ValueError(f"export_metadata: {', '.join(reserved)} are set by tfrobust, not by the caller")
    return {**metadata, **fields}


def next_version(base_dir: str) -> int:
    """1 + the highest numeric version under `base_dir` (1 when there is none)."""
    if not os.path.isdir(base_dir):
        return 1
    versions = [int(d) for d in os.listdir(base_dir) if d.isdigit()]
    return max(versions, default=0) + 1


# The operating system's reasons TensorFlow's file writer reports for a write it could not make: its
# errors carry them as text ("...; No space left on device"), not as an errno.
_WRITE_REASONS = tuple(
    os.strerror(code)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG)
)


def _tensorflow_write_reason(error: BaseException) -> str | None:
    """The system's reason of a TensorFlow write error (`ResourceExhaustedError` for ENOSPC,
    `PermissionDeniedError` for EROFS/EACCES, ...), None for any other error."""
    if isinstance(error, tf.errors.OpError):
        return next((reason for reason in _WRITE_REASONS if reason in error.message), None)
    return None


def check_finite_weights(network: keras.Model) -> None:
    """Refuses (`NonFiniteError`) a network with a NaN or infinite weight, naming the first."""
    for weight in network.weights:
        value = np.asarray(weight.numpy())
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            kind = "NaN" if np.isnan(value).any() else "infinite"
            raise NonFiniteError(f"cannot export a network with non-finite weights: {weight.path} holds a {kind} value")


def export_network(
    network: keras.Model, *, root: str, name: str, metadata: dict[str, Any], version: int | None = None
) -> str:
    """Exports `network` (images in [0,1] -> logits) as `<root>/<name>/<version>`; returns that path.
    Refuses non-finite weights; a refused write is a `WriteError` (module docstring)."""
    check_finite_weights(network)
    base = os.path.join(root, name)
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as error:
        raise write_error(error, base, "export") from error
    version = next_version(base) if version is None else int(version)
    final = os.path.join(base, str(version))
    if os.path.exists(final):
        raise UserError(f"{final} already exists; tfrobust never overwrites an export (choose another version)")
    tmp = os.path.join(base, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)

    height, width, channels = network.input_shape[1:]
    spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="images")

    def logits_fn(images):
        return tf.cast(network(images, training=False), tf.float32)

    def serve(images):
        logits = logits_fn(images)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, axis=-1),
        }

    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[spec])
    archive.add_endpoint(name="logits", fn=logits_fn, input_signature=[spec])
    features_network = penultimate_network(network)
    features_info: dict[str, Any] = {}
    if features_network is not None:

        def features_fn(images):
            return tf.cast(features_network(images, training=False), tf.float32)

        archive.add_endpoint(name="features", fn=features_fn, input_signature=[spec])
        features_info = {"features": {"layer": network.layers[-1].name, "size": int(features_network.output.shape[-1])}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras's export chatter about untracked resources
            archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        full_metadata = {
            "format": METADATA_FORMAT,
            "input_shape": [height, width, channels],
            **features_info,
            **metadata,
        }
        write_json_atomic(os.path.join(tmp, METADATA_PATH), full_metadata, indent=2, sort_keys=True)
        publish_directory(tmp, final)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing half-written behind
        reason = _tensorflow_write_reason(error)
        if isinstance(error, WriteError):  # named after the export, not its temporary files
            raise WriteError("export", final, error.reason, error.errno) from error
        if reason is not None:
            raise WriteError("export", final, reason) from error
        if isinstance(error, OSError) and not isinstance(error, FileExistsError):
            raise write_error(error, final, "export") from error
        raise
    return final


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model to evaluate: `logits(images)` maps float32 [N,H,W,C] images in [0,1] to float32 logits."""

    logits: Callable[[tf.Tensor], tf.Tensor]
    metadata: dict[str, Any]
    path: str
    keepalive: Any = dataclasses.field(default=None, repr=False)  # the restored object owning the variables
    # Images -> penultimate activations (float32 [N, D]), where the model exposes them (see `features`).
    features: Callable[[tf.Tensor], tf.Tensor] | None = None


def penultimate_network(network: keras.Model) -> keras.Model | None:
    """A model sharing `network`'s layers that maps its input to the input of its final Dense layer.

    The penultimate activations are the usual "classifier features" (for tfrobust's models the pooled
    head activations, 64·W values for a WRN-D-W). None when `network` is not a functional/Sequential
    model ending in a Dense layer (a subclassed model has no graph to cut).
    """
    try:
        layers, inputs = network.layers, network.inputs
    except (AttributeError, ValueError):
        return None
    if not layers or not inputs or not isinstance(layers[-1], keras.layers.Dense):
        return None
    try:
        return keras.Model(inputs, layers[-1].input)
    except (AttributeError, ValueError, TypeError):  # layer reused at several call sites, or never called
        return None


def resolve_model_dir(path: str) -> str:
    """`saved_models/name` (TF Serving base path) -> its highest version; a version dir stays as it is."""
    if not os.path.exists(path):
        raise UserError(f"no model at {path}")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        versions = sorted((int(d) for d in os.listdir(path) if d.isdigit()), reverse=True)
        for version in versions:
            candidate = os.path.join(path, str(version))
            if os.path.exists(os.path.join(candidate, "saved_model.pb")):
                return candidate
        raise UserError(f"{path} holds neither a SavedModel (saved_model.pb) nor numeric version directories")
    return path


def load_model(path: str, *, trust_model: bool = False) -> LoadedModel:
    """Loads a tfrobust export, another SavedModel, or a `.keras` model as a logits function.

    Nothing in the model runs before `tfrobust.inspection` has checked it (every op of every function of a
    SavedModel; a `.keras` file's config); `trust_model=True` skips that check and loads a `.keras` file
    with Keras's `safe_mode=False` (Python lambdas run). Damaged files are refused first, trusted or not
    (`tfrobust.integrity`: a zip archive's CRCs, a SavedModel's fingerprint.pb).
    """
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise UserError(f"no model at {path}")
        check_zip_archive(path, "a .keras file")
        if not trust_model:
            inspect_keras_file(path)
        try:
            model = keras.saving.load_model(path, safe_mode=not trust_model)
        except Exception as error:  # Keras raises many types for a bad file; the user needs one line.
            # Keras wraps a layer's error in a long multi-line message; its cause follows the last marker.
            cause = str(error).rsplit("Exception encountered:", 1)[-1].strip()
            first_line = (cause.splitlines() or [""])[0][:300]
            raise UserError(f"cannot load {path}: {type(error).__name__}: {first_line}") from None
        fn = tf.function(lambda images: tf.cast(model(images, training=False), tf.float32))
        features_network = penultimate_network(model)
        features = None
        if features_network is not None:
            features = tf.function(lambda images: tf.cast(features_network(images, training=False), tf.float32))
        return LoadedModel(warn_if_probabilities(fn, _keras_input_shape(model)), {}, path, features=features)

    directory = resolve_model_dir(path)
    check_saved_model_files(directory)
    metadata: dict[str, Any] = {}
    metadata_file = os.path.join(directory, METADATA_PATH)
    if os.path.isfile(metadata_file):
        try:
            with open(metadata_file) as handle:
                metadata = json.load(handle)
        except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8 text
            raise UserError(f"cannot read {metadata_file}: it is damaged ({one_line(error)})") from None
        if not isinstance(metadata, dict):
            raise UserError(f"cannot read {metadata_file}: expected a JSON object, got {type(metadata).__name__}")
    if not trust_model:
        inspect_saved_model(directory)
    try:
        loaded = tf.saved_model.load(directory)
    except Exception as error:  # A corrupt SavedModel surfaces as assorted TF errors.
        raise UserError(f"cannot load SavedModel {directory}: {type(error).__name__}: {one_line(error)}") from None
    if hasattr(loaded, "logits"):
        fn = loaded.logits
        input_shape = metadata.get("input_shape") or _spec_shape(getattr(fn, "input_signature", None))
    else:
        signature = loaded.signatures.get("serving_default")
        if signature is None:
            raise UserError(f"{directory} has no 'logits' endpoint and no serving_default signature")
        input_name = list(signature.structured_input_signature[1])[0]
        outputs = signature.structured_outputs
        key = "logits" if "logits" in outputs else (list(outputs)[0] if len(outputs) == 1 else None)
        if key is None:
            raise UserError(
                f"{directory}: serving_default has outputs {sorted(outputs)}; expected 'logits' or one output"
            )

        def fn(images):
            return tf.cast(signature(**{input_name: images})[key], tf.float32)

        input_shape = _spec_shape([signature.structured_input_signature[1][input_name]])
    fn = warn_if_probabilities(fn, input_shape)
    features = loaded.features if hasattr(loaded, "features") else None
    return LoadedModel(fn, metadata, directory, keepalive=loaded, features=features)


def _keras_input_shape(model) -> list[int] | None:
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):  # a subclassed model that was never built
        return None
    return list(shape[1:]) if isinstance(shape, tuple) else None


def _spec_shape(signature) -> list[int] | None:
    """[H, W, C] of a one-argument float32 input signature, None where unknown."""
    if not signature or len(signature) != 1 or not isinstance(signature[0], tf.TensorSpec):
        return None
    spec = signature[0]
    if spec.dtype != tf.float32 or spec.shape.rank is None:
        return None
    return list(spec.shape[1:])


def warn_if_probabilities(fn: Callable, input_shape: list[int] | None = None) -> Callable:
    """Wraps `fn` to warn once if its outputs look like probabilities (attacks need logits).

    With a fully known `input_shape` the check runs now, on two random images: `tfrobust eval` calls the
    function only inside `tf.function`, where the outputs cannot be inspected. Otherwise it runs on the
    first eager call.
    """
    state = {"checked": False}

    def check(out) -> None:
        state["checked"] = True
        values = np.asarray(out)
        if values.size and values.min() >= 0 and np.allclose(values.sum(-1), 1.0, atol=1e-3):
            warnings.warn(
                "the model's outputs sum to 1 like probabilities: attacks and losses expect logits, so "
                "gradients may vanish and robust accuracy be overestimated",
                stacklevel=2,
            )

    if input_shape and all(isinstance(d, int) and d > 0 for d in input_shape):
        probe = np.random.default_rng(0).uniform(0.0, 1.0, [2, *input_shape]).astype(np.float32)
        try:
            out = fn(tf.constant(probe))
        except (tf.errors.OpError, ValueError, TypeError) as error:
            raise UserError(
                f"the model fails on float32 images of shape {list(input_shape)}: {type(error).__name__}: "
                f"{str(error)[:200]}"
            ) from None
        check(out)

    def checked(images):
        out = fn(images)
        if not state["checked"] and tf.executing_eagerly():
            check(out)
        return out

    return checked


# --------------------------------------------------------------------------------------------------
# The public export of any Keras classifier (`export_model`).

# Metadata keys `export_model` writes itself; the caller's `metadata` may not set them.
EXPORT_MODEL_KEYS = (
    "format",
    "input_shape",
    "features",
    "norm",
    "eps",
    "dataset",
    "input_range",
    "weights",
    "tfrobust_version",
    "tensorflow_version",
)


def check_input_range(input_range: Sequence[float]) -> tuple[float, float]:
    """(low, high) as floats when both are finite and low < high, else `UserError`: what a model expects for
    black and white, the [0, 1] image x reaching it as low + (high - low)·x."""
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise UserError(f"input_range must be (low, high), e.g. (0, 255), got {input_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise UserError(f"input_range must be (low, high) with low < high, got {input_range!r}")
    return low, high


def split_export_path(path: str) -> tuple[str, str, int | None]:
    """`saved_models/NAME` -> (root, NAME, None: the next version); `saved_models/NAME/VERSION` -> its version."""
    normal = os.path.normpath(os.fspath(path))
    last = os.path.basename(normal)
    base, version = (os.path.dirname(normal), int(last)) if last.isdigit() else (normal, None)
    name = os.path.basename(base)
    if not name or name in (".", ".."):
        raise UserError(
            f"export path {path!r}: give saved_models/NAME or saved_models/NAME/VERSION (TF Serving's layout)"
        )
    return os.path.dirname(base) or ".", name, version


def export_model(
    model: keras.Model,
    path: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    norm: str = "linf",
    eps: float | None = None,
    class_names: Sequence[str] | None = None,
    dataset: str | None = None,
    input_range: Sequence[float] = (0.0, 1.0),
    input_shape: Sequence[int | None] | None = None,
) -> str:
    """Exports any Keras classifier (images -> logits) for TF Serving, `tfrobust eval` and
    `tfrobust.evaluate`; returns the version directory written.

    `path`: `saved_models/NAME` (the next free version) or `saved_models/NAME/VERSION`; an existing version
    is never overwritten. The export is `export_network`'s: endpoints `serving_default` (logits,
    probabilities, classes), `logits` and, for a model ending in a Dense layer, `features`, all taking float32
    images in [0, 1]; the model runs in inference mode. With `input_range=(low, high)` the export feeds the
    model low + (high - low)·x (a `Rescaling` layer in front, e.g. (0, 255) for `keras.applications` models),
    so that every consumer passes [0, 1] images and the radius stays in [0, 1] units.

    The metadata (`assets.extra/tfrobust.json`) holds what `tfrobust eval` writes for its own exports and
    reads back: `norm` and `eps` (the evaluation's default threat model; eps defaults to the norm's, Linf
    8/255 or L2 128/255), `dataset` ({"name": `dataset`, "num_classes", "class_names"}; with a tfrobust
    dataset name, `tfrobust eval` needs no --dataset), `input_shape`, `input_range`, the versions, and the
    caller's `metadata` (JSON-serialisable; it may not set the keys above). `input_shape` ([H, W, C]) is
    needed only for a subclassed model, whose input shape Keras does not record.

    Example::

        path = tfrobust.export_model(model, "saved_models/my-cnn", norm="linf", eps=8 / 255,
                                     class_names=["cat", "dog"])     # saved_models/my-cnn/1
        evaluation = tfrobust.evaluate(path, x_test, y_test)         # Linf 8/255, from the metadata
    """
    from tfrobust.threat_model import resolve

    if not isinstance(model, keras.Model):
        raise UserError(f"export_model exports a keras.Model, got a {type(model).__name__}")
    norm, eps = resolve(norm, eps)
    low, high = check_input_range(input_range)
    extra = dict(metadata or {})
    reserved = sorted(set(extra) & set(EXPORT_MODEL_KEYS))
    if reserved:
        raise UserError(f"metadata keys {', '.join(reserved)} are written by export_model: pass them as its arguments")
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as error:
        raise UserError(f"metadata must be JSON-serialisable: {error}") from None
    root, name, version = split_export_path(path)

    known = _keras_input_shape(model)
    if input_shape is not None:
        input_shape = [None if d is None else int(d) for d in input_shape]
        if (
            known is not None
            and len(known) == len(input_shape)
            and any(k is not None and d is not None and k != d for k, d in zip(known, input_shape))
        ):
            raise UserError(f"input_shape {input_shape} but the model takes {known}")
    shape = input_shape or known
    if shape is None or len(shape) != 3:
        raise UserError(
            f"the model's input shape is {'unknown' if shape is None else shape}: give "
            "input_shape=(height, width, channels) (a subclassed model does not record it)"
        )
    network = model
    if known is None or (low, high) != (0.0, 1.0):
        # A functional model around `model`: it records the input shape and holds the input conversion.
        inputs = keras.Input(tuple(shape), name="images")
        x = inputs
        if (low, high) != (0.0, 1.0):
            x = keras.layers.Rescaling(high - low, offset=low, name="input_range")(inputs)
        network = keras.Model(inputs, model(x), name=f"{model.name}_on_unit_images")

    def logits(images: tf.Tensor) -> tf.Tensor:
        return tf.cast(network(images, training=False), tf.float32)

    # A forward pass where the shape is known: the model runs on [0, 1] images and returns [N, classes]
    # (a warning if its outputs look like probabilities).
    num_classes = None
    if all(isinstance(d, int) for d in shape):
        out = warn_if_probabilities(logits, list(shape))(tf.zeros([1, *shape], tf.float32))
        if len(out.shape) != 2:
            raise UserError(f"the model's output has shape {list(out.shape)}: expected logits [N, classes]")
        num_classes = int(out.shape[-1])
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if num_classes is not None and len(class_names) != num_classes:
            raise UserError(f"{len(class_names)} class names but the model outputs {num_classes} logits")
    full = export_metadata(
        dataset={"name": dataset, "num_classes": num_classes, "class_names": class_names},
        norm=norm,
        eps=eps,
        weights=f"the Keras model {model.name!r} (tfrobust.export.export_model)",
        input_range=[low, high],
        **extra,
    )
    return export_network(network, root=root, name=name, metadata=full, version=version)
