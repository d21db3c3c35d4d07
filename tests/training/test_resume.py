"""A run killed with SIGKILL resumes from its last checkpoint and ends where an uninterrupted run ends."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support import REPO, tiny_train_args

EPOCHS = 4


def tfrobust(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return [sys.executable, "-m", "tfrobust.cli", *args], env


def checkpoint_epoch(run_dir):
    path = os.path.join(run_dir, "checkpoint.npz")
    if not os.path.exists(path):
        return 0
    import json

    with np.load(path) as data:
        return json.loads(str(data["state_json"]))["epoch"]


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_resume_after_sigkill_matches_the_uninterrupted_run(tmp_path, digits_npz):
    npz = digits_npz
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")

    # The uninterrupted run goes alongside the one to be killed: independent processes (deterministic ops),
    # and tiny runs leave a core idle, so running them together saves a run's worth of suite time.
    command, env = tfrobust(*tiny_train_args(npz, straight, str(tmp_path / "sm1"), epochs=EPOCHS))
    straight_run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    command, env = tfrobust(*tiny_train_args(npz, killed, str(tmp_path / "sm2"), epochs=EPOCHS))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while checkpoint_epoch(killed) < 1 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_at_kill = checkpoint_epoch(killed)
    assert 1 <= done_at_kill < EPOCHS, "the kill must land mid-run"
    assert not os.path.exists(os.path.join(killed, "summary.json"))
    _, straight_err = straight_run.communicate(timeout=300)
    assert straight_run.returncode == 0, straight_err[-2000:]

    command, env = tfrobust("train", "--resume", killed)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {killed} after epoch {done_at_kill}" in result.stdout

    # Same epochs logged once each, same metrics, same final state.
    log_straight, log_killed = read_log(straight), read_log(killed)
    assert [row["epoch"] for row in log_killed] == [str(e) for e in range(EPOCHS)]
    for a, b in zip(log_straight, log_killed):
        for key in ("loss", "clean_accuracy", "val_avg_pgd40_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-4), (a["epoch"], key)
    with np.load(os.path.join(straight, "checkpoint.npz")) as a, np.load(os.path.join(killed, "checkpoint.npz")) as b:
        # Epochs of 400 samples (the digits file, validation images included) at batch 32 alternate 12 and
        # 13 steps; the run ends after floor(4 * 400 / 32) = 50, resumed or not.
        import json

        assert json.loads(str(a["state_json"]))["steps"] == json.loads(str(b["state_json"]))["steps"] == 50
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if key != "state_json":
                np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)
