"""tf.distribute on 2 logical CPU devices: with --sync-batch-norm mirrored training computes what single-device
training does; by default (the reference's) BatchNorm normalises and keeps statistics per replica."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support import REPO


@pytest.fixture(scope="module")
def report(digits_npz):
    npz = digits_npz
    env = {**os.environ, "PYTHONPATH": REPO, "TF_DETERMINISTIC_OPS": "1"}
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "training", "distributed_check.py"), npz],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT ") :])


def _check(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_DETERMINISTIC_OPS": "1"}
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "training", "batch_norm_replicas_check.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT ") :])


@pytest.fixture(scope="module")
def bn_report():
    return _check("layer")


def _normalise(x, gamma, beta, eps):
    """BatchNorm in training mode on `x` [N, H, W, C] with its own batch moments (biased variance)."""
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_batch_norm_is_per_replica_by_default_and_global_when_synchronised(bn_report):
    r = bn_report
    x, gamma, beta, eps = np.array(r["x"], np.float64), np.array(r["gamma"]), np.array(r["beta"]), r["eps"]
    # Per replica (the reference: pmap without cross-device moments): each half normalised by its own moments.
    per_replica = np.concatenate([_normalise(x[:4], gamma, beta, eps), _normalise(x[4:], gamma, beta, eps)])
    np.testing.assert_allclose(r["per_replica_output"], per_replica, atol=1e-4)
    # Synchronised: the whole batch's moments, on both replicas.
    np.testing.assert_allclose(r["sync_output"], _normalise(x, gamma, beta, eps), atol=1e-4)
    assert np.abs(per_replica - _normalise(x, gamma, beta, eps)).max() > 0.5  # the halves really differ
    # Moving statistics: per replica, copy k holds what one device holds after seeing half k only (the
    # reference's per-device state); read outside a replica, copy 0 (the reference's get_first).
    halves, whole = r["one_device_moving_halves"], r["one_device_moving_whole"]
    for k in range(2):
        np.testing.assert_allclose(r["per_replica_moving_mean_copies"][k], halves[k][0], atol=1e-5)
        np.testing.assert_allclose(r["per_replica_moving_variance_copies"][k], halves[k][1], atol=1e-5)
    np.testing.assert_allclose(r["per_replica_moving_mean_read"], halves[0][0], atol=1e-5)
    np.testing.assert_allclose(r["per_replica_moving_variance_read"], halves[0][1], atol=1e-5)
    assert np.abs(np.subtract(*r["per_replica_moving_mean_copies"])).max() > 0.1
    # Synchronised: both copies hold what one device holds after seeing the whole batch.
    for k in range(2):
        np.testing.assert_allclose(r["sync_moving_mean_copies"][k], whole[0], atol=1e-5)
        np.testing.assert_allclose(r["sync_moving_variance_copies"][k], whole[1], atol=1e-5)


def test_each_replica_trains_on_one_consecutive_device_batch(bn_report):
    assert bn_report["replica_rows_are_blocks"]


@pytest.mark.slow
def test_run_wires_sync_batch_norm_and_trains_per_replica(digits_npz):
    r = _check("run", digits_npz)
    assert r["per_replica_layers_synchronized"] == [False] and not r["per_replica_attack_unrolled"]
    assert r["sync_layers_synchronized"] == [True] and r["sync_attack_unrolled"]
    assert np.isfinite(r["per_replica_loss"])
    # Each replica kept its own moving statistics during training.
    assert r["per_replica_max_copy_difference"] > 1e-4


@pytest.mark.slow
def test_two_replicas_match_one_device(report):
    assert report["replicas_one-device"] == 1 and report["replicas_mirrored"] == 2
    # Synchronised BatchNorm, loss / replicas, and the global-batch random start make the two agree up
    # to float reduction order.
    assert report["max_weight_diff"] < 1e-4, report
    assert report["max_average_diff"] < 1e-4, report
    assert report["loss"][0] == pytest.approx(report["loss"][1], rel=1e-4)


@pytest.mark.slow
def test_batch_not_divisible_by_replicas_is_refused(report):
    assert "not divisible" in report["indivisible_batch_error"]
