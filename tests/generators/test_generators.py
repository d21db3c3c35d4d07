"""tfrobust.generators: the class-conditional Gaussian reproduces its training moments; sharded, resumable output."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from support import write_digits_npz

from tfrobust.data.datasets import DatasetInfo, Split
from tfrobust.data.extra import open_extra_data
from tfrobust.errors import UserError
from tfrobust.generators.gaussian import GaussianGenerator
from tfrobust.generators.generate import generate
from tfrobust.generators.registry import GENERATORS, make_generator


def _gaussian_split(rng, n_per_class=4000):
    """Two classes of 2x2x2 images (D = 8) drawn from known Gaussians, far from 0 and 255 (no clipping)."""
    dim = 8
    images, labels = [], []
    for c, centre in enumerate((90.0, 160.0)):
        a = rng.normal(0, 1, (dim, dim))
        covariance = a @ a.T * 20.0 + np.eye(dim) * 30.0
        x = rng.multivariate_normal(np.full(dim, centre) + np.arange(dim) * 3, covariance, n_per_class)
        images.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
        labels.append(np.full(n_per_class, c, np.int64))
    images = np.concatenate(images).reshape(-1, 2, 2, 2)
    info = DatasetInfo(
        name="toy",
        num_classes=2,
        class_names=("a", "b"),
        image_shape=(2, 2, 2),
        mean=(0.5, 0.5),
        std=(0.2, 0.2),
        allow_flip=False,
    )
    return Split(images=images, labels=np.concatenate(labels)), info


def test_gaussian_reproduces_per_class_means_and_covariances():
    rng = np.random.default_rng(0)
    split, info = _gaussian_split(rng)
    generator = GaussianGenerator()
    generator.fit(split, info)
    images, labels = generator.sample(40_000, np.random.default_rng(1))
    assert images.dtype == np.uint8 and images.shape == (40_000, 2, 2, 2) and labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), [20_000, 20_000])  # balanced
    assert not np.all(labels[:100] == labels[0])  # shuffled, not sorted by class
    for c in range(2):
        train = split.images[split.labels == c].reshape(-1, 8).astype(np.float64)
        sampled = images[labels == c].reshape(-1, 8).astype(np.float64)
        np.testing.assert_allclose(generator.means[c], train.mean(axis=0), rtol=1e-12)
        # Sampling error of the mean: sd / sqrt(20K) < 0.2 grey levels; quantisation adds 1/12 to variances.
        np.testing.assert_allclose(sampled.mean(axis=0), train.mean(axis=0), atol=0.6)
        want_cov = np.cov(train, rowvar=False)
        got_cov = np.cov(sampled, rowvar=False)
        scale = np.sqrt(np.outer(np.diag(want_cov), np.diag(want_cov)))
        assert np.max(np.abs(got_cov - want_cov) / scale) < 0.05


def test_gaussian_handles_constant_pixels_with_jitter():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (50, 3, 3, 1), dtype=np.uint8)
    images[:, 0, 0, 0] = 0  # never varies, like the digits' border: singular covariance
    labels = np.arange(50) % 2
    info = DatasetInfo(
        name="toy",
        num_classes=2,
        class_names=("a", "b"),
        image_shape=(3, 3, 1),
        mean=(0.5,),
        std=(0.2,),
        allow_flip=False,
    )
    generator = GaussianGenerator()
    generator.fit(Split(images=images, labels=labels), info)
    sampled, _ = generator.sample(500, np.random.default_rng(0))
    assert np.abs(sampled[:, 0, 0, 0].astype(int)).max() <= 1  # the constant pixel stays (almost) constant
    with pytest.raises(UserError, match="at least 2"):
        generator.fit(Split(images=images[:3], labels=np.array([0, 0, 1])), info)


def test_registry_is_a_plain_dict():
    assert GENERATORS["gaussian"] is GaussianGenerator
    with pytest.raises(UserError, match="unknown generator"):
        make_generator("ddpm-missing")


def test_generate_writes_resumable_shards(tmp_path):
    npz = write_digits_npz(tmp_path / "digits.npz", n=300)
    out = str(tmp_path / "gen")
    kwargs = dict(shard_size=40, seed=5, val_size=32, progress=False)
    summary = generate("gaussian", f"npz:{npz}", 100, out, **kwargs)
    assert summary["images"] == 100 and summary["shards"] == 3 and sum(summary["per_class"].values()) == 100
    data = open_extra_data([out], num_classes=10)
    assert len(data) == 100 and data.image_shape == (8, 8, 1) and data.labelled
    before = data.gather(np.arange(100))
    # An interrupted run: shard 1 missing, not marked complete. Rerunning writes exactly what was lost.
    os.remove(os.path.join(out, "shard-00001.npz"))
    os.remove(os.path.join(out, "summary.json"))
    state_path = os.path.join(out, "tfrobust-output.json")
    state = json.load(open(state_path))
    state["complete"] = False
    json.dump(state, open(state_path, "w"))
    generate("gaussian", f"npz:{npz}", 100, out, **kwargs)
    after = open_extra_data([out], num_classes=10).gather(np.arange(100))
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    # Other settings into the same directory: refused; a directory with foreign files: refused.
    with pytest.raises(UserError, match="other settings"):
        generate("gaussian", f"npz:{npz}", 120, out, **kwargs)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="did not write"):
        generate("gaussian", f"npz:{npz}", 100, str(tmp_path / "mine"), overwrite=True, **kwargs)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
