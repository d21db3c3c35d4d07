"""Two worker processes on localhost (TF_CONFIG) train one model together with --strategy multi-worker."""

import json
import os
import socket
import subprocess
import sys

import pytest
from support import REPO, tiny_train_args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_one_model(tmp_path, digits_npz):
    npz = digits_npz
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    processes = []
    for index in range(2):
        out = str(tmp_path / f"run{index}")
        env = {
            **os.environ,
            "PYTHONPATH": REPO,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        args = tiny_train_args(npz, out, str(tmp_path / "sm"), epochs=1) + ["--strategy", "multi-worker"]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "tfrobust.cli", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("multi-worker training did not finish in 240 s")
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    # The chief (worker 0) writes the run and the export; the other worker leaves nothing behind.
    summary = json.load(open(tmp_path / "run0" / "summary.json"))
    assert os.path.isfile(os.path.join(summary["export"], "saved_model.pb"))
    assert not (tmp_path / "run1" / "checkpoint.npz").exists()
