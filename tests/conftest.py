"""Shared test setup: quiet TensorFlow logging, and fixtures for the data and runs many tests share.

Plain helper functions (random weights, linear models with a known worst case) live in `support.py`,
importable from every test folder (`pythonpath = tests` in setup.cfg).
"""

import os

# Must be set before TensorFlow is first imported (by any test module).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Under pytest-xdist, each worker's kernels get their share of the cores (the test processes they start
# inherit it): N workers that each run every kernel on all the cores contend for them, and the tests' small
# tensors gain nothing from a kernel split across cores.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(share))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> str:
    """A 400-image npz of scikit-learn's digits (uint8 8x8x1), written once per test process; tests read it
    and never change it."""
    from support import write_digits_npz

    return write_digits_npz(tmp_path_factory.mktemp("data") / "digits.npz")
