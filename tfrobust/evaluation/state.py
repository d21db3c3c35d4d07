"""The saved state of a long evaluation, so that an interrupted `tfrobust eval` can be resumed.

A state directory (`<report>.state/`) holds `settings.json` (what was asked: model, cascade, eps, data,
seed, batch size, ...) and one `poolPPPP_stageSS_batchKKKKK.npz` per attacked batch: the evaluation runs
stage by stage over pools of examples (`engine.Evaluator.run`), and batch k of stage s holds the
still-robust points it attacked, which of them were broken and, optionally, their adversarial examples. Each
file is written through `tfrobust.fileio` (a temporary name moved into place with `os.replace`), so a kill
at any moment leaves whole batches only. Resuming recomputes nothing that was saved: the clean predictions
are recomputed (one forward pass), which determines the points of every saved batch (checked against the
file), and batch k of stage s in pool p is seeded by (seed, p, s, k) alone, so the resumed evaluation gives
exactly the uninterrupted result. The directory is removed once the report is written.

A full AutoAttack evaluation of a WRN-70-16 on 10,000 CIFAR-10 images takes hours even on a GPU; the
reference AutoAttack keeps nothing on interruption, RobustBench's runs restart from zero.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zipfile

import numpy as np

from tfrobust.errors import UserError
from tfrobust.fileio import save_npz_atomic, write_bytes_atomic

SETTINGS_NAME = "settings.json"


@dataclasses.dataclass(frozen=True)
class GroupResult:
    """The outcome of one attack on one batch of still-robust points (`engine.attack_batches`)."""

    index: np.ndarray  # int64 [b]: positions in the pool of the points attacked
    broken: np.ndarray  # bool [b]: verified adversarial example found
    seconds: float
    adversarial: np.ndarray | None = None  # float32 [broken.sum(), H, W, C], if kept


def state_dir_for(report_path: str) -> str:
    """Where the evaluation writing `report_path` keeps its state."""
    return f"{report_path}.state"


class EvalState:
    """Per-batch results of one evaluation on disk; `settings` must match to resume."""

    def __init__(self, directory: str, settings: dict):
        self.directory = directory
        self.settings = settings

    @classmethod
    def create(cls, directory: str, settings: dict) -> EvalState:
        """A new state directory; refuses one that exists (an interrupted evaluation the user may want)."""
        if os.path.exists(directory):
            raise UserError(
                f"{directory} holds an interrupted evaluation: continue it with `tfrobust eval --resume "
                f"{directory[: -len('.state')]}` or delete the folder"
            )
        os.makedirs(directory)
        write_bytes_atomic(
            os.path.join(directory, SETTINGS_NAME), json.dumps(settings, indent=2, sort_keys=True).encode()
        )
        return cls(directory, settings)

    @classmethod
    def open(cls, directory: str) -> EvalState:
        """The state of an interrupted evaluation; its settings are those to resume with."""
        path = os.path.join(directory, SETTINGS_NAME)
        if not os.path.isfile(path):
            raise UserError(f"no interrupted evaluation at {directory}: nothing to resume (the report may be complete)")
        try:
            with open(path) as handle:
                settings = json.load(handle)
        except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8 text
            raise UserError(f"cannot read {path}: {error}") from None
        if not isinstance(settings, dict):
            raise UserError(f"cannot read {path}: expected a JSON object, got {type(settings).__name__}")
        return cls(directory, settings)

    def _path(self, key: tuple[int, int, int]) -> str:
        pool, stage, group = key
        return os.path.join(self.directory, f"pool{pool:04d}_stage{stage:02d}_batch{group:05d}.npz")

    def load_group(self, key: tuple[int, int, int], index: np.ndarray) -> GroupResult | None:
        """The saved result of batch `key` = (pool, stage, batch), or None if it was not finished.

        `index` is the batch the resumed run is about to attack; a saved batch of other points means the
        model's clean predictions or the data changed since the interruption.
        """
        path = self._path(key)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                result = GroupResult(
                    index=data["index"].astype(np.int64),
                    broken=data["broken"].astype(bool),
                    seconds=float(data["seconds"]),
                    adversarial=data["adversarial"] if "adversarial" in data.files else None,
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # truncated or bit-flipped
            raise UserError(
                f"cannot read {path} ({' '.join(str(error).split())[:200]}): delete it to recompute that batch"
            ) from None
        if not np.array_equal(result.index, index):
            raise UserError(
                f"{path} holds other points than this evaluation attacks now (the model's predictions "
                f"or the data changed since the interruption): delete {self.directory} and start again"
            )
        return result

    def save_group(self, key: tuple[int, int, int], result: GroupResult) -> None:
        arrays = {
            "index": np.asarray(result.index, np.int64),
            "broken": result.broken,
            "seconds": np.float64(result.seconds),
        }
        if result.adversarial is not None:
            arrays["adversarial"] = result.adversarial
        save_npz_atomic(self._path(key), arrays)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
