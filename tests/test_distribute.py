"""tf.distribute: mirrored training on 2 logical CPU devices computes what single-device training does."""

import json
import os
import subprocess
import sys

import pytest

from conftest import write_digits_npz

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    npz = write_digits_npz(tmp_path_factory.mktemp("data") / "digits.npz")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_DETERMINISTIC_OPS": "1"}
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "distributed_check.py"), npz],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


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
