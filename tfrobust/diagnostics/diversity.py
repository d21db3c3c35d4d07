"""`tfrobust diversity`: the nearest-neighbour statistics of Tables 1 and 7, for any augmentation or
generated set, plus the quality numbers that need no Inception network.

Rebuffi et al. 2021, Sec. 5 and App. D ("Diversity and complementarity"): embed N training images, N test
images and N images of the set with a feature extractor; fit a PCA with 100 components on the train+test
features and project all three; for every sample of the set find its nearest neighbour (Euclidean, in the
PCA space) among train ∪ test ∪ (set without the sample itself) and report the proportions of neighbours
in train, test and the set ("self"), with the entropy of those proportions in nats (natural logarithm, the
caption of Table 1; the maximum, ln 3 ≈ 1.099, means equally likely). An augmentation that only makes
variations of training images has its neighbours in train; samples of the data distribution itself split
evenly between train and test (Table 1's "Original data" rows, which this module reports too as the
`train` and `test` baselines: each reference image's neighbour among the other train and test images).

Differences from the paper, said in every output:

- The paper's extractor is LPIPS-VGG (Zhang et al. 2018), whose weights cannot be downloaded here. The
  extractor is an argument: `pixels` (the default: raw pixel values in [0, 1], flattened) or any classifier
  (`--extractor MODEL`: a tfrobust SavedModel's `features` endpoint, i.e. the input of the final Dense
  layer, or a `.keras` classifier's same activations). Pixel space is a much cruder neighbourhood than a
  perceptual one; a (preferably non-robust) classifier's features are closer to LPIPS in spirit.
- N = min(`n`, train, test, set sizes), the same N for all three so that chance proportions are equal (the
  paper: 10K train, the 10K test images, 10K of the set). The reference train and test images are drawn
  at random (seeded). An augmented set is made from the reference train images themselves, in batches
  (mixing augmentations pair images within a batch of `batch_size`, partners in random order): Table 1's
  ~96% train / ~0.3% test for MixUp is only possible when each augmented image's source is among the
  reference train images, so this is our reading of the paper; the statistic then measures how far an
  augmentation moves an image from its source compared with the spread of the data.
- Ties between neighbours at the same distance (exact duplicates) are broken in sklearn's search order.

Quality numbers without Inception (Table 7 reports IS/FID, which need Inception weights): the set's
per-class counts (labels of an npz set; the dominant class of soft labels after mixing), and with
`--classifier MODEL` the fraction of the set whose label the classifier agrees with, next to the same
classifier's accuracy on the test sample as the reference value.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfrobust.diagnostics.output import ReportDir, pyplot, text_table
from tfrobust.errors import UserError

PIXELS = "pixels"
SOURCES = ("train", "test", "self")
FeaturesFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Extractor:
    """Images [N,H,W,C] in [0,1] -> features [N, D]; `name` is what the outputs say was used."""

    name: str
    fn: FeaturesFn
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)  # the model's tfrobust metadata


def pixel_extractor() -> Extractor:
    return Extractor("pixels", lambda images: images.reshape(len(images), -1).astype(np.float32))


def model_extractor(path: str, *, trust_model: bool = False) -> Extractor:
    """The penultimate activations of a classifier (see `export.penultimate_network`); the model is inspected
    before anything in it runs (`tfrobust.inspection`) unless `trust_model`."""
    import tensorflow as tf

    from tfrobust.export import load_model

    model = load_model(path, trust_model=trust_model)
    if model.features is None:
        raise UserError(
            f"{path} exposes no penultimate features (no 'features' endpoint, or no final Dense layer): "
            "re-export it with this tfrobust version (tfrobust export RUN_DIR), or give a .keras "
            "classifier ending in a Dense layer"
        )
    layer = model.metadata.get("features", {}).get("layer", "final Dense")
    return Extractor(
        f"{model.path} (input of layer {layer!r})",
        lambda images: np.asarray(model.features(tf.constant(images, tf.float32))).reshape(len(images), -1),
        model.metadata,
    )


def embed(images: np.ndarray, extractor: Extractor, batch_size: int, bar: Any = None) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch_size):
        out.append(np.asarray(extractor.fn(images[start : start + batch_size]), np.float64))
        if bar is not None:
            bar.add(1)
    return np.concatenate(out)


def project(
    train: np.ndarray, test: np.ndarray, others: list[np.ndarray], dims: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], int]:
    """PCA fitted on train+test features (App. D: "top-100 PCA components"), applied to all."""
    from sklearn.decomposition import PCA

    reference = np.concatenate([train, test])
    components = min(dims, reference.shape[0], reference.shape[1])
    pca = PCA(n_components=components, random_state=seed).fit(reference)
    return pca.transform(train), pca.transform(test), [pca.transform(o) for o in others], components


def neighbour_sources(pool: np.ndarray, groups: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each row index in `queries`, the group of its nearest neighbour in `pool`, itself excluded."""
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=2).fit(pool)
    _, index = search.kneighbors(pool[queries])
    # The query is in the pool: drop it (it is usually first, but a duplicate at distance 0 may come first).
    nearest = np.where(index[:, 0] == queries, index[:, 1], index[:, 0])
    return groups[nearest]


def entropy(proportions: np.ndarray) -> float:
    """Shannon entropy in nats (natural log, Table 1's convention), 0·log 0 = 0."""
    p = np.asarray(proportions, np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: no "-0.0" for a single source


def _row(sources: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    counts = {name: int((sources == i).sum()) for i, name in enumerate(names)}
    total = max(len(sources), 1)
    proportions = {name: counts[name] / total for name in names}
    return {"counts": counts, "proportions": proportions, "entropy_nats": entropy(np.array(list(proportions.values())))}


def neighbour_statistics(train: np.ndarray, test: np.ndarray, samples: np.ndarray) -> dict[str, Any]:
    """Table 1's row for `samples` (features already projected) and the train/test baselines."""
    n_train, n_test, n_set = len(train), len(test), len(samples)
    pool = np.concatenate([train, test, samples])
    groups = np.repeat(np.arange(3), [n_train, n_test, n_set])
    set_rows = np.arange(n_train + n_test, n_train + n_test + n_set)
    row = _row(neighbour_sources(pool, groups, set_rows), SOURCES)
    # The "Original data" rows: reference images against the other reference images (no set in the pool).
    original = pool[: n_train + n_test]
    sources = neighbour_sources(original, groups[: n_train + n_test], np.arange(n_train + n_test))
    baselines = {"train": _row(sources[:n_train], SOURCES[:2]), "test": _row(sources[n_train:], SOURCES[:2])}
    return {"set": row, "baselines": baselines}


def class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(labels.astype(np.int64), minlength=num_classes)[:num_classes].tolist()


def augmented_set(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    aug: str,
    image_shape,
    allow_flip: bool,
    num_classes: int,
    batch_size: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Applies the augmentation chain `aug` (as training does) to uint8 images; returns float images in
    [0, 1] and the dominant class of each (soft) label."""
    import tensorflow as tf

    from tfrobust.augment.registry import build_augmentation, mixing_options, parse_aug

    names = parse_aug(aug)
    # Per-example mixing draws: the statistics are per sample, and independent samples measure the
    # augmentation's distribution (training draws once per device batch by default, same marginals).
    layer = build_augmentation(
        names, image_shape=image_shape, allow_flip=allow_flip, options=mixing_options(names, draws="example")
    )
    out_images, out_labels = [], []
    for b, start in enumerate(range(0, len(images), batch_size)):
        batch = {
            "images": tf.constant(images[start : start + batch_size], tf.float32) / 255.0,
            "labels": tf.one_hot(labels[start : start + batch_size], num_classes),
        }
        result = layer(batch, training=True, seed=tf.constant([seed, b], tf.int64))
        out_images.append(np.clip(result["images"].numpy(), 0.0, 1.0))
        out_labels.append(result["labels"].numpy().argmax(-1))
    return np.concatenate(out_images).astype(np.float32), np.concatenate(out_labels)


def diversity(
    train: np.ndarray,
    test: np.ndarray,
    samples: np.ndarray,
    extractor: Extractor,
    *,
    pca_dims: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Nearest-neighbour statistics of `samples` against `train` and `test` (all float images in [0, 1])."""
    steps = sum(math.ceil(len(a) / batch_size) for a in (train, test, samples))
    bar = keras.utils.Progbar(steps, unit_name="batch") if progress else None
    features = [embed(a, extractor, batch_size, bar) for a in (train, test, samples)]
    train_p, test_p, (set_p,), dims = project(features[0], features[1], [features[2]], pca_dims, seed)
    stats = neighbour_statistics(train_p, test_p, set_p)
    return {
        "extractor": extractor.name,
        "feature_size": int(features[0].shape[1]),
        "pca_components": dims,
        "n": {"train": len(train), "test": len(test), "set": len(samples)},
        **stats,
    }


@dataclasses.dataclass(frozen=True)
class DiversitySettings:
    """What `tfrobust diversity` was asked. Exactly one of `aug` / `set_path` names the set."""

    out: str
    dataset: str | None = None
    data_dir: str | None = None
    aug: str | None = None
    set_path: str | None = None  # "npz:PATH"
    # "npz:PATH" of held-out images, for datasets without a test split (an npz:PATH dataset)
    test_path: str | None = None
    n: int = 10_000
    extractor: str = PIXELS
    classifier: str | None = None
    pca_dims: int = 100
    batch_size: int = 256
    seed: int = 0
    overwrite: bool = False
    # Load --extractor and --classifier without `tfrobust.inspection` (`export.load_model`); diversity.json records it
    trust_model: bool = False


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _table(result: dict[str, Any], set_name: str) -> str:
    rows = []
    for name in ("train", "test"):
        p = result["baselines"][name]["proportions"]
        rows.append([f"{name} (original data)", _percent(p["train"]), _percent(p["test"]), "-", "-"])
    p = result["set"]["proportions"]
    rows.append(
        [
            set_name,
            _percent(p["train"]),
            _percent(p["test"]),
            _percent(p["self"]),
            f"{result['set']['entropy_nats']:.2f}",
        ]
    )
    return text_table(["setup", "train", "test", "self", "entropy (nats)"], rows)


def plot_diversity(result: dict[str, Any], set_name: str, class_names: list[str]):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    setups = ["train (original)", "test (original)", set_name]
    shares = [
        result["baselines"]["train"]["proportions"],
        result["baselines"]["test"]["proportions"],
        result["set"]["proportions"],
    ]
    left = np.zeros(len(setups))
    for source, colour in zip(SOURCES, ("tab:blue", "tab:orange", "tab:green")):
        values = np.array([100 * s.get(source, 0.0) for s in shares])
        axes[0].barh(setups, values, left=left, color=colour, label=source)
        left += values
    axes[0].set_xlabel("nearest neighbour in (%)")
    axes[0].set_title(f"nearest neighbours (extractor: {result['extractor'][:40]})", fontsize=9)
    axes[0].legend(fontsize=8)
    counts = result["quality"]["set_class_counts"]
    axes[1].bar(range(len(counts)), counts, color="tab:green", label="set labels")
    predicted = result["quality"].get("classifier_class_counts")
    if predicted is not None:
        axes[1].plot(range(len(predicted)), predicted, "k.", markersize=10, label="classifier's predictions")
    axes[1].set_xticks(range(len(counts)))
    axes[1].set_xticklabels(class_names, rotation=45, fontsize=7)
    axes[1].set_title("per-class counts of the set")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_diversity(settings: DiversitySettings) -> dict[str, Any]:
    """Loads the data, the set and the models, computes the statistics, writes diversity.json/.md/.png."""
    from tfrobust.data.datasets import load_npz, load_split
    from tfrobust.export import load_model

    if (settings.aug is None) == (settings.set_path is None):
        raise UserError("give exactly one of --aug CHAIN (an augmentation of training images) or --set npz:PATH")
    if settings.set_path is not None and not settings.set_path.startswith("npz:"):
        raise UserError(f"--set takes npz:PATH, got {settings.set_path!r}")
    if settings.n < 2 or settings.pca_dims < 1 or settings.batch_size < 1:
        raise UserError("--n must be >= 2, --pca-dims and --batch-size >= 1")
    extractor = (
        pixel_extractor()
        if settings.extractor == PIXELS
        else model_extractor(settings.extractor, trust_model=settings.trust_model)
    )
    classifier = load_model(settings.classifier, trust_model=settings.trust_model) if settings.classifier else None
    dataset = (
        settings.dataset
        or (classifier.metadata if classifier else {}).get("dataset", {}).get("name")
        or extractor.metadata.get("dataset", {}).get("name")
    )
    if dataset is None:
        raise UserError("give --dataset (no model with tfrobust metadata to take it from)")
    info, train_split = load_split(dataset, "train", val_size=0, data_dir=settings.data_dir)
    if settings.test_path is not None:
        if not settings.test_path.startswith("npz:"):
            raise UserError(f"--test takes npz:PATH, got {settings.test_path!r}")
        test_split = load_npz(settings.test_path[len("npz:") :], num_classes=info.num_classes)
        if tuple(test_split.images.shape[1:]) != tuple(info.image_shape):
            raise UserError(
                f"the --test images are {list(test_split.images.shape[1:])} but {info.name}'s are "
                f"{list(info.image_shape)}"
            )
    else:
        _, test_split = load_split(dataset, "test", data_dir=settings.data_dir)

    rng = np.random.default_rng(settings.seed)
    if settings.set_path is not None:
        candidate = load_npz(settings.set_path[len("npz:") :], num_classes=info.num_classes)
        if tuple(candidate.images.shape[1:]) != tuple(info.image_shape):
            raise UserError(
                f"the set's images are {list(candidate.images.shape[1:])} but {info.name}'s are "
                f"{list(info.image_shape)}"
            )
        set_size, set_name = len(candidate), os.path.basename(settings.set_path[len("npz:") :])
    else:
        candidate, set_size, set_name = None, len(train_split), f"aug {settings.aug}"
    n = min(settings.n, len(train_split), len(test_split), set_size)
    if n < 2:
        raise UserError(f"need at least 2 images in each of train, test and the set, got n = {n}")
    train_index = rng.choice(len(train_split), n, replace=False)
    test_index = rng.choice(len(test_split), n, replace=False)
    train = train_split.images[train_index].astype(np.float32) / 255.0
    test = test_split.images[test_index].astype(np.float32) / 255.0
    if candidate is not None:
        set_index = rng.choice(len(candidate), n, replace=False)
        samples = candidate.images[set_index].astype(np.float32) / 255.0
        set_labels = candidate.labels[set_index]
    else:
        # The reference train images themselves, shuffled so that mixing partners are random (see the
        # module docstring for why the sources are the reference images).
        source = rng.permutation(train_index)
        samples, set_labels = augmented_set(
            train_split.images[source],
            train_split.labels[source],
            aug=settings.aug,
            image_shape=info.image_shape,
            allow_flip=info.allow_flip,
            num_classes=info.num_classes,
            batch_size=settings.batch_size,
            seed=settings.seed,
        )
    folder = ReportDir(settings.out, command="diversity", overwrite=settings.overwrite)
    result = diversity(
        train,
        test,
        samples,
        extractor,
        pca_dims=settings.pca_dims,
        batch_size=settings.batch_size,
        seed=settings.seed,
        progress=True,
    )
    quality: dict[str, Any] = {"set_class_counts": class_counts(set_labels, info.num_classes)}
    if classifier is not None:
        import tensorflow as tf

        def predict(images: np.ndarray) -> np.ndarray:
            return np.concatenate(
                [
                    np.asarray(classifier.logits(tf.constant(images[i : i + settings.batch_size]))).argmax(-1)
                    for i in range(0, len(images), settings.batch_size)
                ]
            )

        predicted = predict(samples)
        quality.update(
            {
                "classifier": classifier.path,
                "label_agreement": float((predicted == set_labels).mean()),
                "classifier_test_accuracy": float((predict(test) == test_split.labels[test_index]).mean()),
                "classifier_class_counts": class_counts(predicted, info.num_classes),
            }
        )
    result = {
        "dataset": info.name,
        "set": set_name,
        "seed": settings.seed,
        "trust_model": settings.trust_model,
        **result,
        "quality": quality,
        "entropy_unit": "nats (natural logarithm, as Table 1); maximum ln 3 = 1.099",
    }
    folder.write_json("diversity.json", result)
    folder.save_figure("diversity.png", plot_diversity(result, set_name, list(info.class_names)))
    table = _table(result, set_name)
    lines = [
        f"extractor: {result['extractor']} (the paper: LPIPS-VGG); PCA {result['pca_components']} components "
        f"fitted on train+test; n = {n} each",
        table,
    ]
    if "label_agreement" in quality:
        lines.append(
            f"label agreement with {quality['classifier']}: {_percent(quality['label_agreement'])} "
            f"(its accuracy on the test sample: {_percent(quality['classifier_test_accuracy'])})"
        )
    folder.write_text(
        "diversity.md",
        "\n".join(
            [
                "# Nearest-neighbour diversity",
                "",
                f"{info.name}, set: {set_name}",
                "",
                "```",
                *lines,
                "```",
                "",
                "![diversity](diversity.png)",
                "",
            ]
        ),
    )
    folder.finish()
    return {"report": result, "table": "\n".join(lines), "files": [folder.path(f) for f in folder.files]}
