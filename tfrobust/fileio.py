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

A write the operating system refuses (no space left, over quota, a read-only file system, no permission:
any `OSError` but `FileExistsError`, which `exclusive` and `publish_directory` raise on purpose) raises
`tfrobust.errors.WriteError`, one line naming what the file is (`what`, given by the writer), where, and
the system's reason: "cannot write checkpoint runs/x/checkpoint.npz: No space left on device". It is also
an `OSError`; `write_error` makes the same line for writers outside this module (the CSV log).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from tfrobust.errors import WriteError


def write_error(error: OSError, path: str, what: str = "") -> WriteError:
    """The `WriteError` line of `error`, raised while writing `path` (`what` the file is, e.g. "checkpoint")."""
    if isinstance(error, WriteError):
        return error
    return WriteError(what, path, error.strerror or str(error), error.errno)


def save_npz_atomic(path: str, arrays: dict[str, np.ndarray], *, what: str = "") -> None:
    """`np.savez(path, **arrays)`, atomically (uncompressed: npz members stay memory-mappable)."""
    write_atomic(path, lambda handle: np.savez(handle, **arrays), what=what)


def write_bytes_atomic(path: str, content: bytes, *, what: str = "") -> None:
    """Writes `content` to `path` atomically."""
    write_atomic(path, lambda handle: handle.write(content), what=what)


def temporary_path(path: str) -> str:
    """The hidden name beside `path` that `write_atomic` writes before renaming: `.NAME.tmp-PID`."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp-{os.getpid()}")


def write_atomic(path: str, write: Callable[[IO[bytes]], Any], *, exclusive: bool = False, what: str = "") -> None:
    """Calls `write(handle)` on a temporary binary file beside `path`, fsyncs it and renames it to `path`.

    On any exception (the write's, the fsync's, the rename's) the temporary file is removed and the
    exception propagates, an `OSError` as the `WriteError` naming `what` and `path` (module docstring):
    `path` keeps its previous content, or stays absent. With `exclusive` an existing `path` is never
    replaced (`FileExistsError`): the finished file is hard-linked into place, which fails when the name
    exists, instead of renamed over it.
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
    except BaseException as error:
        with contextlib.suppress(OSError):  # a removal that fails too must not hide the first error
            if os.path.lexists(tmp):
                os.remove(tmp)
        if isinstance(error, OSError) and not isinstance(error, FileExistsError):
            raise write_error(error, path, what) from error
        raise


def write_text_atomic(path: str, text: str, *, exclusive: bool = False, what: str = "") -> None:
    """Writes `text` (UTF-8) to `path` atomically (never over an existing file with `exclusive`)."""
    content = text.encode("utf-8")
    write_atomic(path, lambda handle: handle.write(content), exclusive=exclusive, what=what)


def write_json_atomic(
    path: str,
    value: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = True,
    trailing_newline: bool = False,
    exclusive: bool = False,
    what: str = "",
) -> None:
    """`json.dump(value, indent=indent, sort_keys=sort_keys)` (NaN and inf written as JavaScript's names,
    as `json.dump` does), plus a final newline where asked, to `path` atomically. The text is serialised
    first: a value JSON cannot hold (a `TypeError`) leaves the file untouched and no temporary file."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys) + ("\n" if trailing_newline else "")
    write_text_atomic(path, text, exclusive=exclusive, what=what)


def publish_directory(tmp: str, final: str, *, what: str = "") -> None:
    """Makes the finished directory `tmp` appear as `final` in one step: fsyncs its files, then renames it.

    Refuses (`FileExistsError`) an existing `final`: Linux's rename would replace an empty directory.
    `tmp` and `final` must be on one file system (siblings, as the callers make them). A failed fsync or
    rename is the `WriteError` naming `what` and `final`.
    """
    try:
        for directory, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(directory, name), "rb") as handle:
                    os.fsync(handle.fileno())
        if os.path.lexists(final):
            raise FileExistsError(f"{final} already exists")
        os.rename(tmp, final)
    except FileExistsError:
        raise
    except OSError as error:
        raise write_error(error, final, what) from error
