"""tfrobust.pseudolabel: top-K per class against a brute-force reference on a toy classifier; resumable output."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from tfrobust.data.extra import open_extra_data
from tfrobust.errors import UserError
from tfrobust.pseudolabel import format_summary, pseudolabel

K = 3


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """logits = 10 * pixel channels of a 1x1x3 image: the predicted class is the brightest channel."""
    model = keras.Sequential([keras.Input((1, 1, 3)), keras.layers.Flatten(), keras.layers.Dense(K)])
    model.layers[-1].set_weights([np.eye(K, dtype=np.float32) * 10.0, np.zeros(K, np.float32)])
    path = str(tmp_path_factory.mktemp("model") / "toy.keras")
    model.save(path)
    return path, model


def _images(n, seed=0):
    # Pixel levels in steps of 25: scores take few, well separated values, with many exact ties.
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 11, (n, 1, 1, 3)) * 25).astype(np.uint8)


def _reference(model, images, top_k):
    """Brute force: score everything at once, sort each class by (score desc, index asc), keep top_k."""
    logits = model(images.astype(np.float32) / np.float32(255.0)).numpy().astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    predicted, score = p.argmax(1), p.max(1)
    kept = {}
    for c in range(K):
        index = np.flatnonzero(predicted == c)
        order = np.lexsort((index, -score[index].astype(np.float32)))[:top_k]
        kept[c] = np.sort(index[order])
    return kept, np.bincount(predicted, minlength=K)


def test_top_k_per_class_matches_brute_force(classifier, tmp_path):
    path, model = classifier
    images = _images(700)
    np.savez(tmp_path / "raw.npz", image=images)  # unlabelled input
    out = str(tmp_path / "labelled")
    summary = pseudolabel(
        path, [str(tmp_path / "raw.npz")], out, top_k=40, batch_size=64, shard_size=50, block_size=128, progress=False
    )
    kept, candidates = _reference(model, images, 40)
    data = open_extra_data([out], num_classes=K)
    got_images, got_labels = data.gather(np.arange(len(data)))
    assert len(data) == sum(len(v) for v in kept.values()) == summary["kept"]
    # Written in input order: recover each kept image's index from the reference set.
    want_index = np.sort(np.concatenate(list(kept.values())))
    np.testing.assert_array_equal(got_images, images[want_index])
    for c in range(K):
        np.testing.assert_array_equal(np.sort(want_index[got_labels == c]), kept[c])
        row = summary["per_class"][str(c)]
        assert row["candidates"] == candidates[c] and row["kept"] == min(40, candidates[c])
    scores = np.concatenate(
        [np.load(os.path.join(out, f))["score"] for f in sorted(os.listdir(out)) if f.endswith(".npz")]
    )
    for c in range(K):
        assert summary["per_class"][str(c)]["threshold"] == pytest.approx(float(scores[got_labels == c].min()))
    assert "kept 120 of 700" in format_summary(summary)


def test_keep_all_reports_agreement_and_resumes(classifier, tmp_path):
    path, model = classifier
    images = _images(300, seed=1)
    labels = np.argmax(images.reshape(-1, 3), axis=1)
    labels[:30] = (labels[:30] + 1) % K  # 10% disagree with the classifier, wherever the max is unique
    np.savez(tmp_path / "raw.npz", image=images, label=labels)
    out = str(tmp_path / "all")
    kwargs = dict(batch_size=50, shard_size=100, block_size=64, progress=False)
    summary = pseudolabel(path, [str(tmp_path / "raw.npz")], out, **kwargs)
    assert summary["kept"] == 300 and summary["top_k_per_class"] is None
    predicted = np.argmax(model(images.astype(np.float32) / 255.0).numpy(), axis=1)
    assert summary["agreement_with_input_labels"] == pytest.approx(np.mean(predicted == labels))
    first = open_extra_data([out], num_classes=K).gather(np.arange(300))
    # Interrupted after writing: a shard lost, not complete. The rerun rebuilds exactly the same output.
    os.remove(os.path.join(out, "shard-00002.npz"))
    os.remove(os.path.join(out, "summary.json"))
    state_path = os.path.join(out, "tfrobust-output.json")
    state = json.load(open(state_path))
    state["complete"] = False
    json.dump(state, open(state_path, "w"))
    pseudolabel(path, [str(tmp_path / "raw.npz")], out, **kwargs)
    second = open_extra_data([out], num_classes=K).gather(np.arange(300))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    with pytest.raises(UserError, match="other settings"):
        pseudolabel(path, [str(tmp_path / "raw.npz")], out, top_k=5, **kwargs)


def test_classifier_of_another_shape_is_refused(classifier, tmp_path):
    path, _ = classifier
    np.savez(tmp_path / "raw.npz", image=np.zeros((10, 2, 2, 3), np.uint8))
    with pytest.raises(UserError, match="classifier"):
        pseudolabel(path, [str(tmp_path / "raw.npz")], str(tmp_path / "out"), progress=False)
