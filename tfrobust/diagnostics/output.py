"""The folder a diagnostics command writes into, and the PNG/JSON writers they share.

Rules (the project's: never overwrite or lose user data):

- `--out DIR` must be absent or empty; a non-empty folder is refused unless `--overwrite` is given;
- `--overwrite` replaces a previous *report* only: the folder must hold the manifest a diagnostics command
  wrote there (`.tfrobust-report.json`, the list of files it created), only the files that manifest lists are
  deleted, and any other file in the folder is left alone; a file we are about to write whose name is
  taken by such a user file is refused, never replaced;
- every file is written through `ReportDir.path(name)`, which records it; `finish()` writes the manifest;
- the writers write atomically (`tfrobust.fileio`): an interrupted report leaves whole files.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfrobust.errors import UserError
from tfrobust.fileio import write_atomic, write_json_atomic, write_text_atomic

MANIFEST = ".tfrobust-report.json"


class ReportDir:
    """An output folder opened for one report (see the module docstring for the overwrite rules)."""

    def __init__(self, path: str, *, command: str, overwrite: bool = False):
        self.root = path
        self.command = command
        self._written: list[str] = []
        self._foreign: set[str] = set()
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"--out {path} exists and is not a directory")
        entries = os.listdir(path) if os.path.isdir(path) else []
        if entries:
            if not overwrite:
                raise UserError(
                    f"--out {path} exists and is not empty: choose another --out, or pass --overwrite "
                    "to replace the report in it"
                )
            manifest = os.path.join(path, MANIFEST)
            if not os.path.isfile(manifest):
                raise UserError(
                    f"--out {path} holds files that no tfrobust report wrote (no {MANIFEST}); "
                    "--overwrite only replaces a previous report: choose another --out"
                )
            try:
                with open(manifest) as handle:
                    previous = json.load(handle)
                files = [str(f) for f in previous["files"]]
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise UserError(f"unreadable {manifest}: {error}") from None
            for name in files:
                # Only plain names inside the folder: a manifest must not make us delete anything elsewhere.
                if os.path.basename(name) != name or name in ("", ".", ".."):
                    raise UserError(f"{manifest} lists {name!r}, not a file name: refusing to delete it")
            for name in files:
                target = os.path.join(path, name)
                if os.path.isfile(target):
                    os.remove(target)
            os.remove(manifest)
            self._foreign = set(os.listdir(path))
        os.makedirs(path, exist_ok=True)

    def path(self, name: str) -> str:
        """The path for the report file `name` (a plain file name), recorded for the manifest."""
        if os.path.basename(name) != name:
            raise ValueError(f"report files are plain names, got {name!r}")
        if name in self._foreign:
            raise UserError(f"{os.path.join(self.root, name)} is a file this report did not write: not replacing it")
        if name not in self._written:
            self._written.append(name)
        return os.path.join(self.root, name)

    def write_json(self, name: str, data: Any) -> str:
        path = self.path(name)
        write_json_atomic(path, data, indent=2, sort_keys=True, trailing_newline=True)
        return path

    def write_text(self, name: str, text: str) -> str:
        path = self.path(name)
        write_text_atomic(path, text)
        return path

    def save_figure(self, name: str, figure) -> str:
        """Saves a matplotlib figure as PNG and closes it."""
        import matplotlib.pyplot as plt

        path = self.path(name)
        extension = os.path.splitext(name)[1][1:] or "png"
        write_atomic(path, lambda handle: figure.savefig(handle, format=extension, dpi=110))
        plt.close(figure)
        return path

    @property
    def files(self) -> list[str]:
        return list(self._written)

    def finish(self) -> None:
        """Writes the manifest: the list of files this report owns (what a later --overwrite may delete)."""
        write_json_atomic(
            os.path.join(self.root, MANIFEST),
            {"command": self.command, "files": self._written},
            indent=2,
            sort_keys=False,
        )


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed; PNG output only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*[str(c) for c in row]) for row in rows]
    return "\n".join(lines)
