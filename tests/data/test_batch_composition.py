"""The paper presets' batches are the reference's, counted per batch on tagged synthetic images.

DeepMind's adversarial_robustness/jax (experiment.py `get_config`, `_dataset`, `concatenate`, `_train_fn`;
datasets.py `_repeat_batch`; utils.py `cutmix`): every device batch holds d = n / 4 distinct slots (4
emulated workers); without extra data all d are original images, each in 4 consecutive rows; with
generated data r = round(0.3 d) original images, each in 4 consecutive rows, then 4 (d - r) distinct
generated images with label smoothing 0.1; CutMix draws one lambda, box and partner permutation per
device batch, shared by the 4 strided sub-batches.

The batches come from `tfrobust.training.run.training_stream`, what `fit` trains on, built from the
preset's config (only the dataset is swapped for tagged arrays: every image is constant per channel,
channel 0 + 256 x channel 1 its index, channel 2 255 for generated images; Pad&Crop's 1-pixel padding on
8x8 images leaves the centre pixel intact).
"""

from __future__ import annotations

import numpy as np
import pytest

from tfrobust.config import make_config
from tfrobust.training.run import _open_extra_data, training_stream

N_REAL, N_GEN, SIDE = 2048, 3000, 8


def _tagged(n: int, generated: bool) -> np.ndarray:
    index = np.arange(n)
    tags = np.stack([index % 256, index // 256, np.full(n, 255 if generated else 0)], axis=1).astype(np.uint8)
    return np.broadcast_to(tags[:, None, None, :], (n, SIDE, SIDE, 3)).copy()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tagged")
    np.savez(root / "real.npz", image=_tagged(N_REAL, False), label=(np.arange(N_REAL) % 10).astype(np.int64))
    np.savez(root / "generated.npz", image=_tagged(N_GEN, True), label=(np.arange(N_GEN) % 10).astype(np.int64))
    # Labels = image index: a mixed label row names both sources and their weights.
    np.savez(root / "indexed.npz", image=_tagged(1024, False), label=np.arange(1024, dtype=np.int64))
    return {name: str(root / f"{name}.npz") for name in ("real", "generated", "indexed")}


def _decode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = np.round(x[:, SIDE // 2, SIDE // 2] * 255).astype(np.int64)
    return centre[:, 0] + 256 * centre[:, 1], centre[:, 2] == 255


def _stream(preset: str, overrides: dict, replicas: int, batches: int):
    config = make_config(preset, {"val_size": 0, **overrides}).validate().resolved()
    splits, extra = _open_extra_data(config) if config.extra_data else (None, None)
    if splits is None:
        from tfrobust.data.datasets import load_dataset

        splits = load_dataset(config.dataset, val_size=0, seed=config.seed)
    steps = len(splits.train) // config.batch_size
    data, counts = training_stream(config, splits, extra, replicas=replicas, first_epoch=0, steps_per_epoch=steps)
    return config, steps, counts, [(x.numpy(), y.numpy()) for x, y in data.take(batches)]


@pytest.mark.parametrize("replicas", [1, 2])
def test_no_extra_data_preset(data, replicas):
    config, steps, counts, batches = _stream(
        "cifar10-wrn-28-10-padcrop", {"dataset": f"npz:{data['real']}"}, replicas, batches=4
    )
    assert (config.batch_size, config.aug_repeats) == (512, 4) and counts is None and steps == 4
    n = 512 // replicas
    epoch = []
    for x, y in batches:
        index, generated = _decode(x)
        assert x.shape[0] == 512 and not generated.any()
        for k in range(replicas):
            block = index[k * n : (k + 1) * n].reshape(-1, 4)  # [distinct, copies]
            assert (block == block[:, :1]).all()  # each image in 4 consecutive rows
            assert len(set(block[:, 0].tolist())) == n // 4  # 128 distinct images per batch (64 per replica)
        labels = y.argmax(axis=1)
        np.testing.assert_array_equal(labels, index % 10)
        # The copies are augmented independently (Pad&Crop moves the zero border of a constant image).
        copies = x.reshape(-1, 4, *x.shape[1:])
        assert np.mean([not np.array_equal(c[0], c[1]) for c in copies]) > 0.5
        epoch += index[::4].tolist()
    assert len(set(epoch)) == len(epoch) == 4 * 128  # one epoch: no image twice


@pytest.mark.parametrize("replicas, real, generated", [(1, 77, 716), (2, 38, 360)])
def test_generated_data_preset(data, replicas, real, generated):
    config, steps, counts, batches = _stream(
        "cifar10-wrn-28-10-ddpm",
        {"dataset": f"npz:{data['real']}", "extra_data": (data["generated"],)},
        replicas,
        batches=3,
    )
    assert (config.batch_size, config.aug_repeats, config.real_ratio) == (1024, 4, 0.3) and steps == 2
    n = 1024 // replicas
    # The reference's `_dataset`: d = n / 4 slots, r = round(0.3 d) originals (x 4), 4 (d - r) generated.
    d = n // 4
    assert real == max(1, min(round(d * 0.3), d - 1)) and generated == 4 * (d - real)
    assert counts == (replicas * 4 * real, replicas * generated)  # rows of every batch
    seen_generated: list[int] = []
    for x, y in batches:
        index, is_generated = _decode(x)
        for k in range(replicas):
            rows = slice(k * n, (k + 1) * n)
            block, block_generated, labels = index[rows], is_generated[rows], y[rows]
            assert not block_generated[: 4 * real].any() and block_generated[4 * real :].all()
            originals = block[: 4 * real].reshape(real, 4)
            assert (originals == originals[:, :1]).all() and len(set(originals[:, 0].tolist())) == real
            assert len(set(block[4 * real :].tolist())) == generated  # generated rows all distinct
            seen_generated += block[4 * real :].tolist()
            # Label smoothing 0.1 on generated rows only.
            np.testing.assert_array_equal(labels[: 4 * real].max(axis=1), 1.0)
            np.testing.assert_allclose(labels[4 * real :].max(axis=1), 0.9 + 0.01, atol=1e-6)
        # Original rows counted after repetition: 308 / 1024 = 0.3008 on one device, 304 / 1024 on two.
        assert (~is_generated).sum() == replicas * 4 * real
        assert abs((~is_generated).mean() - 0.3) < 0.01
    assert len(set(seen_generated)) == len(seen_generated)  # no generated image twice in 3 batches


@pytest.mark.parametrize("replicas", [1, 2])
def test_cutmix_preset_draws_once_per_device_batch(data, replicas):
    overrides = {"dataset": f"npz:{data['indexed']}"}
    config, _, _, batches = _stream("cifar10-wrn-28-10-cutmix", overrides, replicas, batches=3)
    assert (config.aug, config.mix_draws, config.aug_repeats) == ("padcrop+cutmix", "batch", 4)
    n = 512 // replicas
    mixed_blocks = 0
    for _, y in batches:
        for k in range(replicas):
            block = y[k * n : (k + 1) * n]
            # Labels = image index: row r's label has weight 1 - f on its image and f on its partner's.
            sources = [np.flatnonzero(row) for row in block]
            fractions = {tuple(np.round(np.sort(row[row > 0]), 6)) for row, s in zip(block, sources) if len(s) == 2}
            assert len(fractions) <= 1, fractions  # one box per device batch
            if fractions:
                mixed_blocks += 1
            # The 4 copies of an image (rows 4a..4a+3) are mixed with the 4 copies of one partner image.
            for a in range(n // 4):
                group = [frozenset(s.tolist()) for s in sources[4 * a : 4 * a + 4]]
                assert len(set(group)) == 1, group
    assert mixed_blocks >= 2
    # --mix-draws example: every example its own box (8x8 images: pasted fractions are multiples of 1/64).
    _, _, _, batches = _stream("cifar10-wrn-28-10-cutmix", {**overrides, "mix_draws": "example"}, replicas, 1)
    y = batches[0][1]
    fractions = {tuple(np.round(np.sort(row[row > 0]), 6)) for row in y if np.count_nonzero(row) == 2}
    assert len(fractions) > 10
