"""Imports the paper's published PyTorch checkpoints into tfrobust models and exports them as SavedModels.

Rebuffi, Gowal et al. 2021 (and Gowal et al. 2020) published their trained models as PyTorch state dicts
of DeepMind's reference `adversarial_robustness/pytorch/model_zoo.py` (the same files RobustBench serves
as `Rebuffi2021Fixing_*` / `Gowal2020Uncovering_*`). tfrobust's models are that architecture (docs/method.md,
"Model"), so the import is a pure renaming and transposition of tensors; nothing about the
network is adapted here.

Names, reference -> tfrobust (Keras layer names):

- WideResNet: `init_conv` -> `init_conv`; `layer.G.block.B.{batchnorm_0, conv_0, batchnorm_1, conv_1,
  shortcut}` -> `layer_G_block_B_{same}`; `batchnorm` -> `batchnorm`; `logits` -> `logits`.
- PreActResNet: `conv_2d` -> `init_conv`; `layer_G.B.{batchnorm_0, conv_2d_1, batchnorm_1, conv_2d_2,
  shortcut}` -> `layer_G_block_B_{batchnorm_0, conv_0, batchnorm_1, conv_1, shortcut}`; `batchnorm`,
  `logits` unchanged.

Tensors: conv weights OIHW -> HWIO; linear (out, in) -> (in, out); BatchNorm weight / bias / running_mean /
running_var -> gamma / beta / moving_mean / moving_variance (epsilon 1e-5 on both sides);
`num_batches_tracked` is ignored. The reference keeps its normalisation constants as plain attributes
(not in the state dict); a checkpoint from code that stores them as `mean` / `std` buffers has them used
as the model's normalisation (with a warning when they differ from the dataset's).

A `.pt` file is a pickle and unpickling can run code, so it is untrusted input: it is read with
`torch.load(..., weights_only=True)` (PyTorch's restricted unpickler, which refuses every global it does
not know instead of calling it), and anything but a plain `str -> tensor` dict is refused (optionally one
level down, under "state_dict" or "model"). `torch` is the optional extra `[import]`.

Usage:
    path = import_checkpoint("cifar10_linf_wrn28-10_cutmix_ddpm_v2.pt", arch="wrn-28-10", dataset="cifar10",
                             out="saved_models/rebuffi2021-wrn-28-10/1")
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from tfrobust.errors import UserError
from tfrobust.integrity import check_zip_archive

INSTALL_HINT = "pip install -e '.[import]'"
DATASETS = ("cifar10", "cifar100")
NESTED_KEYS = ("state_dict", "model")  # checkpoints that wrap the state dict one level down
NORMALIZATION_KEYS = ("mean", "std")  # buffers some re-implementations store; the reference does not

# Dataset constants (DeepMind's model_zoo.py / docs/method.md, "Model"; the same numbers as
# tfrobust.data.datasets).
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# CIFAR-100's fine labels in label order (the dataset's `fine_label_names`); tensorflow-datasets only
# knows them after downloading the data, and the importer loads no data.
CIFAR100_CLASS_NAMES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
IMAGE_SHAPE = (32, 32, 3)

_BLOCK = re.compile(r"^layer_(\d+)_block_(\d+)_(batchnorm_0|conv_0|batchnorm_1|conv_1|shortcut)$")
_PREACT_PARTS = {
    "batchnorm_0": "batchnorm_0",
    "conv_0": "conv_2d_1",
    "batchnorm_1": "batchnorm_1",
    "conv_1": "conv_2d_2",
    "shortcut": "shortcut",
}


def dataset_info(dataset: str):
    """The `DatasetInfo` the training core would build for `dataset`, without loading any data."""
    from tfrobust.data.datasets import CIFAR10_CLASS_NAMES, DatasetInfo

    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r} for import; choose from: {', '.join(DATASETS)}")
    mean, std = _STATS[dataset]
    names = CIFAR10_CLASS_NAMES if dataset == "cifar10" else CIFAR100_CLASS_NAMES
    return DatasetInfo(
        name=dataset,
        num_classes=len(names),
        class_names=tuple(names),
        image_shape=IMAGE_SHAPE,
        mean=mean,
        std=std,
        allow_flip=True,
    )


# --------------------------------------------------------------------------------------------------
# Reading the checkpoint (untrusted)


@dataclasses.dataclass(frozen=True)
class StateDict:
    """A checkpoint's tensors as float32 numpy arrays, keyed without any `module.` prefix, in file order."""

    tensors: dict[str, np.ndarray]
    nested_under: str | None  # "state_dict" / "model" when the tensors were one level down
    prefix_stripped: bool  # True when every key started with "module." (DataParallel)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise UserError(f"importing a PyTorch checkpoint needs torch: {INSTALL_HINT}") from None
    return torch


def _is_tensor_dict(obj, torch) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_state_dict(path: str) -> StateDict:
    """Reads `path` with `torch.load(weights_only=True)`; refuses anything but a plain str -> tensor dict."""
    torch = _import_torch()
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        # torch.save's format (PyTorch >= 1.6) is a zip archive; torch.load does not check its CRCs.
        check_zip_archive(path, "a PyTorch checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the restricted unpickler and torch's readers raise many types
        detail = " ".join(str(error).split())
        if isinstance(error, pickle.UnpicklingError) or "weights only load failed" in detail.lower():
            match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
            what = f" (it references {match.group(1)})" if match else ""
            raise UserError(
                f"refused {path}: it is not a plain tensor state dict{what}; a .pt file is a pickle and is "
                "loaded with weights_only=True, which never runs code from the file"
            ) from None
        raise UserError(f"cannot read {path} as a PyTorch checkpoint: {type(error).__name__}: {detail[:200]}") from None

    nested = None
    if not _is_tensor_dict(obj, torch):
        if isinstance(obj, dict):
            for key in NESTED_KEYS:
                if key in obj and _is_tensor_dict(obj[key], torch):
                    obj, nested = obj[key], key
                    break
        if nested is None:
            raise UserError(
                f"refused {path}: {_describe_non_state_dict(obj, torch)}; expected a state dict "
                f"(str -> tensor), optionally under {' or '.join(repr(k) for k in NESTED_KEYS)}"
            )

    keys = list(obj)
    stripped = all(k.startswith("module.") for k in keys)
    tensors: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = key[len("module.") :] if stripped else key
        tensors[name] = _to_numpy(name, value, torch, path)
    return StateDict(tensors=tensors, nested_under=nested, prefix_stripped=stripped)


def _describe_non_state_dict(obj, torch) -> str:
    if not isinstance(obj, dict):
        return f"it holds a {type(obj).__name__}, not a dict of tensors"
    if not obj:
        return "it holds an empty dict"
    for key, value in obj.items():
        if not isinstance(key, str):
            return f"it has a non-string key {key!r}"
        if not isinstance(value, torch.Tensor):
            return f"its entry {key!r} is of type {type(value).__name__}, not a tensor"
    return "it is not a plain dict of tensors"  # unreachable: a non-empty str -> tensor dict is accepted


def _to_numpy(key: str, value, torch, path: str) -> np.ndarray:
    if value.layout != torch.strided or value.is_quantized:
        raise UserError(f"refused {path}: tensor {key!r} is {value.layout} / quantized; expected a dense tensor")
    if key.endswith("num_batches_tracked"):
        return np.zeros(tuple(value.shape), np.int64)  # ignored; only its presence matters
    if not value.is_floating_point():
        raise UserError(f"refused {path}: tensor {key!r} has dtype {value.dtype}; expected floating point")
    try:
        return value.detach().to(torch.float32).numpy()
    except (RuntimeError, TypeError) as error:  # e.g. a meta tensor, which has no data
        detail = " ".join(str(error).split())[:120]
        raise UserError(f"refused {path}: tensor {key!r} has no readable data ({detail})") from None


# --------------------------------------------------------------------------------------------------
# The mapping onto the Keras model


def _check_arch(arch: str) -> str:
    """The naming family ("wrn" / "preact") of a registered tfrobust model."""
    from tfrobust.models.registry import MODELS

    if arch not in MODELS:
        raise UserError(f"unknown arch {arch!r}; choose from: {', '.join(MODELS)}")
    if arch.startswith("wrn-"):
        return "wrn"
    if arch.startswith("preact-resnet-"):
        return "preact"
    raise UserError(f"no reference checkpoint naming for {arch!r}: use a wrn-D-W or preact-resnet-18 model")


def _check_activation(activation: str) -> None:
    from tfrobust.models.wide_resnet import ACTIVATIONS

    if activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {activation!r}; choose from: {', '.join(ACTIVATIONS)}")


def torch_module_name(layer_name: str, family: str) -> str:
    """The reference module name of a tfrobust layer (`layer_1_block_0_conv_0` -> `layer.1.block.0.conv_0`)."""
    if layer_name in ("batchnorm", "logits"):
        return layer_name
    if layer_name == "init_conv":
        return "init_conv" if family == "wrn" else "conv_2d"
    match = _BLOCK.match(layer_name)
    if match is None:
        raise RuntimeError(f"tfrobust layer {layer_name!r} has weights but no reference name (a tfrobust bug)")
    group, block, part = match.groups()
    if family == "wrn":
        return f"layer.{group}.block.{block}.{part}"
    return f"layer_{group}.{block}.{_PREACT_PARTS[part]}"


@dataclasses.dataclass(frozen=True)
class _Target:
    key: str  # reference state-dict key
    variable: Any  # the Keras variable it fills
    convert: Callable[[np.ndarray], np.ndarray]  # reference layout -> Keras layout
    shape: tuple[int, ...]  # the reference shape the key must have


def _conv(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))  # OIHW -> HWIO


def _dense(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)  # (out, in) -> (in, out)


def _same(w: np.ndarray) -> np.ndarray:
    return w


def targets(network, family: str) -> tuple[list[_Target], set[str]]:
    """Every reference key the network needs, in layer order, and the BatchNorm module names."""
    import keras

    from tfrobust.models.wide_resnet import BN_EPSILON

    out: list[_Target] = []
    batch_norms: set[str] = set()
    for layer in network._flatten_layers(include_self=False):
        if not layer.weights:
            continue
        module = torch_module_name(layer.name, family)
        if isinstance(layer, keras.layers.BatchNormalization):
            if abs(layer.epsilon - BN_EPSILON) > 1e-12 or not (layer.center and layer.scale):
                raise RuntimeError(f"{layer.name}: BatchNorm settings differ from the reference (a tfrobust bug)")
            batch_norms.add(module)
            for suffix, var in (
                ("weight", layer.gamma),
                ("bias", layer.beta),
                ("running_mean", layer.moving_mean),
                ("running_var", layer.moving_variance),
            ):
                out.append(_Target(f"{module}.{suffix}", var, _same, tuple(var.shape)))
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            out.append(_Target(f"{module}.weight", layer.kernel, _conv, (cout, cin, kh, kw)))
            if layer.use_bias:
                out.append(_Target(f"{module}.bias", layer.bias, _same, tuple(layer.bias.shape)))
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            out.append(_Target(f"{module}.weight", layer.kernel, _dense, (cout, cin)))
            out.append(_Target(f"{module}.bias", layer.bias, _same, tuple(layer.bias.shape)))
        else:
            raise RuntimeError(
                f"tfrobust layer {layer.name!r} ({type(layer).__name__}) has weights the importer "
                "does not know (a tfrobust bug)"
            )
    return out, batch_norms


# Keras layout -> reference layout: the inverse of each `_Target.convert`.
_TO_REFERENCE: dict[Callable, Callable[[np.ndarray], np.ndarray]] = {
    _conv: lambda w: np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1))),  # HWIO -> OIHW
    _dense: lambda w: np.ascontiguousarray(w.T),  # (in, out) -> (out, in)
    _same: lambda w: w,
}


def reference_state_dict(network, arch: str) -> dict[str, np.ndarray]:
    """tfrobust's `arch` network as a reference (model_zoo) state dict of numpy arrays: the inverse of
    `build_imported_network`. `benchmarks/aa_reference.py` uses it to attack the same function in PyTorch."""
    wanted, _ = targets(network, _check_arch(arch))
    return {t.key: _TO_REFERENCE[t.convert](np.asarray(t.variable)) for t in wanted}


def _normalization(tensors: dict[str, np.ndarray], info, path: str) -> tuple[tuple, tuple, str]:
    """The model's mean/std: the checkpoint's `mean`/`std` buffers where present, else the dataset's."""
    channels = info.image_shape[-1]
    values = {"mean": info.mean, "std": info.std}
    source = "dataset"
    for key in NORMALIZATION_KEYS:
        if key not in tensors:
            continue
        flat = tensors[key].reshape(-1)
        if flat.size not in (1, channels):
            raise UserError(
                f"checkpoint {path}: key {key!r} has shape {list(tensors[key].shape)}; expected "
                f"{channels} per-channel values (or one)"
            )
        values[key] = tuple(float(v) for v in np.broadcast_to(flat, (channels,)))
        source = "checkpoint"
    if source == "checkpoint":
        dataset_values = {"mean": info.mean, "std": info.std}
        if any(not np.allclose(values[k], dataset_values[k], rtol=0, atol=1e-4) for k in NORMALIZATION_KEYS):
            warnings.warn(
                f"the checkpoint's normalisation (mean {values['mean']}, std {values['std']}) differs from "
                f"{info.name}'s (mean {info.mean}, std {info.std}); the imported model uses the checkpoint's",
                stacklevel=2,
            )
    if min(values["std"]) <= 0:
        raise UserError(f"checkpoint {path}: key 'std' has non-positive values {values['std']}")
    return values["mean"], values["std"], source


def build_imported_network(
    state: StateDict, *, arch: str, dataset: str, activation: str = "swish", path: str = "checkpoint"
):
    """Builds tfrobust's `arch` for `dataset` and fills it with `state`; returns (network, normalization dict).

    Refuses (UserError, one line) the first key, in layer order, that is missing or has the wrong shape,
    then the first key of the file the architecture does not have.
    """
    import keras

    from tfrobust.models.registry import build_model

    family = _check_arch(arch)
    _check_activation(activation)
    info = dataset_info(dataset)
    tensors = dict(state.tensors)
    mean, std, norm_source = _normalization(tensors, info, path)
    for key in NORMALIZATION_KEYS:
        tensors.pop(key, None)

    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")  # an imported model is float32, whatever the process's
    try:
        network = build_model(
            arch, input_shape=info.image_shape, num_classes=info.num_classes, mean=mean, std=std, activation=activation
        )
    finally:
        keras.mixed_precision.set_global_policy(policy)

    wanted, batch_norms = targets(network, family)
    expected = {t.key for t in wanted}
    unexpected = [
        k
        for k in tensors
        if k not in expected
        and not (k.endswith(".num_batches_tracked") and k[: -len(".num_batches_tracked")] in batch_norms)
    ]
    hint = f"; check --arch ({arch}) and --dataset ({dataset})"
    if unexpected:
        hint = f" (the file also has {len(unexpected)} key(s) {arch} lacks, first {unexpected[0]!r}){hint}"
    for target in wanted:
        if target.key not in tensors:
            raise UserError(f"checkpoint {path} does not match {arch}: missing key {target.key!r}{hint}")
        shape = tuple(tensors[target.key].shape)
        if shape != target.shape:
            raise UserError(
                f"checkpoint {path} does not match {arch}: key {target.key!r} has shape {list(shape)}, "
                f"{arch} on {dataset} needs {list(target.shape)}{hint}"
            )
    if unexpected:
        raise UserError(
            f"checkpoint {path} does not match {arch}: unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} in all); check --arch ({arch}) and --dataset ({dataset})"
        )
    for target in wanted:
        value = tensors[target.key]
        if not np.all(np.isfinite(value)):
            raise UserError(f"checkpoint {path}: key {target.key!r} holds non-finite values (NaN or inf)")
        target.variable.assign(target.convert(value))
    normalization = {"mean": list(mean), "std": list(std), "from": norm_source}
    return network, normalization


# --------------------------------------------------------------------------------------------------
# The whole import


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_out(out: str) -> tuple[str, str, int | None]:
    """`saved_models/NAME/VERSION` -> (root, name, version); `saved_models/NAME` -> the next version."""
    path = os.path.normpath(out)
    last = os.path.basename(path)
    if last.isdigit():
        base, version = os.path.dirname(path), int(last)
    else:
        base, version = path, None
    name = os.path.basename(base)
    if not name or name in (".", ".."):
        raise UserError(f"--out {out!r}: give saved_models/NAME/VERSION (TF Serving's layout) or saved_models/NAME")
    return os.path.dirname(base), name, version


def import_checkpoint(
    checkpoint: str,
    *,
    arch: str,
    dataset: str,
    activation: str = "swish",
    out: str,
    norm: str = "linf",
    eps: float | None = None,
) -> str:
    """Converts a reference PyTorch state dict into a tfrobust SavedModel at `out`; returns the export path.

    `out` is `ROOT/NAME/VERSION` (or `ROOT/NAME`: the next free version). `norm`/`eps` (default Linf 8/255)
    are the threat model written to the metadata, which `tfrobust eval` uses as its defaults.
    """
    from tfrobust.export import export_metadata, export_network
    from tfrobust.threat_model import resolve

    torch = _import_torch()  # first: a missing extra is the first thing to say
    norm, eps = resolve(norm, eps)
    root, name, version = split_out(out)
    if os.path.exists(os.path.join(root, name)) and not os.path.isdir(os.path.join(root, name)):
        raise UserError(f"--out {out}: {os.path.join(root, name)} is a file, not a directory of model versions")
    if version is not None and os.path.exists(os.path.join(root, name, str(version))):
        raise UserError(f"{os.path.join(root, name, str(version))} already exists; tfrobust never overwrites an export")
    info = dataset_info(dataset)
    _check_arch(arch)
    _check_activation(activation)

    digest = sha256(checkpoint) if os.path.isfile(checkpoint) else None
    state = read_state_dict(checkpoint)
    network, normalization = build_imported_network(
        state, arch=arch, dataset=dataset, activation=activation, path=checkpoint
    )
    metadata = export_metadata(
        dataset=info,
        norm=norm,
        eps=eps,
        weights="imported from a PyTorch state dict of the reference model_zoo",
        torch_version=str(torch.__version__),
        arch=arch,
        activation=activation,
        normalization=normalization,
        source={
            "path": os.path.abspath(checkpoint),
            "sha256": digest,
            "tensors": len(state.tensors),
            "module_prefix_stripped": state.prefix_stripped,
            "nested_under": state.nested_under,
        },
    )
    return export_network(network, root=root or ".", name=name, metadata=metadata, version=version)
