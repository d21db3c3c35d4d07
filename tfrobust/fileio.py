"""Atomic file writes: the files tfrobust writes itself for later reading go through this module.

A file is written to a hidden temporary name beside its target (`.NAME.tmp-PID`), flushed and fsynced,
then `os.replace`d into place, so a kill at any moment (SIGKILL included) leaves either the old file or the
whole new one (checkpoints, run configs and summaries, evaluation state, per-example results, extra-data
shards, exported metadata, reports). A write that fails (a full disk, an exception while serialising)
removes its temporary file and leaves the old file as it was. The directory is not fsynced after the
rename: a power loss right after it may lose the rename, which again leaves the old file.

A directory (a SavedModel export, whose files Keras writes) is written under a temporary name and
published with `publish_directory`: its files are fsynced, then the directory is renamed into place,
never over an existing one. Keras's own loggers (the CSV log, TensorBoard) append as they go.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any, Callable

import numpy as np


def save_npz_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez(path, **arrays)`, atomically (uncompressed: npz members stay memory-mappable)."""
    write_atomic(path, lambda handle: np.savez(handle, **arrays))


def write_bytes_atomic(path: str, content: bytes) -> None:
    """Writes `content` to `path` atomically."""
    write_atomic(path, lambda handle: handle.write(content))


def temporary_path(path: str) -> str:
    """The hidden name beside `path` that `write_atomic` writes before renaming: `.NAME.tmp-PID`."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


def write_atomic(path: str, write: Callable[[IO[bytes]], Any], *, exclusive: bool = False) -> None:
    """Calls `write(handle)` on a temporary binary file beside `path`, fsyncs it and renames it to `path`.

    On any exception (the write's, the fsync's, the rename's) the temporary file is removed and the
    exception propagates: `path` keeps its previous content, or stays absent. With `exclusive` an existing
    `path` is never replaced (`FileExistsError`): the finished file is hard-linked into place, which
    fails when the name exists, instead of renamed over it.
    """
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
            os.remove(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str, *, exclusive: bool = False) -> None:
    """Writes `text` (UTF-8) to `path` atomically (never over an existing file with `exclusive`)."""
    content = text.encode("utf-8")
    write_atomic(path, lambda handle: handle.write(content), exclusive=exclusive)


def write_json_atomic(path: str, value: Any, *, indent: int | None = 2, sort_keys: bool = True,
                      trailing_newline: bool = False, exclusive: bool = False) -> None:
    """`json.dump(value, indent=indent, sort_keys=sort_keys)` (NaN and inf written as JavaScript's names,
    as `json.dump` does), plus a final newline where asked, to `path` atomically. The text is serialised
    first: a value JSON cannot hold (a `TypeError`) leaves the file untouched and no temporary file."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys) + ("\n" if trailing_newline else "")
    write_text_atomic(path, text, exclusive=exclusive)


def publish_directory(tmp: str, final: str) -> None:
    """Makes the finished directory `tmp` appear as `final` in one step: fsyncs its files, then renames it.

    Refuses (`FileExistsError`) an existing `final`: Linux's rename would replace an empty directory.
    `tmp` and `final` must be on one file system (siblings, as the callers make them).
    """
    for directory, _, files in os.walk(tmp):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
    if os.path.lexists(final):
        raise FileExistsError(f"{final} already exists")
    os.rename(tmp, final)
