"""Shared test setup: quiet TensorFlow logging, and fixtures for the data and runs many tests share.

Plain helper functions (random weights, linear models with a known worst case) live in `support.py`,
importable from every test folder (`pythonpath = tests` in setup.cfg).
"""

import os

# Must be set before TensorFlow is first imported (by any test module).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> str:
    """A 400-image npz of scikit-learn's digits (uint8 8x8x1), written once per test process; tests read it
    and never change it."""
    from support import write_digits_npz

    return write_digits_npz(tmp_path_factory.mktemp("data") / "digits.npz")
