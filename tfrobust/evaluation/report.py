"""What an evaluation writes: the JSON report, its table, and the npz of per-example results.

The report holds the clean and per-stage robust accuracy (the shape of the paper's Table 6), the threat
model, the checks' warnings, the versions and the arithmetic of the verdicts; reports are never
overwritten. The per-example npz goes through `tfrobust.fileio.save_npz_atomic`, so a kill leaves no
partial file.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobust.evaluation.checks import onednn_enabled
from tfrobust.evaluation.engine import VERIFY_ROWS, EvalResult
from tfrobust.evaluation.versions import eps_record, reference_record
from tfrobust.fileio import save_npz_atomic, write_json_atomic
from tfrobust.numerics import numerics_record


def make_report(
    result: EvalResult,
    *,
    model: str,
    dataset: str,
    split: str,
    attack: str,
    norm: str,
    eps: float,
    seed: int,
    eot_iter: int | None = None,
    notes: Sequence[str] = (),
    jit_compile: bool = False,
) -> dict:
    """The JSON report of `result`: what was evaluated and the protocol it follows (`reference`:
    `versions.reference_record`), eps as given and in 255ths, the accuracies after each stage, the worst
    case per example in counts (misclassified clean, first broken by each stage, robust), the warnings
    (`notes`, e.g. `versions.eps_warning`, first), the versions and the numerics of the verdicts.

    Each stage entry holds its robust accuracy after it, the points it broke first (`broken`), its wall
    time, and for an APGD stage its model calls per gradient (`eot_iter`). `eot_iter` is the evaluation's
    override (None: each stage's own). `jit_compile`: whether the attacks ran under XLA (the resolved
    setting, `engine.resolve_jit_compile`).
    """
    broken_at = result.broken_at if result.broken_at is not None else np.zeros([0], np.int16)
    broken = [int(np.sum(broken_at == s + 1)) for s in range(len(result.stage_names))]
    eot = result.stage_eot_iter or (None,) * len(result.stage_names)
    stages = []
    for name, value, seconds, count, calls in zip(
        result.stage_names, result.robust_after_stage, result.stage_seconds, broken, eot
    ):
        entry = {"attack": name, "robust_accuracy": value, "broken": count, "seconds": round(seconds, 2)}
        if calls is not None:
            entry["eot_iter"] = calls
        stages.append(entry)
    return {
        "model": model,
        "dataset": dataset,
        "split": split,
        "num_examples": result.num_examples,
        "attack": attack,
        "reference": reference_record(attack),
        "norm": norm,
        **eps_record(eps),
        "eot_iter": eot_iter,
        "jit_compile": bool(jit_compile),
        "seed": seed,
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "stages": stages,
        "counts": {
            "clean_correct": int(result.clean_correct.sum()),
            "robust": int(result.robust.sum()),
            "misclassified_clean": int(np.sum(broken_at == 0)),
            "broken_by_stage": broken,
        },
        "seconds": round(result.seconds, 2),
        "warnings": list(notes) + list(result.warnings),
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
            "onednn": onednn_enabled(),
        },
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
    lines += [
        f"{name:<{width}}{100 * value:7.2f}%" + ("" if seconds is None else f"  {seconds:8.1f}")
        for name, value, seconds in rows
    ]
    return "\n".join(lines)


def worst_case(result: EvalResult) -> np.ndarray:
    """Per example, in words, what broke it: "robust", "misclassified" (on its clean image) or the name of
    the first stage that broke it (`broken_at` spelt out)."""
    names = np.array(["robust", "misclassified", *result.stage_names])
    return names[np.asarray(result.broken_at, np.int64) + 1] if result.num_examples else np.zeros([0], names.dtype)


def save_examples(path: str, result: EvalResult, *, labels: np.ndarray, norm: str, eps: float) -> None:
    """Per-example results as npz: `index` (position in the split), `label`, `clean_correct`, `robust`,
    `broken_at` (-1 robust, 0 misclassified clean, s + 1 first broken by stage s of `stage_names`),
    `worst_case` (the same in words: "robust", "misclassified" or the stage's name), `adversarial` (float32
    in [0, 1]; the clean image where no attack succeeded), `norm`, `eps`."""
    save_npz_atomic(
        path,
        dict(
            index=np.arange(result.num_examples),
            label=np.asarray(labels, np.int64),
            clean_correct=result.clean_correct,
            robust=result.robust,
            broken_at=result.broken_at,
            worst_case=worst_case(result),
            stage_names=np.array(result.stage_names),
            adversarial=result.adversarial,
            norm=np.array(norm),
            eps=np.array(eps),
        ),
    )


# ---- RobustBench entries (`--format robustbench`) ------------------------------------------------------------

# The fields of a RobustBench leaderboard entry, in the order of its `model_info/<dataset>/<threat model>/
# <Name>.json` files and of `robustbench.utils.ModelInfo` (github.com/RobustBench/robustbench).
ROBUSTBENCH_FIELDS = (
    "link",
    "name",
    "authors",
    "additional_data",
    "number_forward_passes",
    "dataset",
    "venue",
    "architecture",
    "eps",
    "clean_acc",
    "reported",
    "autoattack_acc",
    "footnote",
)
ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")
ROBUSTBENCH_NORMS = ("linf", "l2")  # its Linf and L2 leaderboards (the others are corruptions)
# Test images a RobustBench entry is evaluated on (its `benchmark(n_examples=...)` for the leaderboards).
ROBUSTBENCH_EXAMPLES = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}


def robustbench_eps(eps: float) -> str:
    """eps as RobustBench's entries write it: "8/255" for a whole number of 255ths that is not a short
    decimal, else the decimal ("0.5", "0.031")."""
    short = float(f"{eps:.6g}")
    if short == eps:
        return f"{eps:.6g}"
    k = round(eps * 255)
    return f"{k}/255" if k >= 1 and abs(eps * 255 - k) <= 1e-4 else repr(float(eps))


def robustbench_architecture(name: str | None) -> str:
    """tfrobust's model name in RobustBench's words ("wrn-28-10" -> "WideResNet-28-10", "preact-resnet-18" ->
    "PreActResNet-18"); "" for anything else."""
    match = re.fullmatch(r"wrn-(\d+)-(\d+)", name or "")
    if match:
        return f"WideResNet-{match.group(1)}-{match.group(2)}"
    return "PreActResNet-18" if name == "preact-resnet-18" else ""


def robustbench_entry(report: dict, metadata: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """(the RobustBench entry of `report`, what the report records about it: the fields left empty and why).

    Filled from the report as RobustBench's `update_json` fills its own (`robustbench/utils.py`: accuracies
    in percent, rounded to 2 places, as strings): `clean_acc`, `autoattack_acc` (only for AutoAttack's
    standard version, `--attack aa`: the leaderboard's column), `eps` ("8/255"), `dataset` (RobustBench's
    names only). From a tfrobust export's `metadata`: `architecture` (its model) and
    `number_forward_passes` (1: tfrobust's models classify with one deterministic forward pass). Every
    other field (paper link, name, authors, venue, whether the training used additional real data, the
    reported number, a footnote) is an empty string to fill in by hand.
    """
    metadata = metadata or {}
    training = metadata.get("training_config") or {}
    dataset_name = (metadata.get("dataset") or {}).get("name") or report["dataset"]
    entry = {field: "" for field in ROBUSTBENCH_FIELDS}
    entry["dataset"] = dataset_name if dataset_name in ROBUSTBENCH_DATASETS else ""
    entry["eps"] = robustbench_eps(float(report["eps"]))
    entry["clean_acc"] = str(round(100 * report["clean_accuracy"], 2))
    if report["attack"] == "aa":
        entry["autoattack_acc"] = str(round(100 * report["robust_accuracy"], 2))
    entry["architecture"] = robustbench_architecture(training.get("model") or metadata.get("arch"))
    if "tfrobust_version" in metadata:
        entry["number_forward_passes"] = 1
    notes = []
    if report["attack"] != "aa":
        notes.append(
            f"autoattack_acc is AutoAttack's standard version (--attack aa); this evaluation ran {report['attack']!r}"
        )
    if report["norm"] not in ROBUSTBENCH_NORMS:
        notes.append(f"RobustBench has no {report['norm']} leaderboard (Linf and L2 only)")
    if not entry["dataset"]:
        notes.append(f"dataset {dataset_name!r} is not a RobustBench dataset ({', '.join(ROBUSTBENCH_DATASETS)})")
    expected = ROBUSTBENCH_EXAMPLES.get(entry["dataset"])
    if expected and (report["num_examples"] != expected or report["split"] != "test"):
        notes.append(
            f"RobustBench evaluates the first {expected} test images; this evaluation used "
            f"{report['num_examples']} of split {report['split']!r}"
        )
    empty = [field for field in ROBUSTBENCH_FIELDS if entry[field] == ""]
    return entry, {"empty_fields": empty, "notes": notes}


def write_robustbench_entry(path: str, entry: dict) -> None:
    """Writes `entry` as RobustBench's files are written: indented JSON, fields in `ROBUSTBENCH_FIELDS`
    order; atomically, never over an existing file (`FileExistsError`)."""
    write_json_atomic(path, entry, indent=2, sort_keys=False, trailing_newline=True, exclusive=True)


def robustbench_path(report_path: str) -> str:
    """Where `--format robustbench` writes the entry: next to the report, `<report>.robustbench.json`."""
    return report_path.removesuffix(".json") + ".robustbench.json"
