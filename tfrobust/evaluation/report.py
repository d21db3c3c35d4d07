"""What an evaluation writes: the JSON report, its table, and the npz of per-example results.

The report holds the clean and per-stage robust accuracy (the shape of the paper's Table 6), the threat
model, the checks' warnings, the versions and the arithmetic of the verdicts; reports are never
overwritten. The per-example npz goes through `tfrobust.fileio.save_npz_atomic`, so a kill leaves no
partial file.
"""

from __future__ import annotations

import platform

import keras
import numpy as np
import tensorflow as tf

from tfrobust.evaluation.checks import onednn_enabled
from tfrobust.evaluation.engine import VERIFY_ROWS, EvalResult
from tfrobust.fileio import save_npz_atomic, write_json_atomic
from tfrobust.numerics import numerics_record


def make_report(result: EvalResult, *, model: str, dataset: str, split: str, attack: str, norm: str, eps: float,
                seed: int) -> dict:
    """The JSON report of `result`: what was evaluated, the accuracies after each stage, the warnings, the
    versions and the numerics of the verdicts."""
    return {
        "model": model,
        "dataset": dataset,
        "split": split,
        "num_examples": result.num_examples,
        "attack": attack,
        "norm": norm,
        "eps": eps,
        "seed": seed,
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "stages": [
            {"attack": name, "robust_accuracy": value, "seconds": round(seconds, 2)}
            for name, value, seconds in zip(result.stage_names, result.robust_after_stage, result.stage_seconds)
        ],
        "counts": {"clean_correct": int(result.clean_correct.sum()), "robust": int(result.robust.sum())},
        "seconds": round(result.seconds, 2),
        "warnings": list(result.warnings),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version(),
                     "onednn": onednn_enabled()},
        # The arithmetic of the attacks and of the verdicts (see `tfrobust.evaluation.engine`).
        "numerics": {**numerics_record(), "verify_rows": VERIFY_ROWS, "ties": "correct"},
    }


def write_report(path: str, report: dict) -> None:
    """Writes `report` as indented JSON with sorted keys, atomically; refuses an existing `path`
    (`FileExistsError`: tfrobust never overwrites a report)."""
    write_json_atomic(path, report, exclusive=True)


def format_table(report: dict) -> str:
    """A readable table of clean and per-stage robust accuracy (the shape of the paper's Table 6), with
    each stage's wall time."""
    rows = [("clean", report["clean_accuracy"], None)]
    rows += [(s["attack"], s["robust_accuracy"], s.get("seconds")) for s in report["stages"]]
    width = max(len(name) for name, _, _ in rows) + 2
    head = f"{report['model']}  {report['dataset']}/{report['split']}  n={report['num_examples']}  {report['norm']} eps={report['eps']:.5g}"
    lines = [head, f"{'stage':<{width}}accuracy   seconds", "-" * (width + 19)]
    lines += [f"{name:<{width}}{100 * value:7.2f}%" + ("" if seconds is None else f"  {seconds:8.1f}")
              for name, value, seconds in rows]
    return "\n".join(lines)


def save_examples(path: str, result: EvalResult, *, labels: np.ndarray, norm: str, eps: float) -> None:
    """Per-example results as npz: `index` (position in the split), `label`, `clean_correct`, `robust`,
    `broken_at` (-1 robust, 0 misclassified clean, s + 1 first broken by stage s of `stage_names`),
    `adversarial` (float32 in [0, 1]; the clean image where no attack succeeded), `norm`, `eps`."""
    save_npz_atomic(path, dict(
        index=np.arange(result.num_examples), label=np.asarray(labels, np.int64),
        clean_correct=result.clean_correct, robust=result.robust, broken_at=result.broken_at,
        stage_names=np.array(result.stage_names), adversarial=result.adversarial,
        norm=np.array(norm), eps=np.array(eps)))
