"""Atomic file writes: a temporary file in the same directory, flushed to disk, then `os.replace`d into
place, so a kill at any moment leaves either the old file or the whole new one (checkpoints, evaluation
state, per-example results, pseudo-label shards)."""

from __future__ import annotations

import os

import numpy as np


def save_npz_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez(path, **arrays)`, atomically (uncompressed: npz members stay memory-mappable)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_bytes_atomic(path: str, content: bytes) -> None:
    """Writes `content` to `path` atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(content)
    os.replace(tmp, path)
