"""A run killed with SIGKILL resumes from its last checkpoint, and one stopped by SIGTERM mid-epoch from the
checkpoint of that step; the run they interrupt in turn ends where an uninterrupted run ends."""

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
# `tfrobust train` in a process that sends itself SIGTERM once the weight averages have seen optimizer step
# argv[1] (1-based): a real signal through the CLI's handler, at a step known in advance.
SIGTERM_AT_STEP = """
import os, signal, sys
from tfrobust.training import callbacks
step, update = int(sys.argv[1]), callbacks.WeightAveraging.on_train_batch_end

def on_train_batch_end(self, batch, logs=None):
    update(self, batch, logs)
    if int(self.num_updates.numpy()) == step:
        os.kill(os.getpid(), signal.SIGTERM)

callbacks.WeightAveraging.on_train_batch_end = on_train_batch_end
from tfrobust.cli import main
sys.argv = ["tfrobust", *sys.argv[2:]]
main()
"""


def tfrobust(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_DETERMINISTIC_OPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return [sys.executable, "-m", "tfrobust.cli", *args], env


def state(run_dir):
    import json

    with np.load(os.path.join(run_dir, "checkpoint.npz")) as data:
        return json.loads(str(data["state_json"]))


@pytest.fixture(scope="module")
def straight(digits_npz, tmp_path_factory):
    """The uninterrupted run, started once for the module's tests: it runs alongside each test's interrupted
    run (independent processes, deterministic ops; tiny runs leave a core idle)."""
    root = tmp_path_factory.mktemp("straight")
    run_dir = str(root / "run")
    command, env = tfrobust(*tiny_train_args(digits_npz, run_dir, str(root / "sm"), epochs=EPOCHS))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = {}

    def finished():
        if "dir" not in done:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-2000:]
            done["dir"] = run_dir
        return done["dir"]

    yield finished
    if process.poll() is None:
        process.kill()
        process.wait()


def assert_same_run(straight_dir, resumed_dir, *, exact=False):
    """Same epochs logged once each, same metrics, same final state (weights, averages, optimizer)."""
    log_straight, log_resumed = read_log(straight_dir), read_log(resumed_dir)
    assert [row["epoch"] for row in log_resumed] == [str(e) for e in range(EPOCHS)]
    for a, b in zip(log_straight, log_resumed):
        if exact:
            assert a == b, a["epoch"]
        for key in ("loss", "clean_accuracy", "val_avg_pgd40_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-4), (a["epoch"], key)
    with (
        np.load(os.path.join(straight_dir, "checkpoint.npz")) as a,
        np.load(os.path.join(resumed_dir, "checkpoint.npz")) as b,
    ):
        # Epochs of 400 samples (the digits file, validation images included) at batch 32 alternate 12 and
        # 13 steps; the run ends after floor(4 * 400 / 32) = 50, resumed or not.
        import json

        assert json.loads(str(a["state_json"]))["steps"] == json.loads(str(b["state_json"]))["steps"] == 50
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if key != "state_json":
                if exact:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
                np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


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
def test_resume_after_sigkill_then_sigterm_mid_epoch_matches_the_uninterrupted_run(tmp_path, digits_npz, straight):
    """A run killed with SIGKILL after its first checkpoint (epoch 1) resumes from it; that resumed run gets
    SIGTERM after optimizer step 18 (step 6 of the 13 of epoch 2): the checkpoint of that step, exit status
    143 and the --resume command. Resumed again, the run ends as the uninterrupted one, the CSV log included.
    One chain of three processes checks both interruptions and both resumes."""
    run = str(tmp_path / "run")
    command, env = tfrobust(*tiny_train_args(digits_npz, run, str(tmp_path / "sm"), epochs=EPOCHS))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while checkpoint_epoch(run) < 1 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Epoch 2's checkpoint is 13 steps and a validation away: the kill lands right after epoch 1's.
    assert checkpoint_epoch(run) == 1, "the kill must land after the first checkpoint, before the second"
    assert not os.path.exists(os.path.join(run, "summary.json"))

    command = [sys.executable, "-c", SIGTERM_AT_STEP, "18", "train", "--resume", run]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 143, result.stderr[-2000:]
    assert f"resuming {run} after epoch 1 of {EPOCHS}\n" in result.stdout
    checkpoint = os.path.join(run, "checkpoint.npz")
    assert result.stderr.strip().splitlines()[-1] == (
        f"training stopped on request (SIGTERM) at epoch 2, step 6 of 13: the run is saved in {checkpoint} "
        f"(epoch 2, step 6); continue with: tfrobust train --resume {run}"
    )
    saved = state(run)
    assert (saved["epoch"], saved["epoch_step"], saved["steps"]) == (1, 6, 18)
    assert [row["epoch"] for row in read_log(run)] == ["0"]
    assert not os.path.exists(os.path.join(run, "summary.json"))

    command, env = tfrobust("train", "--resume", run)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {run} after epoch 1 of {EPOCHS}, step 6 of 13 of epoch 2" in result.stdout
    assert_same_run(straight(), run, exact=True)
