"""Sharded, resumable output of extra data (`generate`, `pseudolabel`, `pack`), and `pack` itself.

Output layout (what `--extra-data DIR` reads, see `tfrobust.data.extra`):
    DIR/shard-00000.npz ...   uncompressed npz shards in the paper's format (`image` uint8 N x H x W x C,
                              `label` int64; `pseudolabel` adds `score`), each written atomically
                              (`tfrobust.fileio`), so a shard is either complete or absent
    DIR/tfrobust-output.json  the command and its settings; a second run with the same settings resumes
                              (skips finished shards), one with other settings is refused
    DIR/summary.json          written last, when the output is complete
    DIR/.work/                intermediate state of a command (pseudo-labelling scores), removed at the end

Uncompressed npz rather than `.npy` pairs: anyone can `np.load` it as the published files, and
`tfrobust.data.extra` memory-maps it in place (measured as fast as `.npy`; see its docstring).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from typing import Any

import numpy as np

from tfrobust.errors import UserError
from tfrobust.fileio import save_npz_atomic, write_json_atomic

SHARD_PATTERN = "shard-{:05d}.npz"
STATE_NAME = "tfrobust-output.json"
SUMMARY_NAME = "summary.json"
WORK_NAME = ".work"
# What tfrobust may leave in an output directory: its files, the `.work` folder, and the temporary name an
# interrupted write leaves (`tfrobust.fileio`'s `.NAME.tmp-PID`; for the JSON files also a plain `NAME.tmp`,
# which directories written by other tfrobust versions can hold).
_OURS = re.compile(
    r"^(shard-\d{5}\.npz|\.(shard-\d{5}\.npz|tfrobust-output\.json|summary\.json)\.tmp-\d+"
    r"|tfrobust-output\.json(\.tmp)?|summary\.json(\.tmp)?|\.work)$"
)


class OutputDir:
    """A directory of shards written by one tfrobust command, resumable and never silently overwritten.

    `params` identify the work (inputs, settings); rerunning with equal params resumes, with different
    ones raises a UserError unless `overwrite`, which first deletes what tfrobust wrote there (and only
    that: a directory holding other files is always refused).
    """

    def __init__(self, path: str, *, command: str, params: dict[str, Any], overwrite: bool = False):
        if not path:
            raise UserError("empty --output path")
        self.path = path
        self.command = command
        self.params = json.loads(json.dumps(params))  # normalised as JSON would store it
        self.resumed = False
        self.complete = False
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"--output {path} is a file: give a directory (new, empty, or an earlier output to resume)")
        entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
        foreign = [e for e in entries if not _OURS.match(e)]
        if foreign:
            raise UserError(
                f"--output {path} holds files tfrobust did not write ({foreign[0]}, ...): choose a new or empty directory"
            )
        state = self._read_state() if entries else None
        if entries and not overwrite:
            if state is None:
                raise UserError(f"--output {path} holds shards of an unknown run: use --overwrite or another --output")
            if state.get("command") != command or state.get("params") != self.params:
                raise UserError(
                    f"--output {path} holds the output of another `tfrobust {state.get('command')}` run with other "
                    "settings: use the same settings to resume it, --overwrite to replace it, or another --output"
                )
            self.resumed = True
            self.complete = bool(state.get("complete"))
        elif entries:
            for entry in entries:
                full = os.path.join(path, entry)
                shutil.rmtree(full) if os.path.isdir(full) else os.remove(full)
        if not self.resumed:
            os.makedirs(path, exist_ok=True)
            self._write_state(complete=False)

    # Shards ---------------------------------------------------------------------------------------

    def shard_path(self, index: int) -> str:
        return os.path.join(self.path, SHARD_PATTERN.format(index))

    def has_shard(self, index: int) -> bool:
        return os.path.isfile(self.shard_path(index))

    def write_shard(self, index: int, images: np.ndarray, labels: np.ndarray | None, **extra: np.ndarray) -> str:
        """Writes shard `index` atomically (`tfrobust.fileio.save_npz_atomic`); returns its path.

        `labels` None writes an unlabelled shard (only `image`), for `tfrobust pseudolabel` to label.
        """
        final = self.shard_path(index)
        arrays = {"image": np.ascontiguousarray(images, dtype=np.uint8), **extra}
        if labels is not None:
            arrays["label"] = np.asarray(labels, dtype=np.int64)
        save_npz_atomic(final, arrays)
        return final

    # Intermediate state and completion ------------------------------------------------------------

    def work_path(self, name: str) -> str:
        directory = os.path.join(self.path, WORK_NAME)
        os.makedirs(directory, exist_ok=True)
        return os.path.join(directory, name)

    def finish(self, summary: dict[str, Any]) -> str:
        """Writes summary.json, marks the output complete and removes the intermediate state."""
        path = os.path.join(self.path, SUMMARY_NAME)
        _write_json(path, summary)
        self._write_state(complete=True)
        shutil.rmtree(os.path.join(self.path, WORK_NAME), ignore_errors=True)
        self.complete = True
        return path

    def read_summary(self) -> dict[str, Any]:
        with open(os.path.join(self.path, SUMMARY_NAME)) as handle:
            return json.load(handle)

    def _read_state(self) -> dict[str, Any] | None:
        path = os.path.join(self.path, STATE_NAME)
        if not os.path.isfile(path):
            return None
        try:
            with open(path) as handle:
                return json.load(handle)
        except (OSError, json.JSONDecodeError):
            return None

    def _write_state(self, *, complete: bool) -> None:
        _write_json(
            os.path.join(self.path, STATE_NAME), {"command": self.command, "params": self.params, "complete": complete}
        )


def _write_json(path: str, value: dict[str, Any]) -> None:
    write_json_atomic(path, value, indent=2, sort_keys=True)


def shard_counts(total: int, shard_size: int) -> list[int]:
    """Sizes of the shards of `total` images: `shard_size` each, the last one smaller."""
    if shard_size < 1:
        raise UserError(f"--shard-size must be >= 1, got {shard_size}")
    return [min(shard_size, total - start) for start in range(0, total, shard_size)]


def pack(
    inputs: list[str] | tuple[str, ...],
    output: str,
    *,
    shard_size: int = 100_000,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Rewrites extra data (compressed npz included) as uncompressed, memory-mappable npz shards.

    Streams: a compressed member is decompressed `shard_size` rows at a time, so memory stays at one
    shard whatever the input size. Labels are kept when every input has them.
    """
    import keras  # lazy: only for the progress bar

    from tfrobust.data import extra

    files = extra.discover(list(inputs))
    sources = []  # (path, shape, label-presence)
    for path in files:
        if path.endswith(".npz") and extra.is_compressed_npz(path):
            shape, dtype, _ = extra.read_member_chunks(path, extra.IMAGE_KEY, 1)
            if dtype != np.uint8 or len(shape) != 4 or shape[0] == 0 or shape[-1] not in (1, 3):
                raise UserError(
                    f"{path}: 'image' is {dtype} {shape}; expected uint8 N x H x W x C with N > 0, C = 1 or 3"
                )
            with zipfile.ZipFile(path) as archive:
                has_label = f"{extra.LABEL_KEY}.npy" in archive.namelist()
            if has_label:
                label_shape, label_dtype, _ = extra.read_member_chunks(path, extra.LABEL_KEY, 1)
                if label_shape != (shape[0],) or not np.issubdtype(label_dtype, np.integer):
                    raise UserError(f"{path}: 'label' is {label_dtype} {label_shape}; expected {shape[0]} integers")
            sources.append((path, shape, has_label, True))
        else:
            opened = extra.open_extra_data([path], require_labels=False)
            sources.append((path, (len(opened), *opened.image_shape), opened.labelled, False))
    shapes = {s[1][1:] for s in sources}
    if len(shapes) > 1:
        raise UserError(f"the inputs have different image shapes {sorted(shapes)}: pack each shape separately")
    labelled = [s[2] for s in sources]
    if any(labelled) and not all(labelled):
        raise UserError(
            f"{sources[labelled.index(False)][0]} has no labels but other inputs do: label every input or none"
        )
    total = sum(s[1][0] for s in sources)
    params = {
        "inputs": [os.path.abspath(p) for p in files],
        "sizes": [os.path.getsize(p) for p in files],
        "shard_size": shard_size,
    }
    out = OutputDir(output, command="pack", params=params, overwrite=overwrite)
    counts = shard_counts(total, shard_size)
    if out.complete:
        return out.read_summary()
    bar = keras.utils.Progbar(total, unit_name="image") if progress else None

    def stream():
        """Yields (images, labels or None) in input order, at most `shard_size` rows at a time."""
        for path, _shape, has_label, compressed in sources:
            if compressed:
                _, _, images = extra.read_member_chunks(path, extra.IMAGE_KEY, shard_size)
                labels = extra.read_member_chunks(path, extra.LABEL_KEY, shard_size)[2] if has_label else None
                for chunk in images:
                    yield chunk, (next(labels) if labels is not None else None)
            else:
                opened = extra.open_extra_data([path], require_labels=False)
                for _, chunk, chunk_labels in opened.blocks(shard_size):
                    yield chunk, chunk_labels

    buffer_images: list[np.ndarray] = []
    buffer_labels: list[np.ndarray] = []
    buffered = 0
    shard = 0
    done = 0
    for images, labels in stream():
        buffer_images.append(images)
        buffer_labels.append(labels if labels is not None else np.full(images.shape[0], -1, np.int64))
        buffered += images.shape[0]
        while shard < len(counts) and buffered >= counts[shard]:
            size = counts[shard]
            all_images = np.concatenate(buffer_images)
            all_labels = np.concatenate(buffer_labels)
            if not out.has_shard(shard):
                out.write_shard(shard, all_images[:size], all_labels[:size] if all(labelled) else None)
            buffer_images, buffer_labels = [all_images[size:]], [all_labels[size:]]
            buffered -= size
            shard += 1
            done += size
            if bar is not None:
                bar.update(done)
    summary = {
        "command": "pack",
        "inputs": list(files),
        "images": total,
        "shards": len(counts),
        "labelled": all(labelled),
        "image_shape": list(next(iter(shapes))),
        "output": output,
    }
    out.finish(summary)
    return summary
