"""The command line in a real process: no TensorFlow C++ start-up log unless asked for (--verbose)."""

import os
import subprocess
import sys

from support import REPO as ROOT

# Lines TensorFlow's libraries print while they load and probe devices (absl before InitializeLog,
# CUDA probing, oneDNN and CPU-feature notices).
NOISE = (
    "absl::InitializeLog",
    "cuda drivers",
    "cuInit",
    "oneDNN custom operations",
    "cpu_feature_guard",
    "port.cc",
    "cudart_stub",
)


def run_cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # conftest sets it
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "tfrobust.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_no_startup_log_unless_verbose(tmp_path):
    png = str(tmp_path / "grid.png")
    command = ["augment-preview", "--aug", "padcrop", "--n", "2", "--draws", "1", "--out", png]
    quiet = run_cli(*command, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == f"wrote {png}"
    assert not [line for line in quiet.stderr.splitlines() if any(noise in line for noise in NOISE)], quiet.stderr
    # An error stays one line, with status 1.
    again = run_cli(*command, cwd=tmp_path)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert again.stderr.startswith("Error: ") and "exists" in again.stderr
    # Asked for, the start-up log passes through (the pre-InitializeLog notice comes on every machine).
    verbose = run_cli("--verbose", *command, "--overwrite", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert "absl::InitializeLog" in verbose.stderr
