"""The saved state of a long evaluation, so that an interrupted `tfrobust eval` can be resumed.

A state directory (`<report>.state/`) holds `settings.json` (what was asked: model, cascade, eps, data,
seed, batch size, ...) and one `batch_NNNNN.npz` per finished batch (per example: clean correctness,
the stage that first broke it, optionally the adversarial example; per stage: seconds). Each batch file
is written to a temporary name and moved into place with `os.replace`, so a kill at any moment leaves
whole batches only. Resuming recomputes nothing that was saved: batch b's attacks are seeded by
(seed, b, stage) alone (`Evaluator.run`), so the resumed evaluation gives exactly the uninterrupted
result. The directory is removed once the report is written.

A full AutoAttack evaluation of a WRN-70-16 on 10,000 CIFAR-10 images takes hours even on a GPU; the
reference AutoAttack keeps nothing on interruption, RobustBench's runs restart from zero.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np

from tfrobust.errors import UserError

SETTINGS_NAME = "settings.json"


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """The outcome of one batch of a cascade.

    `broken_at[i]`: -1 if example i survived every stage, 0 if its clean input is misclassified (never
    attacked), s + 1 if stage s produced its first verified adversarial example.
    """

    clean_correct: np.ndarray  # bool [b]
    broken_at: np.ndarray  # int16 [b]
    stage_seconds: np.ndarray  # float64 [stages]
    adversarial: np.ndarray | None = None  # float32 [b,H,W,C] (the clean image where nothing succeeded)


def state_dir_for(report_path: str) -> str:
    """Where the evaluation writing `report_path` keeps its state."""
    return f"{report_path}.state"


class EvalState:
    """Per-batch results of one evaluation on disk; `settings` must match to resume."""

    def __init__(self, directory: str, settings: dict):
        self.directory = directory
        self.settings = settings

    @classmethod
    def create(cls, directory: str, settings: dict) -> "EvalState":
        """A new state directory; refuses one that exists (an interrupted evaluation the user may want)."""
        if os.path.exists(directory):
            raise UserError(
                f"{directory} holds an interrupted evaluation: continue it with `tfrobust eval --resume "
                f"{directory[: -len('.state')]}` or delete the folder"
            )
        os.makedirs(directory)
        _write_atomic(os.path.join(directory, SETTINGS_NAME), json.dumps(settings, indent=2, sort_keys=True).encode())
        return cls(directory, settings)

    @classmethod
    def open(cls, directory: str) -> "EvalState":
        """The state of an interrupted evaluation; its settings are those to resume with."""
        path = os.path.join(directory, SETTINGS_NAME)
        if not os.path.isfile(path):
            raise UserError(f"no interrupted evaluation at {directory}: nothing to resume (the report may be complete)")
        try:
            with open(path) as handle:
                settings = json.load(handle)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read {path}: {error}") from None
        return cls(directory, settings)

    def _path(self, batch_index: int) -> str:
        return os.path.join(self.directory, f"batch_{batch_index:05d}.npz")

    def load(self, batch_index: int, num_stages: int) -> BatchResult | None:
        """The saved result of a batch, or None if it was not finished."""
        path = self._path(batch_index)
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                result = BatchResult(
                    clean_correct=data["clean_correct"].astype(bool),
                    broken_at=data["broken_at"].astype(np.int16),
                    stage_seconds=data["stage_seconds"].astype(np.float64),
                    adversarial=data["adversarial"] if "adversarial" in data.files else None,
                )
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"cannot read {path} ({error}): delete it to recompute that batch") from None
        if result.stage_seconds.shape != (num_stages,):
            raise UserError(f"{path} does not belong to this evaluation ({num_stages} stages): delete {self.directory}")
        return result

    def save(self, batch_index: int, result: BatchResult) -> None:
        arrays = {"clean_correct": result.clean_correct, "broken_at": result.broken_at,
                  "stage_seconds": result.stage_seconds}
        if result.adversarial is not None:
            arrays["adversarial"] = result.adversarial
        tmp = f"{self._path(batch_index)}.tmp-{os.getpid()}"
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._path(batch_index))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_atomic(path: str, content: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(content)
    os.replace(tmp, path)
