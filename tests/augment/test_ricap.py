"""RICAP: four crops of four examples, label weights = region areas (sum to 1), pixel-exact crops; draws per
device batch (default) or per example."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfrobust.augment.ricap import (
    Ricap,
    region_sizes,
    ricap_block_draws,
    ricap_draws,
    ricap_weights,
)

SEED = tf.constant([4, 44], tf.int64)


@pytest.mark.parametrize("h, w", [(16, 16), (10, 14)])
def test_label_weights_are_the_areas_of_each_source(h, w):
    b = 40
    values = (np.arange(b, dtype=np.float32) + 1.0) / (b + 1.0)  # example s is the constant values[s]
    images = np.broadcast_to(values[:, None, None, None], (b, h, w, 1)).copy()
    out = Ricap(draws="example")({"images": tf.constant(images), "labels": tf.eye(b)}, training=True, seed=SEED)
    pixels, labels = out["images"].numpy(), out["labels"].numpy()
    for i in range(b):
        for s in range(b):
            fraction = np.sum(pixels[i] == values[s]) / (h * w)
            np.testing.assert_allclose(labels[i, s], fraction, atol=1e-6, err_msg=f"example {i} source {s}")
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    assert np.mean(labels.max(axis=1) < 1.0) > 0.5  # most examples really mix


def test_weights_sum_to_one_and_match_the_region_sizes():
    h, w = 32, 32
    draws = ricap_draws(SEED, 2000, h, w, 0.3)
    weights = ricap_weights(draws, h, w).numpy()
    np.testing.assert_array_equal(weights.sum(axis=1), 1.0)  # power-of-two area: exact
    heights, widths = (t.numpy() for t in region_sizes(draws.h, draws.w, h, w))
    np.testing.assert_array_equal(weights, heights * widths / (h * w))
    assert np.all((draws.h.numpy() >= 0) & (draws.h.numpy() <= h))
    # Boundary fractions: round(H Beta(0.3, 0.3)) / H, U-shaped; KS against the rounded Beta is loose on a
    # 32 grid, so compare the rounded samples' CDF at a few points instead.
    frac = draws.w.numpy() / w
    reference = np.round(stats.beta(0.3, 0.3).rvs(200000, random_state=0) * w) / w
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.mean(frac <= q) - np.mean(reference <= q)) < 0.04, q


@pytest.mark.parametrize("draws, devices, sub_batches", [("example", 1, 1), ("batch", 1, 1), ("batch", 2, 3)])
def test_regions_are_exact_crops_of_their_sources(draws, devices, sub_batches):
    rng = np.random.default_rng(0)
    b, h, w = 12, 9, 11
    images = rng.uniform(size=(b, h, w, 3)).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)[np.arange(b) % 4]
    layer = Ricap(draws=draws, devices=devices, sub_batches=sub_batches)
    out = layer({"images": tf.constant(images), "labels": tf.constant(labels)}, training=True, seed=SEED)
    if draws == "example":
        draws = ricap_draws(SEED, b, h, w, 0.3)
    else:
        draws = ricap_block_draws(SEED, b, h, w, 0.3, devices, sub_batches)
    pixels = out["images"].numpy()
    sources, oy, ox = draws.sources.numpy(), draws.offset_y.numpy(), draws.offset_x.numpy()
    for i in range(b):
        hb, wb = int(draws.h[i]), int(draws.w[i])
        regions = [(0, hb, 0, wb), (0, hb, wb, w), (hb, h, 0, wb), (hb, h, wb, w)]
        expected_labels = np.zeros(4, np.float32)
        for k, (r0, r1, c0, c1) in enumerate(regions):
            rh, rw = r1 - r0, c1 - c0
            assert 0 <= oy[i, k] <= h - rh and 0 <= ox[i, k] <= w - rw
            crop = images[sources[i, k], oy[i, k] : oy[i, k] + rh, ox[i, k] : ox[i, k] + rw]
            np.testing.assert_array_equal(pixels[i, r0:r1, c0:c1], crop)
            expected_labels += rh * rw / (h * w) * labels[sources[i, k]]
        np.testing.assert_allclose(out["labels"].numpy()[i], expected_labels, atol=1e-6)
    # Each region has its own permutation of the batch (of each device batch, with per-batch draws).
    n = b // devices
    for k in range(4):
        for block in range(devices):
            assert sorted(sources[block * n : (block + 1) * n, k].tolist()) == list(range(block * n, (block + 1) * n))
    assert not all(np.array_equal(sources[:, 0], sources[:, k]) for k in range(1, 4))
    if layer.draws == "batch":
        # One boundary and one crop offset per region for each device batch; sub-batches (rows s, s + S, ...)
        # share one permutation per region.
        for block in range(devices):
            rows = slice(block * n, (block + 1) * n)
            for values in (draws.h.numpy(), draws.w.numpy(), oy, ox):
                assert len(np.unique(values[rows], axis=0)) == 1
            local = sources[rows] - block * n
            for s in range(sub_batches):
                np.testing.assert_array_equal(local[s::sub_batches] - s, local[0::sub_batches])
    else:
        assert len(np.unique(draws.h.numpy())) > 1
