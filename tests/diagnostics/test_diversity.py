"""Tests for tfrobust.diagnostics.diversity (`tfrobust diversity`): Table 1's nearest-neighbour proportions.

Synthetic images: a mixture of Gaussian blobs in 8x8x1 image space. A set copied from the train sample has
every nearest neighbour in train; fresh draws of the same distribution split evenly between train and
test (and, the set being a third of the pool, about a third each, entropy near ln 3).
"""

import json
import os

import keras
import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from tfrobust.cli import cli
from tfrobust.data.datasets import load_split
from tfrobust.diagnostics.diversity import (
    Extractor,
    diversity,
    entropy,
    model_extractor,
    pixel_extractor,
)
from tfrobust.errors import UserError
from tfrobust.export import export_network

CENTRES = np.random.default_rng(123).uniform(0.2, 0.8, size=(5, 8, 8, 1))


def draw(n, seed):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, len(CENTRES), n)
    return np.clip(CENTRES[c] + 0.08 * rng.normal(size=(n, 8, 8, 1)), 0, 1).astype(np.float32)


TRAIN, TEST = draw(400, 1), draw(400, 2)


def test_set_copied_from_train_has_its_neighbours_in_train():
    result = diversity(TRAIN, TEST, TRAIN.copy(), pixel_extractor(), pca_dims=100)
    assert result["set"]["proportions"] == {"train": 1.0, "test": 0.0, "self": 0.0}
    assert result["set"]["entropy_nats"] == 0.0
    assert result["pca_components"] == 64  # capped by the 64 pixel features
    assert result["extractor"] == "pixels"


def test_fresh_samples_split_evenly_between_train_and_test():
    fresh = draw(400, 3)
    result = diversity(TRAIN, TEST, fresh, pixel_extractor(), pca_dims=100)  # all 64 components: a rotation
    p = result["set"]["proportions"]
    assert abs(p["train"] - p["test"]) < 0.1, p
    for source in ("train", "test", "self"):
        assert 0.23 < p[source] < 0.43, p
    assert result["set"]["entropy_nats"] > 1.05  # ln 3 = 1.0986 is the maximum
    # Table 1's "Original data" rows: train and test images split about evenly too.
    for row in ("train", "test"):
        assert abs(result["baselines"][row]["proportions"]["train"] - 0.5) < 0.1
    # With fewer components than the data has noise directions, the PCA fitted on train+test keeps the
    # directions where those images happen to vary most; fresh samples vary less there and end up closer
    # to each other ("self" grows), but train and test still share the rest equally.
    reduced = diversity(TRAIN, TEST, fresh, pixel_extractor(), pca_dims=20)["set"]["proportions"]
    assert abs(reduced["train"] - reduced["test"]) < 0.1 and reduced["self"] > p["self"], reduced


def test_near_copies_are_close_to_train_and_far_samples_to_self():
    near = np.clip(TRAIN + 0.01 * np.random.default_rng(4).normal(size=TRAIN.shape), 0, 1).astype(np.float32)
    assert diversity(TRAIN, TEST, near, pixel_extractor())["set"]["proportions"]["train"] > 0.95
    # A set far from the data (its own tight cluster) has its neighbours among itself: Table 1's VDVAE case.
    far = (0.02 * np.random.default_rng(5).uniform(size=TRAIN.shape)).astype(np.float32)
    assert diversity(TRAIN, TEST, far, pixel_extractor())["set"]["proportions"]["self"] == 1.0


def test_entropy_in_nats():
    assert entropy(np.array([1 / 3, 1 / 3, 1 / 3])) == pytest.approx(np.log(3))
    # Table 1's CutMix row: 84.04 / 4.45 / 11.51 % -> 0.53.
    assert entropy(np.array([0.8404, 0.0445, 0.1151])) == pytest.approx(0.53, abs=0.005)


def test_extractor_is_used_and_named():
    # A feature map that keeps only the first pixel: the statistics follow the extractor, not the pixels.
    calls = []

    def first_pixel(images):
        calls.append(len(images))
        return images.reshape(len(images), -1)[:, :1]

    result = diversity(TRAIN[:50], TEST[:50], TRAIN[:50].copy(), Extractor("first-pixel", first_pixel), batch_size=32)
    assert result["extractor"] == "first-pixel" and result["feature_size"] == 1 and result["pca_components"] == 1
    assert sum(calls) == 150 and max(calls) == 32


def test_model_without_features_is_one_clear_error(tmp_path):
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Activation("softmax")(keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    path = str(tmp_path / "no_dense_last.keras")
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(UserError, match="no penultimate features"), pytest.warns(UserWarning, match="probabilities"):
        model_extractor(path)


def _classifier(tmp_path):
    """A Flatten -> Dense(16) -> Dense(10) classifier exported as a tfrobust SavedModel (features: 16)."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="images"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    info, split = load_split("digits", "train", val_size=0)
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(split.images.astype(np.float32) / 255.0, split.labels, epochs=15, batch_size=64, verbose=0)
    return export_network(model, root=str(tmp_path), name="digits-mlp", metadata={"dataset": {"name": "digits"}})


def test_cli_with_a_classifier_extractor_and_a_generated_set(tmp_path):
    model = _classifier(tmp_path)
    _, test = load_split("digits", "test")
    npz = str(tmp_path / "generated.npz")
    np.savez(npz, image=test.images[:200], label=test.labels[:200])  # "generated" = held-out real digits
    out = str(tmp_path / "diversity")
    args = ["diversity", "--set", f"npz:{npz}", "--n", "150", "--extractor", model, "--classifier", model, "--out", out]
    result = CliRunner().invoke(cli, args)  # dataset from the classifier's metadata
    assert result.exit_code == 0, result.output
    assert "input of layer 'dense_1'" in result.output or "input of layer" in result.output
    report = json.load(open(os.path.join(out, "diversity.json")))
    assert report["dataset"] == "digits" and report["n"] == {"train": 150, "test": 150, "set": 150}
    assert report["feature_size"] == 16 and report["pca_components"] == 16
    assert sum(report["set"]["counts"].values()) == 150
    assert sum(report["quality"]["set_class_counts"]) == 150
    # The classifier agrees with real labels about as often as its test accuracy (both real digits).
    quality = report["quality"]
    assert quality["classifier_test_accuracy"] > 0.8
    assert abs(quality["label_agreement"] - quality["classifier_test_accuracy"]) < 0.1
    image = matplotlib.image.imread(os.path.join(out, "diversity.png"))
    assert image[..., :3].std() > 0.01
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0 and "--overwrite" in refused.output


def test_cli_augmentation_set_and_bad_input(tmp_path):
    out = str(tmp_path / "cutmix")
    result = CliRunner().invoke(
        cli, ["diversity", "--dataset", "digits", "--aug", "cutmix", "--n", "120", "--out", out]
    )
    assert result.exit_code == 0, result.output
    assert "extractor: pixels" in result.output
    report = json.load(open(os.path.join(out, "diversity.json")))
    assert report["set"]["proportions"]["train"] > report["set"]["proportions"]["test"]
    both = CliRunner().invoke(
        cli, ["diversity", "--dataset", "digits", "--aug", "cutmix", "--set", "npz:x.npz", "--out", str(tmp_path / "x")]
    )
    assert both.exit_code != 0 and "exactly one of --aug" in both.output
    missing = CliRunner().invoke(cli, ["diversity", "--aug", "cutmix", "--out", str(tmp_path / "y")])
    assert missing.exit_code != 0 and "--dataset" in missing.output


def test_npz_dataset_with_held_out_test_file(tmp_path):
    """An npz dataset has no test split: --test npz:PATH gives the held-out images (the CIFAR-10 copy's case)."""
    from support import write_digits_npz

    digits = np.load(write_digits_npz(tmp_path / "all.npz", n=600))
    np.savez(tmp_path / "train.npz", image=digits["image"][:400], label=digits["label"][:400])
    np.savez(tmp_path / "test.npz", image=digits["image"][400:], label=digits["label"][400:])
    common = ["diversity", "--dataset", f"npz:{tmp_path / 'train.npz'}", "--aug", "padcrop", "--n", "150"]
    without = CliRunner().invoke(cli, common + ["--out", str(tmp_path / "a")])
    assert without.exit_code != 0 and "no test split" in without.output
    result = CliRunner().invoke(cli, common + ["--test", f"npz:{tmp_path / 'test.npz'}", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    report = json.load(open(tmp_path / "b" / "diversity.json"))
    assert sum(report["set"]["proportions"].values()) == pytest.approx(1.0)
