"""The whole training state in one file, written atomically.

`checkpoint.npz` holds the network's weights (trainable and BatchNorm statistics), the weight averages,
the optimizer's variables (step count, momenta) and a JSON document (epoch reached, model-selection
state). It is written to a temporary file in the run directory and moved into place with `os.replace`,
so a run killed at any moment (SIGKILL included) leaves either the previous or the new checkpoint,
never a torn one. The data position needs no storage: epoch e's order is a function of (seed, e).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Sequence

import numpy as np

from tfrobust.errors import UserError
from tfrobust.fileio import save_npz_atomic

CHECKPOINT_NAME = "checkpoint.npz"


def save_arrays(path: str, groups: dict[str, Sequence[Any]], state: dict[str, Any]) -> None:
    """Writes variable groups and a JSON state to `path` atomically (tmp file + os.replace)."""
    arrays = {"state_json": np.array(json.dumps(state))}
    for group, variables in groups.items():
        for index, variable in enumerate(variables):
            arrays[f"{group}/{index:05d}"] = np.asarray(variable)
    save_npz_atomic(path, arrays)


def load_arrays(path: str) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """Reads what `save_arrays` wrote; a missing, truncated or foreign file is a `UserError`."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            state = json.loads(str(data["state_json"]))
            groups: dict[str, list[np.ndarray]] = {}
            for key in sorted(k for k in data.files if k != "state_json"):
                group, _ = key.rsplit("/", 1)
                groups.setdefault(group, []).append(data[key])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as error:
        raise UserError(f"unreadable checkpoint {path}: {type(error).__name__}: {error}") from None
    return groups, state


def assign_group(variables: Sequence[Any], arrays: Sequence[np.ndarray], what: str, path: str) -> None:
    """Assigns saved arrays to variables, refusing a checkpoint of another model or optimizer."""
    if len(variables) != len(arrays):
        raise UserError(
            f"checkpoint {path} does not match this run: {what} has {len(arrays)} arrays, expected {len(variables)}"
        )
    for variable, array in zip(variables, arrays):
        if tuple(variable.shape) != array.shape:
            raise UserError(
                f"checkpoint {path} does not match this run: {what} variable {variable.path} has shape "
                f"{tuple(variable.shape)}, checkpoint has {array.shape}"
            )
    for variable, array in zip(variables, arrays):
        variable.assign(array)
