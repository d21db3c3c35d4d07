"""Damaged input files: one `UserError` line naming the file and what is wrong, before anything reads them.

Two checks, each with the file format's own redundancy:

- zip archives (npz, `.keras`, PyTorch's `.pt`): every member carries a CRC-32 of its bytes in the zip's
  directory (APPNOTE.TXT, section 4.4.7). `zipfile.ZipFile.testzip` reads every member to its end, where
  Python compares the CRC. Readers that do not compare it load a flipped byte as a different value:
  `torch.load` (its own zip reader checks no CRC: a flipped tensor byte loads as another weight), a memory
  map of an npz member (`tfrobust.data.extra`), Keras for a member it does not read (a `.keras` file's
  metadata.json). A truncated archive has lost its directory and is no zip at all. `check_zip_archive`
  runs `testzip` before any of them.
- SavedModels: TensorFlow (2.12 and later) writes `fingerprint.pb` when it saves one (TensorFlow's
  `tensorflow/cc/saved_model/fingerprinting.cc`): `saved_model_checksum`, the 64-bit FarmHash of the
  SavedModel proto serialised deterministically, and `checkpoint_hash`, that of `variables/variables.index`.
  `check_saved_model_files` recomputes both with the function that wrote them (`CreateFingerprintDef`) and
  compares: a truncated or bit-flipped saved_model.pb or variables.index no longer matches. The variables'
  data file carries a CRC-32C per tensor, which TensorFlow checks as it restores them. A SavedModel without
  fingerprint.pb (an older TensorFlow's) is left to the parser.

Cost: `testzip` reads the archive once (sequentially); the fingerprint parses saved_model.pb once and hashes
variables.index. Neither runs anything in the file.
"""

from __future__ import annotations

import os
import zipfile

from tfrobust.errors import UserError


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, at most `limit` characters (its type's name if it has none)."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


def check_zip_archive(path: str, what: str) -> None:
    """Refuses (`UserError`, one line) a zip archive (`what`: "an npz file", "a .keras file", ...) that is
    truncated or whose members do not match their CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as error:  # noqa: BLE001 - a damaged archive raises BadZipFile, zlib.error, EOFError, ...
        raise UserError(
            f"cannot load {path} as {what} (a zip archive): it is damaged or truncated "
            f"({type(error).__name__}: {one_line(error)})"
        ) from None
    if bad is not None:
        raise UserError(f"{path} is damaged: its member {bad!r} does not match its CRC-32")


def check_saved_model_files(directory: str) -> None:
    """Refuses (`UserError`, one line) a SavedModel whose `saved_model.pb` or `variables/variables.index`
    does not match its `fingerprint.pb` (see the module docstring); does nothing without fingerprint.pb."""
    fingerprint_path = os.path.join(directory, "fingerprint.pb")
    if not os.path.isfile(fingerprint_path):
        return
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    stored = fingerprint_pb2.FingerprintDef()
    try:
        with open(fingerprint_path, "rb") as handle:
            stored.ParseFromString(handle.read())
    except (OSError, DecodeError) as error:
        raise UserError(f"cannot read {fingerprint_path}: it is damaged ({one_line(error)})") from None
    fresh = fingerprint_pb2.FingerprintDef()
    try:
        fresh.ParseFromString(fingerprinting.CreateFingerprintDef(directory))
    except (fingerprinting.FingerprintException, fingerprinting.FileNotFoundException) as error:
        # TensorFlow's message is "Could not create fingerprint in directory: DIR" and, on the next line, the cause.
        lines = str(error).strip().splitlines() or [type(error).__name__]
        raise UserError(
            f"cannot read SavedModel {directory}: {one_line(lines[-1])} (a file is damaged or truncated)"
        ) from None
    for field, name in (
        ("saved_model_checksum", "saved_model.pb"),
        ("checkpoint_hash", os.path.join("variables", "variables.index")),
    ):
        if getattr(stored, field) != getattr(fresh, field):
            raise UserError(
                f"{os.path.join(directory, name)} does not match the {field} recorded in fingerprint.pb: "
                "one of the two files is damaged (truncated or changed since the model was saved)"
            )
