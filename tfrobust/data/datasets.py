"""Datasets as uint8 numpy arrays: CIFAR-10/100 and SVHN (tensorflow-datasets), scikit-learn's digits, npz files.

Everything here returns uint8 images [N, H, W, C] and int64 labels [N]; conversion to float32 in [0, 1]
and to one-hot labels happens batch by batch in `tfrobust.data.pipeline`, so a dataset is never held in
memory as floats.

Model selection follows the paper (Rebuffi, Gowal et al. 2021, Sec. 6.1, after Gowal et al. 2020): a
separate validation set of 1024 images held out from the *training* set, never the test set. The
reference JAX code takes it as the first 1024 images (`ds.skip(1_024)`, `adversarial_robustness/jax/
datasets.py`); we take a seeded random subset instead, because files such as the CIFAR-10 npz copy are
stored sorted by class and a prefix would be a single class.

Every error caused by the user's input is a one-line `tfrobust.errors.UserError`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile

import numpy as np

from tfrobust.errors import UserError

logger = logging.getLogger(__name__)

DATASET_NAMES = ("cifar10", "cifar100", "svhn", "digits")  # plus "npz:PATH"
# "all": every image of the training source with nothing held out (an npz file: every image in it).
SPLIT_NAMES = ("train", "val", "test", "all")
# Validation images held out of the training set when --val-size is not given: 1024 (the reference's
# CIFAR-10 hold-out), at most a fifth of the training images so that small datasets (digits, a small
# npz file) keep four fifths for training (`default_val_size`).
DEFAULT_VAL_SIZE = 1024

# Per-channel statistics of the [0, 1] training images. CIFAR-10/100: the reference JAX code
# (`_CIFAR10_MEAN`/`_CIFAR100_MEAN` in adversarial_robustness/jax/datasets.py, also docs/method.md, "Model").
# SVHN: the values used by the common PyTorch robust-training code bases (train split, 73,257 images).
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR10_STD = (0.2471, 0.2435, 0.2616)
_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
_CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_SVHN_MEAN = (0.4377, 0.4438, 0.4728)
_SVHN_STD = (0.198, 0.201, 0.197)

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# The digits test split is fixed once and for all (seed 0, 20%, stratified), independent of the
# `seed` that picks the validation images, so test numbers stay comparable across runs.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0

# Mean/std of an npz file are estimated on at most this many images (evenly spaced, so a file
# stored sorted by class still contributes every class), in chunks, to keep the cost small.
_NPZ_STATS_MAX_IMAGES = 10_000
_STATS_CHUNK = 1_000
# Examples per batch when reading a tensorflow-datasets split into numpy.
_TFDS_CHUNK = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the evaluator need to know about a dataset."""

    name: str  # "cifar10", "digits", "npz:/path/file.npz", ...
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # H, W, C
    mean: tuple[float, ...]  # per-channel mean of [0, 1] images (normalisation inside the model)
    std: tuple[float, ...]
    allow_flip: bool  # horizontal flip is a label-preserving augmentation (False for digits, svhn)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: uint8 images [N, H, W, C] and int64 labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class Splits:
    """A dataset's splits. `train` excludes the `val` images; `test` is None where the source has none (npz)."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split | None


# --------------------------------------------------------------------------------------------------
# Public API


def default_val_size(num_train: int) -> int:
    """The hold-out when none is given: `DEFAULT_VAL_SIZE` images, at most a fifth of `num_train`."""
    return min(DEFAULT_VAL_SIZE, num_train // 5)


def default_split(name: str) -> str:
    """The split `tfrobust eval` uses when none is given: "test", or "all" for an npz:PATH dataset, which
    has no test split (the file is the evaluation set)."""
    return "all" if isinstance(name, str) and name.startswith("npz:") else "test"


def load_dataset(
    name: str,
    *,
    val_size: int | None = DEFAULT_VAL_SIZE,
    seed: int = 0,
    data_dir: str | None = None,
    num_classes: int | None = None,
) -> Splits:
    """Loads `name` and holds out a seeded validation split of `val_size` training images.

    `name` is one of `DATASET_NAMES` or "npz:PATH". `seed` only decides which training images go to
    the validation split; the test split never depends on it. `data_dir` is passed to
    tensorflow-datasets. `num_classes` applies to npz files only (default: largest label + 1).
    `val_size` None holds out `default_val_size(len(train))` images; `len(result.val)` says how many.
    """
    info, train, test = _load_source(name, data_dir=data_dir, want_train=True, want_test=True, num_classes=num_classes)
    if val_size is None:
        val_size = default_val_size(len(train))
    train, val = _hold_out(train, val_size=val_size, seed=seed, dataset=info.name)
    return Splits(info=info, train=train, val=val, test=test)


# Training-set sizes and image shapes of the tensorflow-datasets sources, for work that needs the shape of
# a dataset but not its images (`tfrobust benchmark`).
TFDS_TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257}
_TFDS_SHAPES = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3), "svhn": (32, 32, 3)}


def synthetic_splits(name: str, n: int, *, seed: int = 0) -> tuple[Splits, int]:
    """`n` random uint8 training images (and no validation images) with the `DatasetInfo` of dataset
    `name` (cifar10, cifar100, svhn), and that dataset's training-set size. Nothing is downloaded."""
    if name not in TFDS_TRAIN_SIZES:
        raise UserError(f"no synthetic stand-in for dataset {name!r}; choose from {', '.join(TFDS_TRAIN_SIZES)}")
    classes = 100 if name == "cifar100" else 10
    mean, std = {
        "cifar10": (_CIFAR10_MEAN, _CIFAR10_STD),
        "cifar100": (_CIFAR100_MEAN, _CIFAR100_STD),
        "svhn": (_SVHN_MEAN, _SVHN_STD),
    }[name]
    info = DatasetInfo(
        name=name,
        num_classes=classes,
        class_names=CIFAR10_CLASS_NAMES if name == "cifar10" else tuple(str(i) for i in range(classes)),
        image_shape=_TFDS_SHAPES[name],
        mean=mean,
        std=std,
        allow_flip=name != "svhn",
    )
    rng = np.random.default_rng(seed)
    train = Split(
        images=rng.integers(0, 256, (n, *info.image_shape), dtype=np.uint8),
        labels=rng.integers(0, classes, n).astype(np.int64),
    )
    empty = Split(images=train.images[:0], labels=train.labels[:0])
    return Splits(info=info, train=train, val=empty, test=None), TFDS_TRAIN_SIZES[name]


def load_split(
    name: str,
    split: str,
    *,
    val_size: int | None = DEFAULT_VAL_SIZE,
    seed: int = 0,
    data_dir: str | None = None,
    num_classes: int | None = None,
) -> tuple[DatasetInfo, Split]:
    """Loads one split for evaluation: "train" (minus val), "val", "test" or "all" (train and val).

    The validation split is re-derived with the same rule as `load_dataset`, so the same `val_size`
    and `seed` give the same images the training run used for model selection. Loading "test" does
    not read the training images of a tensorflow-datasets dataset.
    """
    if split not in SPLIT_NAMES:
        raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLIT_NAMES)}")
    want_train = split != "test"
    info, train, test = _load_source(
        name, data_dir=data_dir, want_train=want_train, want_test=not want_train, num_classes=num_classes
    )
    if split == "test":
        if test is None:
            raise UserError(f"{info.name} has no test split: use --split all (every image in the file) or --split val")
        return info, test
    assert train is not None
    if split == "all":
        return info, train
    if val_size is None:
        val_size = default_val_size(len(train))
    train, val = _hold_out(train, val_size=val_size, seed=seed, dataset=info.name)
    return info, (train if split == "train" else val)


def load_npz(path: str, *, num_classes: int | None = None) -> Split:
    """Reads and validates an npz file with arrays `image` (uint8 [N,H,W,C], C in 1 or 3) and `label` (int [N]).

    This is the layout of the generated-data files published with the paper (e.g. `cifar10_ddpm.npz`).
    Loaded with `allow_pickle=False`: an npz file must never be able to run code.
    """
    if not path:
        raise UserError("empty npz path: give it as npz:PATH, e.g. npz:data/train.npz")
    if not os.path.exists(path):
        raise UserError(f"npz file not found: {path}: check the path")
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, not an npz file: give the path of the .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(
            f"cannot read {path} as an npz archive ({_one_line(e)}): write it with np.savez(path, image=..., label=...)"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        # np.load also reads .npy files and returns a bare array.
        raise UserError(
            f"{path} is a single .npy array, not an npz archive: write it with np.savez(path, image=..., label=...)"
        )
    with archive:
        keys = sorted(archive.files)
        for key in ("image", "label"):
            if key not in keys:
                found = ", ".join(keys) if keys else "none"
                raise UserError(
                    f"{path} has no {key!r} array (arrays found: {found}): the file needs arrays "
                    "'image' (uint8 N x H x W x C) and 'label' (integers, N)"
                )
        images = _read_member(archive, "image", path)
        labels = _read_member(archive, "label", path)

    if images.dtype != np.uint8:
        raise UserError(
            f"{path}: 'image' has dtype {images.dtype}, expected uint8 (pixel values 0..255): "
            "convert it, e.g. np.round(x * 255).astype(np.uint8) for floats in [0, 1]"
        )
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(
            f"{path}: 'image' has shape {images.shape}, expected N x H x W x C with C = 1 or 3 "
            "(channels last; add a channel axis to grey images with x[..., None])"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{path}: 'label' has dtype {labels.dtype}, expected integer class indices "
            "(convert one-hot labels with argmax(axis=1))"
        )
    if labels.ndim != 1:
        raise UserError(
            f"{path}: 'label' has shape {labels.shape}, expected a 1-D array of N class indices "
            "(use label.reshape(-1), or argmax(axis=1) for one-hot labels)"
        )
    if images.shape[0] == 0:
        raise UserError(f"{path} is empty: 'image' has 0 images")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise UserError(f"{path}: 'image' has shape {images.shape}: images must be at least 1 x 1 pixels")
    if labels.shape[0] != images.shape[0]:
        raise UserError(
            f"{path}: {images.shape[0]} images but {labels.shape[0]} labels: 'image' and 'label' "
            "must have the same length"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise UserError(f"{path}: 'label' contains {low}: class indices must be >= 0")
    if num_classes is not None:
        if num_classes < 1:
            raise UserError(f"number of classes must be positive, got {num_classes}")
        if high >= num_classes:
            raise UserError(
                f"{path}: 'label' contains {high} but there are {num_classes} classes: labels must be "
                f"in 0..{num_classes - 1} (or give the right number of classes)"
            )
    return Split(images=np.ascontiguousarray(images), labels=labels.astype(np.int64, copy=False))


# --------------------------------------------------------------------------------------------------
# Sources


def _load_source(
    name: str, *, data_dir: str | None, want_train: bool, want_test: bool, num_classes: int | None
) -> tuple[DatasetInfo, Split | None, Split | None]:
    """Returns (info, train or None, test or None) before any validation split is taken."""
    if not isinstance(name, str):
        raise UserError(f"dataset name must be a string, got {name!r}")
    if name.startswith("npz:"):
        return _load_npz_source(name[len("npz:") :], num_classes=num_classes)
    if num_classes is not None:
        raise UserError(f"the number of classes can only be set for npz:PATH datasets, not {name}")
    if name == "digits":
        return _load_digits()
    if name in ("cifar10", "cifar100", "svhn"):
        return _load_tfds(name, data_dir=data_dir, want_train=want_train, want_test=want_test)
    raise UserError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}, or npz:PATH")


def _load_tfds(
    name: str, *, data_dir: str | None, want_train: bool, want_test: bool
) -> tuple[DatasetInfo, Split | None, Split | None]:
    tfds_name = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped"}[name]
    failure = (
        f"cannot load {name} with tensorflow-datasets (no network or no local copy in "
        f"{data_dir or 'the tensorflow-datasets data directory'}): use --dataset digits, "
        "or npz:PATH for your own arrays"
    )
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(
            f"cannot load {name}: tensorflow-datasets is not installed (pip install tensorflow-datasets), "
            "or use --dataset digits, or npz:PATH for your own arrays"
        ) from None

    wanted = [s for s, want in (("train", want_train), ("test", want_test)) if want]
    splits: dict[str, Split] = {}
    try:
        loaded, tfds_info = tfds.load(tfds_name, split=wanted, as_supervised=True, data_dir=data_dir, with_info=True)
        for split_name, ds in zip(wanted, loaded):
            # Read in chunks and concatenate rather than `batch_size=-1`: that asks for a single batch
            # of `info.splits.total_num_examples` examples, which tfds's own `mock_data` leaves unset
            # (it then tries to allocate sys.maxsize elements and aborts); the arrays are identical.
            chunks = list(tfds.as_numpy(ds.batch(_TFDS_CHUNK)))
            if not chunks:
                raise ValueError(f"split {split_name} of {tfds_name} is empty")
            splits[split_name] = Split(
                images=np.ascontiguousarray(np.concatenate([c[0] for c in chunks]), dtype=np.uint8),
                labels=np.concatenate([c[1] for c in chunks]).astype(np.int64),
            )
    except Exception as e:  # noqa: BLE001 - any failure inside tfds (download, missing files) means "not available"
        # tfds raises many unrelated types (DownloadError, ConnectionError, AssertionError, OSError,
        # DatasetNotFoundError...); the user only needs to know the data is not there.
        logger.debug("tensorflow-datasets failed to load %s: %r", tfds_name, e)
        raise UserError(failure) from None
    any_split = next(iter(splits.values()))
    image_shape = tuple(int(d) for d in any_split.images.shape[1:])

    if name == "cifar10":
        class_names, mean, std, allow_flip = CIFAR10_CLASS_NAMES, _CIFAR10_MEAN, _CIFAR10_STD, True
    elif name == "cifar100":
        class_names = _tfds_class_names(tfds_info, 100)
        mean, std, allow_flip = _CIFAR100_MEAN, _CIFAR100_STD, True
    else:
        # House numbers are not mirror-symmetric: flipping would create digits that do not exist.
        class_names = _tfds_class_names(tfds_info, 10)
        mean, std, allow_flip = _SVHN_MEAN, _SVHN_STD, False

    info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        image_shape=image_shape,  # type: ignore[arg-type]
        mean=tuple(mean),
        std=tuple(std),
        allow_flip=allow_flip,
    )
    return info, splits.get("train"), splits.get("test")


def _tfds_class_names(tfds_info, num_classes: int) -> tuple[str, ...]:
    """Class names from the tfds metadata, or "0".."K-1" when the metadata has none."""
    try:
        names = tuple(str(n) for n in tfds_info.features["label"].names)
    except Exception:  # noqa: BLE001 - metadata shape differs across tfds versions; names are cosmetic
        names = ()
    return names if len(names) == num_classes else tuple(str(i) for i in range(num_classes))


def _load_digits() -> tuple[DatasetInfo, Split, Split]:
    """scikit-learn's embedded 8x8 digits (1797 images, no download), as uint8 [N, 8, 8, 1].

    Pixel values 0..16 are mapped to 0..255 by round(x * 255 / 16). The test split is a stratified
    20% taken with a fixed seed, so it is the same for every run.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(labels.shape[0]),
        test_size=_DIGITS_TEST_FRACTION,
        random_state=_DIGITS_TEST_SEED,
        stratify=labels,
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train = Split(images=images[train_idx], labels=labels[train_idx])
    test = Split(images=images[test_idx], labels=labels[test_idx])
    # Statistics from the fixed training part (before the validation split), so they do not depend on
    # the validation seed and a model's built-in normalisation is the same for every run.
    mean, std = _channel_stats(train.images)
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        image_shape=(8, 8, 1),
        mean=mean,
        std=std,
        allow_flip=False,  # a mirrored 2, 3, 4, 5, 7 or 9 is not that digit
    )
    return info, train, test


def _load_npz_source(path: str, *, num_classes: int | None) -> tuple[DatasetInfo, Split, None]:
    split = load_npz(path, num_classes=num_classes)
    k = num_classes if num_classes is not None else int(split.labels.max()) + 1
    if k < 2:
        raise UserError(f"{path}: every label is 0, so there is only one class: a classifier needs at least 2 classes")
    # Statistics over the whole file (not only the part left after the validation split) so they do
    # not depend on the validation seed.
    mean, std = _channel_stats(split.images, max_images=_NPZ_STATS_MAX_IMAGES)
    info = DatasetInfo(
        name=f"npz:{path}",
        num_classes=k,
        class_names=tuple(str(i) for i in range(k)),
        image_shape=tuple(int(d) for d in split.images.shape[1:]),  # type: ignore[arg-type]
        mean=mean,
        std=std,
        # Natural images (the paper's generated CIFAR-10 data) are flip-invariant; the caller can turn
        # flips off for data that is not (digits, text).
        allow_flip=True,
    )
    return info, split, None


# --------------------------------------------------------------------------------------------------
# Helpers


def _hold_out(train: Split, *, val_size: int, seed: int, dataset: str) -> tuple[Split, Split]:
    """Moves a seeded random subset of `val_size` training images to a validation split.

    Both parts keep the original order of the file (indices are sorted); the training pipeline
    shuffles every epoch anyway, and a stable order makes evaluation output easy to compare.
    """
    if not isinstance(val_size, (int, np.integer)) or isinstance(val_size, bool) or val_size < 0:
        raise UserError(f"validation size must be a non-negative integer, got {val_size!r}: fix --val-size")
    n = len(train)
    if val_size > 0 and val_size >= n // 2:
        largest = max(n // 2 - 1, 0)
        raise UserError(
            f"a validation split of {val_size} images is too large for the {n} training images of "
            f"{dataset}: lower --val-size to {largest} or less"
        )
    order = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(order[:val_size])
    train_idx = np.sort(order[val_size:])
    return (
        Split(images=train.images[train_idx], labels=train.labels[train_idx]),
        Split(images=train.images[val_idx], labels=train.labels[val_idx]),
    )


def _channel_stats(images: np.ndarray, max_images: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images scaled to [0, 1].

    Accumulates sums in float64 chunk by chunk so a large file is never converted to floats at once.
    A channel with zero variance gets std 1.0 (normalisation must not divide by zero).
    """
    n = images.shape[0]
    if max_images is not None and n > max_images:
        idx = np.linspace(0, n - 1, num=max_images).round().astype(np.int64)
    else:
        idx = np.arange(n)
    channels = images.shape[-1]
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    count = 0
    for start in range(0, idx.shape[0], _STATS_CHUNK):
        chunk = images[idx[start : start + _STATS_CHUNK]].astype(np.float64) / 255.0
        flat = chunk.reshape(-1, channels)
        total += flat.sum(axis=0)
        total_sq += np.square(flat).sum(axis=0)
        count += flat.shape[0]
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    std = np.sqrt(var)
    std = np.where(std < 1e-6, 1.0, std)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _read_member(archive, key: str, path: str) -> np.ndarray:
    """Reads one array of an open npz archive, turning corruption into a UserError."""
    try:
        return archive[key]
    except ValueError as e:
        # allow_pickle=False refuses object arrays (lists of arrays, strings saved as objects).
        if "pickle" in str(e).lower():
            raise UserError(
                f"{path}: {key!r} is an object array (dtype object), which is not allowed: save a "
                "plain numeric array (uint8 images, integer labels)"
            ) from None
        raise UserError(f"cannot read {key!r} from {path} (the file looks corrupt: {_one_line(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise UserError(
            f"cannot read {key!r} from {path} (the file looks truncated or corrupt: {_one_line(e)})"
        ) from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."
