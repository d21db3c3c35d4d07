"""tfrobust.fileio: atomic writes. The contents round-trip; a failure at any point of a write (the write
itself, the fsync, the rename) leaves the previous file as it was and no temporary file behind."""

import errno
import json
import os

import numpy as np
import pytest

from tfrobust import fileio


def _entries(directory):
    return sorted(os.listdir(directory))


def test_contents_round_trip(tmp_path):
    fileio.write_bytes_atomic(str(tmp_path / "a.bin"), b"\x00\x01binary\xff")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01binary\xff"
    fileio.write_text_atomic(str(tmp_path / "a.txt"), "epoch,loss\n0,τ\n")
    assert (tmp_path / "a.txt").read_bytes() == "epoch,loss\n0,τ\n".encode()
    value = {"b": [1, 2.5, None], "a": {"nan": float("nan")}}
    fileio.write_json_atomic(str(tmp_path / "a.json"), value)
    assert (tmp_path / "a.json").read_text() == json.dumps(value, indent=2, sort_keys=True)
    fileio.write_json_atomic(str(tmp_path / "b.json"), value, indent=None, sort_keys=False, trailing_newline=True)
    assert (tmp_path / "b.json").read_text() == json.dumps(value) + "\n"
    arrays = {"image": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "label": np.array([3, 1], np.int64)}
    fileio.save_npz_atomic(str(tmp_path / "a.npz"), arrays)
    with np.load(tmp_path / "a.npz") as data:
        assert sorted(data.files) == ["image", "label"]
        for key, array in arrays.items():
            np.testing.assert_array_equal(data[key], array)
            assert data[key].dtype == array.dtype
    # json.dump into a file writes the same text as write_json_atomic (callers' files stay byte-identical).
    with open(tmp_path / "c.json", "w") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
    assert (tmp_path / "c.json").read_bytes() == (tmp_path / "a.json").read_bytes()
    assert _entries(tmp_path) == ["a.bin", "a.json", "a.npz", "a.txt", "b.json", "c.json"]


def test_the_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    fileio.write_bytes_atomic(str(tmp_path / "a"), b"x")
    assert events == ["fsync", "replace"]


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("writer", ["bytes", "text", "json", "npz"])
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch, where, writer):
    path = str(tmp_path / "state")
    fileio.write_bytes_atomic(path, b"previous")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    elif where == "replace":
        monkeypatch.setattr(os, "replace", fail)
    elif writer == "npz":
        monkeypatch.setattr(np, "savez", lambda handle, **arrays: (handle.write(b"PK\x03\x04half"), fail()))
    else:
        real_open = open

        class HalfWritten:
            """The temporary file, failing after half of the content is written."""

            def __init__(self, handle):
                self.handle = handle

            def write(self, content):
                self.handle.write(content[: len(content) // 2])
                fail()

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.handle.__exit__(*exc)

        def half_open(name, mode="r", *args, **kwargs):
            handle = real_open(name, mode, *args, **kwargs)
            return HalfWritten(handle) if "w" in mode else handle

        monkeypatch.setattr("builtins.open", half_open)
    write = {
        "bytes": lambda: fileio.write_bytes_atomic(path, b"new content"),
        "text": lambda: fileio.write_text_atomic(path, "new content"),
        "json": lambda: fileio.write_json_atomic(path, {"new": "content"}),
        "npz": lambda: fileio.save_npz_atomic(path, {"new": np.zeros(3)}),
    }[writer]
    with pytest.raises(OSError, match="No space left"):
        write()
    monkeypatch.undo()
    assert _entries(tmp_path) == ["state"]
    assert (tmp_path / "state").read_bytes() == b"previous"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_a_refused_write_is_one_line_naming_the_file(tmp_path, monkeypatch, code):
    """A write the system refuses is a `WriteError` (a `UserError`, and still an `OSError`): "cannot write
    WHAT PATH: REASON", one line; the previous file stays and no temporary file is left."""
    from tfrobust.errors import UserError, WriteError

    path = str(tmp_path / "checkpoint.npz")
    fileio.write_bytes_atomic(path, b"previous")

    def refuse(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(WriteError) as raised:
        fileio.save_npz_atomic(path, {"a": np.zeros(3)}, what="checkpoint")
    monkeypatch.undo()
    error = raised.value
    assert str(error) == f"cannot write checkpoint {path}: {os.strerror(code)}"
    assert isinstance(error, UserError) and isinstance(error, OSError) and error.errno == code
    assert (error.what, error.path, error.reason) == ("checkpoint", path, os.strerror(code))
    assert _entries(tmp_path) == ["checkpoint.npz"] and (tmp_path / "checkpoint.npz").read_bytes() == b"previous"
    # Without `what` the line names the file only; an exclusive write keeps its FileExistsError.
    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(WriteError, match=rf"^cannot write {path}: "):
        fileio.write_text_atomic(path, "x")
    monkeypatch.undo()
    with pytest.raises(FileExistsError) as exists:
        fileio.write_text_atomic(path, "x", exclusive=True)
    assert not isinstance(exists.value, WriteError)


def test_a_directory_that_cannot_be_published_is_one_line(tmp_path, monkeypatch):
    from tfrobust.errors import WriteError

    tmp = tmp_path / ".tmp-1"
    tmp.mkdir()
    (tmp / "saved_model.pb").write_bytes(b"pb")

    def refuse(a, b):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(WriteError, match=rf"^cannot write export {tmp_path / '1'}: Read-only file system$"):
        fileio.publish_directory(str(tmp), str(tmp_path / "1"), what="export")


def test_a_value_json_cannot_hold_leaves_the_file_untouched(tmp_path):
    path = str(tmp_path / "summary.json")
    fileio.write_json_atomic(path, {"epochs": 1})
    with pytest.raises(TypeError):
        fileio.write_json_atomic(path, {"epochs": object()})
    assert _entries(tmp_path) == ["summary.json"]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"epochs": 1}


def test_the_temporary_file_is_hidden_beside_the_target(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(a), real_replace(a, b))[1])
    fileio.write_bytes_atomic(str(tmp_path / "shard-00000.npz"), b"x")
    assert seen == [str(tmp_path / f".shard-00000.npz.tmp-{os.getpid()}")]


def test_publish_directory(tmp_path, monkeypatch):
    tmp, final = tmp_path / ".tmp-1", tmp_path / "1"
    (tmp / "assets.extra").mkdir(parents=True)
    (tmp / "saved_model.pb").write_bytes(b"pb")
    (tmp / "assets.extra" / "tfrobust.json").write_text("{}")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    fileio.publish_directory(str(tmp), str(final))
    assert len(synced) == 2  # every file of the directory
    assert _entries(tmp_path) == ["1"]
    assert (final / "assets.extra" / "tfrobust.json").read_text() == "{}"

    # An existing target, even an empty directory (which rename would replace), is never replaced.
    other = tmp_path / ".tmp-2"
    other.mkdir()
    (tmp_path / "2").mkdir()
    with pytest.raises(FileExistsError):
        fileio.publish_directory(str(other), str(tmp_path / "2"))
    with pytest.raises(FileExistsError):
        fileio.publish_directory(str(other), str(final))
    assert (final / "saved_model.pb").read_bytes() == b"pb"


def test_an_exclusive_write_never_replaces_a_file(tmp_path):
    path = str(tmp_path / "report.json")
    fileio.write_json_atomic(path, {"a": 1}, exclusive=True)
    with open(path) as handle:
        assert json.load(handle) == {"a": 1}
    with pytest.raises(FileExistsError):
        fileio.write_json_atomic(path, {"a": 2}, exclusive=True)
    with open(path) as handle:
        assert json.load(handle) == {"a": 1}
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary file left behind
