"""tfrobust.data.mixing: exact ratio per batch, sampling without replacement, full shuffle, smoothing, resume, memory."""

from __future__ import annotations

import numpy as np
import pytest

from tfrobust.augment.pad_crop import PadCrop
from tfrobust.data.datasets import Split
from tfrobust.data.extra import open_extra_data
from tfrobust.data.mixing import (
    index_permutation,
    mix_plan,
    mixed_train_dataset,
    permutation_key,
)
from tfrobust.errors import UserError

K = 5
N_REAL, N_GEN = 60, 200
_GEN_MARK = 200  # pixel [1, 0, 0] of a generated image; 0 for original ones


def _real(n=N_REAL) -> Split:
    images = np.zeros((n, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 0, 1, 0] = np.arange(n) // 256
    return Split(images=images, labels=(np.arange(n) % K).astype(np.int64))


def _generated(tmp_path, m=N_GEN):
    """A class-sorted file, as the published ones are: labels 0,0,...,1,1,...."""
    images = np.zeros((m, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(m) % 256
    images[:, 0, 1, 0] = np.arange(m) // 256
    images[:, 1, 0, 0] = _GEN_MARK
    labels = (np.arange(m) * K // m).astype(np.int64)
    np.savez(tmp_path / "gen.npz", image=images, label=labels)
    return open_extra_data([str(tmp_path / "gen.npz")], num_classes=K)


def _decode(x):
    pixels = np.round(x.numpy() * 255).astype(np.int64)
    index = pixels[:, 0, 0, 0] + 256 * pixels[:, 0, 1, 0]
    generated = pixels[:, 1, 0, 0] == _GEN_MARK
    return index, generated


def _dataset(tmp_path, **overrides):
    kwargs = dict(
        num_classes=K,
        batch_size=10,
        real_ratio=0.3,
        label_smoothing=0.1,
        seed=3,
        first_epoch=0,
        steps_per_epoch=6,
        augment=None,
    )
    kwargs.update(overrides)
    return mixed_train_dataset(_real(), _generated(tmp_path), **kwargs)


def test_index_permutation_is_a_bijection_for_any_size():
    for n in (1, 2, 3, 7, 64, 100, 1000, 4097):
        order = index_permutation(np.arange(n), n, permutation_key(0, 1, n))
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
    a = index_permutation(np.arange(1000), 1000, 1)
    assert not np.array_equal(a, np.arange(1000)) and not np.array_equal(a, index_permutation(np.arange(1000), 1000, 2))


def test_real_ratio_is_exact_in_every_batch(tmp_path):
    for ratio, batch, want in ((0.3, 10, 3), (0.5, 8, 4), (0.25, 12, 3)):
        for x, _ in _dataset(tmp_path, real_ratio=ratio, batch_size=batch).take(13):
            _, generated = _decode(x)
            assert (~generated).sum() == want, (ratio, batch)
            assert not generated[:want].any() and generated[want:].all()  # original rows first
    assert mix_plan(1024, 0.3).real == 307 and mix_plan(1024, 0.3).generated == 717
    # The paper's batch with the reference's 4 emulated workers (experiment.py `_dataset`): 256 distinct
    # slots, round(0.3 * 256) = 77 originals x 4 rows, 4 x (256 - 77) = 716 distinct generated rows.
    plan = mix_plan(1024, 0.3, 4)
    assert (plan.real, plan.generated, plan.real_rows, plan.generated_rows) == (77, 716, 308, 716)
    # Two replicas: per device batch of 512, round(0.3 * 128) = 38 originals x 4 and 360 generated rows.
    plan = mix_plan(1024, 0.3, 4, devices=2)
    assert (plan.real, plan.generated, plan.real_rows, plan.generated_rows) == (38, 360, 304, 720)
    with pytest.raises(UserError, match="aug-repeats"):
        mix_plan(1024, 0.3, 3)
    with pytest.raises(UserError, match="replicas"):
        mix_plan(1024, 0.3, 4, devices=3)
    with pytest.raises(UserError, match="rounds to 0"):
        mix_plan(2, 0.2)
    with pytest.raises(UserError, match="real-ratio"):
        mix_plan(10, 0.0)


def test_original_images_never_repeat_within_a_pass(tmp_path):
    # 3 original images per batch; a pass over the 60 originals is 20 batches, crossing epochs of 6 steps.
    batches = [_decode(x) for x, _ in _dataset(tmp_path).take(60)]
    real = [index[~generated] for index, generated in batches]
    for p in range(3):
        seen = np.concatenate(real[20 * p : 20 * (p + 1)])
        np.testing.assert_array_equal(np.sort(seen), np.arange(N_REAL))  # a permutation: no repeats
    epoch0 = np.concatenate(real[:6])
    assert len(set(epoch0.tolist())) == epoch0.size  # none within an epoch either
    assert not np.array_equal(np.concatenate(real[:20]), np.concatenate(real[20:40]))  # reshuffled per pass


def test_generated_order_is_a_full_permutation_not_class_sorted(tmp_path):
    # 7 generated per batch: 200 generated images take 200/7 batches; check the first full pass.
    ds = _dataset(tmp_path, steps_per_epoch=6)
    stream = np.concatenate([index[generated] for index, generated in (_decode(x) for x, _ in ds.take(29))])
    first_pass = stream[:N_GEN]
    np.testing.assert_array_equal(np.sort(first_pass), np.arange(N_GEN))
    labels = first_pass * K // N_GEN
    # A class-sorted file read in order would give a single class in the first 40 draws.
    assert len(np.unique(labels[:40])) == K
    assert abs(np.corrcoef(np.arange(N_GEN), first_pass)[0, 1]) < 0.3


def test_label_smoothing_hits_generated_samples_only(tmp_path):
    for x, y in _dataset(tmp_path, label_smoothing=0.1).take(5):
        index, generated = _decode(x)
        y = y.numpy()
        real_labels = index[~generated] % K
        np.testing.assert_array_equal(y[~generated], np.eye(K, dtype=np.float32)[real_labels])
        gen_labels = index[generated] * K // N_GEN
        want = np.eye(K)[gen_labels] * 0.9 + 0.1 / K
        np.testing.assert_allclose(y[generated], want, atol=1e-6)


def test_resumed_epoch_matches_uninterrupted_run_with_augmentation(tmp_path):
    pad = PadCrop(padding=1, flip=True)

    def augment(batch, seed):
        return pad(batch, training=True, seed=seed)

    continuous = [(x.numpy(), y.numpy()) for x, y in _dataset(tmp_path, augment=augment).take(18)]
    resumed = [(x.numpy(), y.numpy()) for x, y in _dataset(tmp_path, augment=augment, first_epoch=2).take(6)]
    for (xa, ya), (xb, yb) in zip(continuous[12:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_stream_starting_mid_epoch_matches_uninterrupted_run(tmp_path):
    # Training epochs need not end where these epochs do (run.py): the stream can start at any batch.
    pad = PadCrop(padding=1, flip=True)

    def augment(batch, seed):
        return pad(batch, training=True, seed=seed)

    continuous = [(x.numpy(), y.numpy()) for x, y in _dataset(tmp_path, augment=augment).take(16)]
    resumed = [
        (x.numpy(), y.numpy()) for x, y in _dataset(tmp_path, augment=augment, first_epoch=1, first_step=4).take(6)
    ]
    for (xa, ya), (xb, yb) in zip(continuous[10:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(UserError, match="first step"):
        _dataset(tmp_path, first_step=6)


def _reference_rows(batch_size: int, ratio: float, repeats: int, devices: int) -> tuple[int, int]:
    """(original rows, generated rows) of one device batch, transcribing the reference's `_dataset`
    (DeepMind adversarial_robustness/jax/experiment.py): `ratio` for the supervised stream,
    `one_minus_ratio` for the extra one, each then multiplied by `repeat`."""
    per_device = batch_size // devices // repeats
    supervised = max(1, min(round(per_device * ratio), per_device - 1))
    extra = per_device - max(1, min(round(per_device * ratio), per_device - 1))
    return supervised * repeats, extra * repeats


@pytest.mark.parametrize(
    "batch_size, repeats, devices, ratio",
    [(12, 2, 1, 0.5), (40, 4, 1, 0.3), (40, 4, 2, 0.3), (48, 2, 3, 0.25), (24, 1, 2, 0.5)],
)
def test_aug_repeats_repeat_originals_only_per_device_batch(tmp_path, batch_size, repeats, devices, ratio):
    real_rows, generated_rows = _reference_rows(batch_size, ratio, repeats, devices)
    n = batch_size // devices
    ds = _dataset(
        tmp_path, batch_size=batch_size, repeats=repeats, devices=devices, real_ratio=ratio, steps_per_epoch=2
    )
    seen_generated = []
    for x, y in ds.take(4):
        index, generated = _decode(x)
        y = y.numpy()
        for k in range(devices):
            block, block_generated = index[k * n : (k + 1) * n], generated[k * n : (k + 1) * n]
            # Original rows first, then generated rows, in every device batch.
            assert not block_generated[:real_rows].any() and block_generated[real_rows:].all()
            assert block_generated.sum() == generated_rows
            # Each original image in `repeats` consecutive rows (the reference's _repeat_batch).
            originals = block[:real_rows].reshape(-1, repeats)
            assert (originals == originals[:, :1]).all()
            assert len(set(originals[:, 0].tolist())) == real_rows // repeats
            # Generated rows all distinct; smoothed labels on them only.
            assert len(set(block[real_rows:].tolist())) == generated_rows
            seen_generated += block[real_rows:].tolist()
            np.testing.assert_array_equal(y[k * n : (k + 1) * n][:real_rows].max(axis=1), 1.0)
            np.testing.assert_allclose(y[k * n : (k + 1) * n][real_rows:].max(axis=1), 0.9 + 0.1 / K, atol=1e-6)
        # No original image in two device batches of one batch.
        real_index = index[~generated]
        assert len(set(real_index.tolist())) == real_index.size // repeats
    # Generated images do not repeat across batches either until the set is exhausted.
    assert len(set(seen_generated)) == len(seen_generated) <= N_GEN


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def test_streaming_never_materialises_a_multi_gigabyte_set(tmp_path):
    # 1M CIFAR-sized images, 3 GB, as a sparse file: nothing is written, and reading it stays cheap.
    m = 1_000_000
    images = np.lib.format.open_memmap(tmp_path / "big.image.npy", mode="w+", dtype=np.uint8, shape=(m, 32, 32, 3))
    del images
    np.save(tmp_path / "big.label.npy", (np.arange(m) % 10).astype(np.uint8))
    file_bytes = m * 32 * 32 * 3
    real = Split(images=np.zeros((2000, 32, 32, 3), np.uint8), labels=(np.arange(2000) % 10).astype(np.int64))
    extra = open_extra_data([str(tmp_path / "big.image.npy")], num_classes=10)
    ds = mixed_train_dataset(
        real,
        extra,
        num_classes=10,
        batch_size=512,
        real_ratio=0.3,
        label_smoothing=0.1,
        seed=0,
        first_epoch=0,
        steps_per_epoch=3,
        augment=None,
    )
    iterator = iter(ds)
    next(iterator)
    anon_before, rss_before = _rss_kb("RssAnon"), _rss_kb("VmRSS")
    for _ in range(40):
        x, y = next(iterator)
        assert x.shape == (512, 32, 32, 3)
    anon_growth = (_rss_kb("RssAnon") - anon_before) * 1024
    rss_growth = (_rss_kb("VmRSS") - rss_before) * 1024
    # 40 batches touch ~14K generated images scattered over the 3 GB; measured: +74 MB anonymous (tf.data
    # buffers), +77 MB resident. Mapped pages are released after every gather, so file pages do not pile up.
    assert anon_growth < 300e6, anon_growth
    assert rss_growth < file_bytes / 10, rss_growth
