"""The whole training state in one file, written atomically, every array keyed by its variable's path.

`checkpoint.npz` holds the network's weights (trainable and BatchNorm statistics), the weight averages,
the optimizer's variables (step count, momenta) and a JSON document (epoch reached, model-selection
state). It is written through `tfrobust.fileio` (a temporary file, fsynced, moved into place with
`os.replace`), so a run killed at any moment (SIGKILL included) leaves either the previous or the new
checkpoint, never a torn one. The data position needs no storage: epoch e's order is a function of (seed, e).
A checkpoint written mid-epoch on a stop request (`tfrobust.training.faults`) records `epoch_step`, the
steps done of epoch `epoch` (the data position is then that step), and a `metrics` group: the running sums
of the epoch's training metrics, so the resumed epoch logs the means an uninterrupted one does.

Layout: the npz member `GROUP/KEY` is one array, GROUP a part of the state (`network`, `averaging`,
`optimizer`) and KEY a name stable across processes that is unique within its group: the variable's Keras
path (`variable.path`: `layer_0_block_0_conv_0/kernel`; an optimizer slot's path names the network variable
it belongs to, `trace_sgd/layer_0_block_0_conv_0_kernel_trace`), or one the owner derives where the path
is positional (`WeightAveraging.state_by_key`: each average under its network variable's path). The member
`state_json` holds the JSON document, with `checkpoint_format` added. `best.npz` (model selection) is the
same format with the `network` group only.

A path is built from layer names: tfrobust's models name every layer, so their paths are the same in
every process. A Keras model whose layers are named automatically (`conv2d_3`) gets other numbers when
other models were built before it in the same process; its checkpoint then is refused (naming the
variables on both sides) rather than loaded into the wrong variables.

Loading matches arrays to variables by key, whatever the order of either. A checkpoint that does not fit
(a key missing, an unexpected key, another shape) is refused in one line naming the file, the group and
the first offending paths. A checkpoint of the positional format (members `GROUP/00000`, ..., no
`checkpoint_format`) is refused as of an older format: the position of a variable is not a stable name
for it (it moves when a layer is added or built in another order), so tfrobust does not guess.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tfrobust.errors import UserError
from tfrobust.fileio import save_npz_atomic

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_FORMAT = "tfrobust-checkpoint-2"  # variables keyed by path
FORMAT_KEY = "checkpoint_format"
STATE_MEMBER = "state_json"
SHOWN = 3  # offending variable paths named in an error


def by_path(variables: Iterable[Any], what: str) -> dict[str, Any]:
    """`{variable.path: variable}`, in order; two variables with one path are a `UserError` (a checkpoint
    could not tell them apart)."""
    keyed: dict[str, Any] = {}
    for variable in variables:
        key = str(variable.path)
        if key in keyed:
            raise UserError(
                f"cannot checkpoint the {what}: two of its variables have the path {key!r} "
                "(give its layers distinct names)"
            )
        keyed[key] = variable
    return keyed


def save_arrays(
    path: str, groups: Mapping[str, Mapping[str, Any]], state: dict[str, Any], *, what: str = "checkpoint"
) -> None:
    """Writes `{group: {key: array or variable}}` and a JSON `state` to `path` atomically; a write the
    system refuses is the `WriteError` line "cannot write {what} {path}: {reason}" (`tfrobust.fileio`)."""
    if FORMAT_KEY in state:
        raise ValueError(f"{FORMAT_KEY!r} is reserved in a checkpoint's state")
    arrays = {STATE_MEMBER: np.array(json.dumps({**state, FORMAT_KEY: CHECKPOINT_FORMAT}))}
    for group, values in groups.items():
        if "/" in group or not isinstance(values, Mapping):
            raise ValueError(f"checkpoint group {group!r}: a name without '/' and a mapping key -> array")
        for key, value in values.items():
            arrays[f"{group}/{key}"] = np.asarray(value)
    save_npz_atomic(path, arrays, what=what)


def _read_state(data: Any) -> dict[str, Any]:
    state = json.loads(str(data[STATE_MEMBER]))
    if not isinstance(state, dict):
        raise ValueError(f"{STATE_MEMBER} is not a JSON object")
    return state


def _unreadable(path: str, error: BaseException) -> UserError:
    return UserError(f"unreadable checkpoint {path}: {type(error).__name__}: {error}")


_READ_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError)  # JSONDecodeError is a ValueError


def read_state(path: str) -> dict[str, Any]:
    """The JSON state of a checkpoint (of any format) without reading its arrays."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            state = _read_state(data)
    except _READ_ERRORS as error:
        raise _unreadable(path, error) from None
    state.pop(FORMAT_KEY, None)
    return state


def load_arrays(path: str) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Reads what `save_arrays` wrote: `{group: {key: array}}` and the state. A missing, truncated or
    foreign file, or one of the positional format, is a `UserError`."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            state = _read_state(data)
            if state.pop(FORMAT_KEY, None) != CHECKPOINT_FORMAT:
                raise UserError(
                    f"checkpoint {path} is of an older tfrobust format (variables stored by position, not by "
                    "path): resume or export it with the tfrobust version that wrote it"
                )
            groups: dict[str, dict[str, np.ndarray]] = {}
            for member in data.files:
                if member != STATE_MEMBER:
                    group, key = member.split("/", 1)
                    groups.setdefault(group, {})[key] = data[member]
    except _READ_ERRORS as error:
        raise _unreadable(path, error) from None
    return groups, state


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return f"{shown}, ..." if len(keys) > SHOWN else shown


def _plural(count: int) -> str:
    return f"{count} variable{'s' if count != 1 else ''}"


def check_group(variables: Mapping[str, Any], arrays: Mapping[str, np.ndarray], what: str, path: str) -> None:
    """Checks that every variable has an array of its shape and every array a variable, matched by key;
    else one `UserError` line naming the checkpoint `path`, the group `what` and the first offending keys."""
    missing = [key for key in variables if key not in arrays]
    unexpected = [key for key in arrays if key not in variables]
    reshaped = [
        f"{key} {tuple(variables[key].shape)} vs {tuple(arrays[key].shape)}"
        for key in variables
        if key in arrays and tuple(variables[key].shape) != tuple(arrays[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{what} is missing {_plural(len(missing))} ({_listed(missing)})")
    if unexpected:
        problems.append(f"{what} has {_plural(len(unexpected))} this model lacks ({_listed(unexpected)})")
    if reshaped:
        problems.append(
            f"{what} has {_plural(len(reshaped))} of another shape (model vs checkpoint: {_listed(reshaped)})"
        )
    if problems:
        raise UserError(f"checkpoint {path} does not fit this model: {'; '.join(problems)}")


def assign_group(variables: Mapping[str, Any], arrays: Mapping[str, np.ndarray], what: str, path: str) -> None:
    """Assigns `arrays[key]` to `variables[key]` for every key, after `check_group` (nothing is assigned
    unless the whole group fits)."""
    check_group(variables, arrays, what, path)
    for key, variable in variables.items():
        variable.assign(arrays[key])
