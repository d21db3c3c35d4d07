"""tfrobust.data.datasets: digits, npz validation, validation split, tfds (mocked, offline)."""

from __future__ import annotations

import numpy as np
import pytest

from tfrobust.data import datasets
from tfrobust.data.datasets import DATASET_NAMES, load_dataset, load_npz, load_split
from tfrobust.errors import UserError


def _rows(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


# --------------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_size=100, seed=0)


def test_digits_shapes_dtypes_and_info(digits):
    info = digits.info
    assert info.name == "digits"
    assert info.num_classes == 10 and len(info.class_names) == 10
    assert info.image_shape == (8, 8, 1)
    assert info.allow_flip is False
    assert len(info.mean) == len(info.std) == 1
    assert 0.0 < info.mean[0] < 1.0 and info.std[0] > 0.0
    for split in (digits.train, digits.val, digits.test):
        assert split.images.dtype == np.uint8
        assert split.images.shape[1:] == (8, 8, 1)
        assert split.labels.dtype == np.int64
        assert split.labels.shape == (split.images.shape[0],)
        assert split.labels.min() >= 0 and split.labels.max() <= 9
    assert digits.train.images.max() == 255  # 16 -> round(16 * 255 / 16)


def test_digits_split_sizes(digits):
    assert len(digits.test) == 360  # 20% of 1797, stratified
    assert len(digits.val) == 100
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    # Stratified: every class in the test split.
    assert set(digits.test.labels.tolist()) == set(range(10))


def test_digits_splits_do_not_overlap():
    # Use indices rather than pixel content (the digits set contains a few duplicate images):
    # rebuild the raw data and locate each split's rows by the order the loader keeps.
    from sklearn.datasets import load_digits

    raw = np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    splits = load_dataset("digits", val_size=50, seed=3)
    # Map each image to the set of raw indices carrying that exact content.
    by_content: dict[bytes, list[int]] = {}
    for i, img in enumerate(raw):
        by_content.setdefault(img.tobytes(), []).append(i)
    unique = {k for k, v in by_content.items() if len(v) == 1}
    seen: dict[bytes, str] = {}
    for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        for img in split.images:
            key = img.tobytes()
            if key in unique:
                assert key not in seen, f"image in both {seen.get(key)} and {name}"
                seen[key] = name
    # Together the splits contain every image exactly once (as a multiset).
    all_images = np.concatenate([splits.train.images, splits.val.images, splits.test.images])
    assert sorted(img.tobytes() for img in all_images) == sorted(img.tobytes() for img in raw)


def test_digits_val_split_is_seeded():
    a = load_dataset("digits", val_size=64, seed=1)
    b = load_dataset("digits", val_size=64, seed=1)
    c = load_dataset("digits", val_size=64, seed=2)
    np.testing.assert_array_equal(a.val.images, b.val.images)
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert not np.array_equal(a.val.images, c.val.images)
    # The test split and the statistics never depend on the validation seed.
    np.testing.assert_array_equal(a.test.images, c.test.images)
    assert a.info == c.info


def test_val_size_zero_gives_empty_val():
    s = load_dataset("digits", val_size=0)
    assert len(s.val) == 0 and s.val.images.shape == (0, 8, 8, 1)
    assert len(s.train) == 1797 - 360


def test_val_size_too_large():
    with pytest.raises(UserError, match="--val-size"):
        load_dataset("digits", val_size=1024)  # digits has 1437 training images


def test_negative_val_size():
    with pytest.raises(UserError, match="--val-size"):
        load_dataset("digits", val_size=-1)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError) as e:
        load_dataset("imagenet")
    for name in DATASET_NAMES:
        assert name in str(e.value)
    assert "npz:PATH" in str(e.value)


def test_load_split_matches_load_dataset():
    full = load_dataset("digits", val_size=80, seed=5)
    info, val = load_split("digits", "val", val_size=80, seed=5)
    np.testing.assert_array_equal(val.images, full.val.images)
    _, train = load_split("digits", "train", val_size=80, seed=5)
    np.testing.assert_array_equal(train.labels, full.train.labels)
    _, test = load_split("digits", "test")
    np.testing.assert_array_equal(test.images, full.test.images)
    assert info == full.info


def test_load_split_unknown_split():
    with pytest.raises(UserError, match="unknown split"):
        load_split("digits", "validation")


# --------------------------------------------------------------------------------------------------
# npz


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _good_arrays(n=40, h=6, w=5, c=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8),
        "label": (np.arange(n) % k).astype(np.int64),
    }


def test_npz_happy_path(tmp_path):
    arrays = _good_arrays()
    path = _write(tmp_path / "d.npz", **arrays)
    split = load_npz(path)
    np.testing.assert_array_equal(split.images, arrays["image"])
    assert split.labels.dtype == np.int64

    s = load_dataset(f"npz:{path}", val_size=8, seed=0)
    assert s.test is None
    assert s.info.name == f"npz:{path}"
    assert s.info.num_classes == 4 and s.info.class_names == ("0", "1", "2", "3")
    assert s.info.image_shape == (6, 5, 3)
    expected_mean = (arrays["image"].astype(np.float64) / 255).mean(axis=(0, 1, 2))
    expected_std = (arrays["image"].astype(np.float64) / 255).std(axis=(0, 1, 2))
    np.testing.assert_allclose(s.info.mean, expected_mean, rtol=1e-9)
    np.testing.assert_allclose(s.info.std, expected_std, rtol=1e-9)
    assert len(s.train) == 32 and len(s.val) == 8
    assert _rows(s.train.images).isdisjoint(_rows(s.val.images))


def test_npz_grey_images_and_int32_labels(tmp_path):
    arrays = _good_arrays(c=1)
    arrays["label"] = arrays["label"].astype(np.int32)
    split = load_npz(_write(tmp_path / "g.npz", **arrays))
    assert split.images.shape[-1] == 1 and split.labels.dtype == np.int64


def test_npz_num_classes_given(tmp_path):
    path = _write(tmp_path / "d.npz", **_good_arrays(k=3))
    s = load_dataset(f"npz:{path}", val_size=0, num_classes=10)
    assert s.info.num_classes == 10


def test_npz_test_split_missing(tmp_path):
    path = _write(tmp_path / "d.npz", **_good_arrays())
    with pytest.raises(UserError, match="no test split"):
        load_split(f"npz:{path}", "test")


def test_npz_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_npz(str(tmp_path / "nope.npz"))


def test_npz_empty_path():
    with pytest.raises(UserError, match="empty npz path"):
        load_dataset("npz:")


def test_npz_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("this is not a zip archive\n" * 10)
    with pytest.raises(UserError, match="cannot read .* as an npz archive"):
        load_npz(str(path))


def test_npz_single_npy_array(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(UserError, match="not an npz archive"):
        load_npz(str(path))


def test_npz_truncated(tmp_path):
    path = _write(tmp_path / "d.npz", **_good_arrays(n=200))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated|corrupt|cannot read"):
        load_npz(path)


def test_npz_missing_key_names_found_keys(tmp_path):
    arrays = _good_arrays()
    path = _write(tmp_path / "d.npz", images=arrays["image"], label=arrays["label"])
    with pytest.raises(UserError) as e:
        load_npz(path)
    assert "'image'" in str(e.value) and "images, label" in str(e.value)


def test_npz_missing_label_key(tmp_path):
    path = _write(tmp_path / "d.npz", image=_good_arrays()["image"])
    with pytest.raises(UserError, match="no 'label' array .*found: image"):
        load_npz(path)


def test_npz_object_array(tmp_path):
    arrays = _good_arrays()
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros(1), np.zeros(2)
    path = _write(tmp_path / "d.npz", image=arrays["image"], label=ragged)
    with pytest.raises(UserError, match="object"):
        load_npz(path)


def test_npz_float_images_rejected(tmp_path):
    arrays = _good_arrays()
    path = _write(tmp_path / "d.npz", image=arrays["image"].astype(np.float32) / 255, label=arrays["label"])
    with pytest.raises(UserError, match="'image' has dtype float32, expected uint8"):
        load_npz(path)


def test_npz_float_labels_rejected(tmp_path):
    arrays = _good_arrays()
    path = _write(tmp_path / "d.npz", image=arrays["image"], label=arrays["label"].astype(np.float64))
    with pytest.raises(UserError, match="'label' has dtype float64"):
        load_npz(path)


def test_npz_wrong_image_ndim(tmp_path):
    arrays = _good_arrays()
    path = _write(tmp_path / "d.npz", image=arrays["image"][..., 0], label=arrays["label"])
    with pytest.raises(UserError, match="'image' has shape \\(40, 6, 5\\), expected N x H x W x C"):
        load_npz(path)


def test_npz_wrong_channel_count(tmp_path):
    arrays = _good_arrays(c=4)
    path = _write(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match="C = 1 or 3"):
        load_npz(path)


def test_npz_wrong_label_shape(tmp_path):
    arrays = _good_arrays()
    path = _write(tmp_path / "d.npz", image=arrays["image"], label=arrays["label"][:, None])
    with pytest.raises(UserError, match="'label' has shape \\(40, 1\\)"):
        load_npz(path)


def test_npz_empty(tmp_path):
    path = _write(tmp_path / "d.npz", image=np.zeros((0, 4, 4, 3), np.uint8), label=np.zeros((0,), np.int64))
    with pytest.raises(UserError, match="empty"):
        load_npz(path)


def test_npz_length_mismatch(tmp_path):
    arrays = _good_arrays()
    path = _write(tmp_path / "d.npz", image=arrays["image"], label=arrays["label"][:-1])
    with pytest.raises(UserError, match="40 images but 39 labels"):
        load_npz(path)


def test_npz_negative_label(tmp_path):
    arrays = _good_arrays()
    arrays["label"][3] = -2
    path = _write(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match="contains -2"):
        load_npz(path)


def test_npz_label_out_of_range(tmp_path):
    path = _write(tmp_path / "d.npz", **_good_arrays(k=4))
    with pytest.raises(UserError, match="contains 3 but there are 3 classes"):
        load_npz(path, num_classes=3)


def test_npz_single_class(tmp_path):
    arrays = _good_arrays()
    arrays["label"][:] = 0
    path = _write(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match="only one class"):
        load_dataset(f"npz:{path}", val_size=0)


def test_npz_constant_images_get_unit_std(tmp_path):
    arrays = _good_arrays()
    arrays["image"][:] = 7
    path = _write(tmp_path / "d.npz", **arrays)
    assert load_dataset(f"npz:{path}", val_size=0).info.std == (1.0, 1.0, 1.0)


def test_error_messages_are_one_line(tmp_path):
    cases = [lambda: load_npz(str(tmp_path / "x.npz")), lambda: load_dataset("bogus")]
    for case in cases:
        with pytest.raises(UserError) as e:
            case()
        assert "\n" not in str(e.value)


def test_channel_stats_subsample_is_cheap_and_close():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3000, 4, 4, 3), dtype=np.uint8)
    full_mean, full_std = datasets._channel_stats(images)
    sub_mean, sub_std = datasets._channel_stats(images, max_images=1000)
    np.testing.assert_allclose(sub_mean, full_mean, atol=0.01)
    np.testing.assert_allclose(sub_std, full_std, atol=0.01)


# --------------------------------------------------------------------------------------------------
# tensorflow-datasets (mocked: no download)


def test_cifar10_with_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24):
        s = load_dataset("cifar10", val_size=4, seed=0)
    assert s.info.name == "cifar10"
    assert s.info.num_classes == 10 and s.info.class_names[0] == "airplane"
    assert s.info.image_shape == (32, 32, 3)
    assert s.info.mean == (0.4914, 0.4822, 0.4465) and s.info.std == (0.2471, 0.2435, 0.2616)
    assert s.info.allow_flip is True
    assert s.train.images.shape == (20, 32, 32, 3) and s.train.images.dtype == np.uint8
    assert s.val.images.shape == (4, 32, 32, 3)
    assert s.test is not None and s.test.images.shape == (24, 32, 32, 3)
    assert s.train.labels.dtype == np.int64
    assert s.test.labels.min() >= 0 and s.test.labels.max() < 10


def test_svhn_info_with_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        info, test = load_split("svhn", "test")
    assert info.name == "svhn" and info.allow_flip is False and info.num_classes == 10
    assert info.mean == (0.4377, 0.4438, 0.4728)
    assert test.images.shape == (8, 32, 32, 3)


def test_tfds_failure_is_one_line_user_error(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def fail(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection\nretry 3/3")

    monkeypatch.setattr(tfds, "load", fail)
    with pytest.raises(UserError) as e:
        load_dataset("cifar10")
    message = str(e.value)
    assert message.startswith("cannot load cifar10 with tensorflow-datasets")
    assert "--dataset digits" in message and "npz:PATH" in message and "\n" not in message
    assert e.value.__cause__ is None and e.value.__suppress_context__
