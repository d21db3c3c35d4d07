"""tfrobust.data.extra: discovery, memory-mapped shards (npz in place, npy pairs), validation errors, pack."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tfrobust.data.datasets import DatasetInfo
from tfrobust.data.extra import discover, open_extra_data
from tfrobust.errors import UserError
from tfrobust.generators.writer import pack

INFO = DatasetInfo(
    name="toy",
    num_classes=4,
    class_names=("0", "1", "2", "3"),
    image_shape=(4, 4, 3),
    mean=(0.5,) * 3,
    std=(0.25,) * 3,
    allow_flip=True,
)


def _arrays(n, start=0, shape=(4, 4, 3)):
    images = np.zeros((n, *shape), np.uint8)
    images[:, 0, 0, 0] = np.arange(start, start + n) % 256
    images[:, 0, 0, 1] = np.arange(start, start + n) // 256
    return images, (np.arange(start, start + n) % 4).astype(np.int64)


def _npz(path, n, start=0, **kwargs):
    images, labels = _arrays(n, start)
    np.savez(path, image=images, label=labels, **kwargs)
    return str(path)


def test_npz_is_memory_mapped_in_place_and_gathers_across_shards(tmp_path):
    a = _npz(tmp_path / "a.npz", 30)
    directory = tmp_path / "dir"
    directory.mkdir()
    _npz(directory / "b.npz", 20, start=30)
    images, labels = _arrays(25, start=50)
    np.save(directory / "c.image.npy", images)
    np.save(directory / "c.label.npy", labels.astype(np.int32))  # any integer dtype
    (directory / "notes.txt").write_text("ignored")
    data = open_extra_data([a, str(directory)], INFO)
    assert len(data) == 75 and data.labelled and len(data.shards) == 3
    assert all(isinstance(s.images, np.memmap) for s in data.shards)
    index = np.array([74, 0, 31, 29, 50, 3, 49])
    got_images, got_labels = data.gather(index)
    want_images, want_labels = _arrays(75)
    np.testing.assert_array_equal(got_images, want_images[index])
    np.testing.assert_array_equal(got_labels, want_labels[index])


def test_discover_orders_directory_shards_and_refuses_duplicates(tmp_path):
    for name in ("b.npz", "a.npz"):
        _npz(tmp_path / name, 3)
    assert [os.path.basename(p) for p in discover([str(tmp_path)])] == ["a.npz", "b.npz"]
    with pytest.raises(UserError, match="given twice"):
        discover([str(tmp_path / "a.npz"), str(tmp_path)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no shards"):
        discover([str(tmp_path / "empty")])


def _error(tmp_path, paths, info=INFO, **kwargs):
    with pytest.raises(UserError) as caught:
        open_extra_data(paths, info, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bad_inputs_are_one_line_errors(tmp_path):
    images, labels = _arrays(10)
    np.savez(tmp_path / "grey.npz", image=images[..., :1], label=labels)
    assert "1 channels, the original data 3" in _error(tmp_path, [str(tmp_path / "grey.npz")])
    np.savez(tmp_path / "big.npz", image=np.zeros((3, 8, 8, 3), np.uint8), label=np.zeros(3, np.int64))
    assert "original data's shape" in _error(tmp_path, [str(tmp_path / "big.npz")])
    np.savez(tmp_path / "range.npz", image=images, label=labels + 1)
    assert "labels contain 4" in _error(tmp_path, [str(tmp_path / "range.npz")])
    np.savez(tmp_path / "negative.npz", image=images, label=labels - 1)
    assert ">= 0" in _error(tmp_path, [str(tmp_path / "negative.npz")])
    good = _npz(tmp_path / "good.npz", 10)
    np.savez(tmp_path / "float.npz", image=images.astype(np.float32), label=labels)
    assert "dtype float32, expected uint8" in _error(tmp_path, [good, str(tmp_path / "float.npz")])
    np.savez(tmp_path / "soft.npz", image=images, label=labels.astype(np.float32))
    assert "integer class indices" in _error(tmp_path, [str(tmp_path / "soft.npz")])
    np.savez(tmp_path / "short.npz", image=images, label=labels[:5])
    assert "10 images but labels of shape (5,)" in _error(tmp_path, [str(tmp_path / "short.npz")])
    np.savez(tmp_path / "empty.npz", image=images[:0], label=labels[:0])
    assert "0 images" in _error(tmp_path, [str(tmp_path / "empty.npz")])
    np.savez(tmp_path / "unlabelled.npz", image=images)
    assert "tfrobust pseudolabel" in _error(tmp_path, [str(tmp_path / "unlabelled.npz")])
    assert "label every shard or none" in _error(
        tmp_path, [good, str(tmp_path / "unlabelled.npz")], require_labels=False
    )
    np.savez(tmp_path / "other.npz", pixels=images)
    assert "no 'image' array" in _error(tmp_path, [str(tmp_path / "other.npz")])
    np.savez_compressed(tmp_path / "packed.npz", image=images, label=labels)
    assert "tfrobust pack" in _error(tmp_path, [str(tmp_path / "packed.npz")])
    assert "not found" in _error(tmp_path, [str(tmp_path / "missing.npz")])
    (tmp_path / "x.txt").write_text("")
    assert "not extra data" in _error(tmp_path, [str(tmp_path / "x.txt")])


def test_truncated_files_are_refused(tmp_path):
    big = _npz(tmp_path / "big.npz", 200)
    data = open(big, "rb").read()
    open(tmp_path / "cut.npz", "wb").write(data[: len(data) // 2])
    assert "truncated" in _error(tmp_path, [str(tmp_path / "cut.npz")])
    images, labels = _arrays(200)
    np.save(tmp_path / "full.image.npy", images)
    raw = open(tmp_path / "full.image.npy", "rb").read()
    open(tmp_path / "cut.image.npy", "wb").write(raw[: len(raw) - 100])
    assert "truncated" in _error(tmp_path, [str(tmp_path / "cut.image.npy")], require_labels=False)


def test_pack_streams_compressed_npz_into_memory_mappable_shards(tmp_path):
    images, labels = _arrays(250)
    np.savez_compressed(tmp_path / "in.npz", image=images, label=labels)
    summary = pack([str(tmp_path / "in.npz")], str(tmp_path / "out"), shard_size=100, progress=False)
    assert summary["images"] == 250 and summary["shards"] == 3 and summary["labelled"]
    data = open_extra_data([str(tmp_path / "out")], INFO)
    assert [len(s) for s in data.shards] == [100, 100, 50]
    got_images, got_labels = data.gather(np.arange(250))
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    # Same settings again: complete, nothing rewritten. Other settings: refused without --overwrite.
    assert pack([str(tmp_path / "in.npz")], str(tmp_path / "out"), shard_size=100, progress=False) == summary
    with pytest.raises(UserError, match="other settings"):
        pack([str(tmp_path / "in.npz")], str(tmp_path / "out"), shard_size=50, progress=False)
    again = pack([str(tmp_path / "in.npz")], str(tmp_path / "out"), shard_size=50, overwrite=True, progress=False)
    assert again["shards"] == 5
