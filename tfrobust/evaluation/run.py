"""`tfrobust eval`: load an exported model and its data, run a cascade, write the report; resume one.

`run_eval` checks the settings, loads the model (`tfrobust.export.load_model`) and the split, takes the
threat model from the options or the model's metadata (`tfrobust.threat_model.resolve_threat_model`), runs
the cascade (`engine.Evaluator`) with its progress saved batch by batch (`state.EvalState`), and writes
the report (`report.py`). `resume_eval` continues an interrupted evaluation with its saved settings, after
checking that the model is the same (`model_fingerprint`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import warnings

from tfrobust.errors import UserError
from tfrobust.evaluation.cascades import CASCADES
from tfrobust.evaluation.checks import onednn_warning
from tfrobust.evaluation.engine import Evaluator
from tfrobust.evaluation.report import (
    format_table,
    make_report,
    save_examples,
    write_report,
)
from tfrobust.evaluation.state import EvalState, state_dir_for
from tfrobust.numerics import full_float32
from tfrobust.threat_model import resolve_threat_model


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What `tfrobust eval` was asked; None fields default to the model's metadata."""

    model_path: str
    attack: str = "pgd40"
    dataset: str | None = None
    data_dir: str | None = None
    split: str | None = None  # None: "test", or "all" (every image) for an npz:PATH dataset (default_split)
    norm: str | None = None
    eps: float | None = None
    n_examples: int | None = None
    batch_size: int = 256
    seed: int = 0
    report: str | None = None
    val_size: int | None = None  # None: the training run's (metadata), else 1024
    save_examples: str | None = None  # npz of per-example flags and adversarial examples


def model_fingerprint(path: str) -> str:
    """A digest of the files that define a model (graph, variable index with its per-tensor checksums,
    or the .keras file): a resumed evaluation must attack the same model."""
    files = [path] if os.path.isfile(path) else [
        os.path.join(path, name) for name in ("saved_model.pb", os.path.join("variables", "variables.index"))]
    digest = hashlib.sha256()
    for name in files:
        if os.path.isfile(name):
            with open(name, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def resume_eval(report_path: str) -> dict:
    """Continues the interrupted evaluation that was writing `report_path`, with its saved settings."""
    state = EvalState.open(state_dir_for(report_path))
    known = {f.name for f in dataclasses.fields(EvalSettings)}
    settings = EvalSettings(**{k: v for k, v in state.settings.items() if k in known})
    return run_eval(settings, state=state)


def run_eval(settings: EvalSettings, *, state: EvalState | None = None) -> dict:
    """Loads the model and data, runs the cascade, writes the JSON report; returns report, table, path.

    Progress is saved batch by batch in `<report>.state/` (see `tfrobust.evaluation.state`); `state` is
    that of an interrupted run to continue (`resume_eval`). With `settings.save_examples`, an npz of
    per-example results and adversarial examples is written too. TensorFloat-32 is off from before the
    model loads until the report is written (`numerics.full_float32`).
    """
    with full_float32():
        return _run_eval(settings, state=state)


def _run_eval(settings: EvalSettings, *, state: EvalState | None) -> dict:
    from tfrobust.data.datasets import default_split, load_split
    from tfrobust.data.pipeline import eval_dataset
    from tfrobust.export import load_model

    if settings.attack not in CASCADES:
        raise UserError(f"unknown attack {settings.attack!r}; choose from: {', '.join(CASCADES)}")
    if settings.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {settings.batch_size}")
    if settings.n_examples is not None and settings.n_examples < 1:
        raise UserError(f"--n-examples must be >= 1, got {settings.n_examples}")
    if settings.report and os.path.exists(settings.report):
        raise UserError(f"report {settings.report} exists; tfrobust does not overwrite reports")
    if settings.save_examples and os.path.exists(settings.save_examples):
        raise UserError(f"{settings.save_examples} exists; tfrobust does not overwrite it")
    if settings.save_examples and not settings.save_examples.endswith(".npz"):
        raise UserError(f"--save-examples {settings.save_examples}: give a path ending in .npz")
    model = load_model(settings.model_path)
    slow = onednn_warning()
    if slow:
        warnings.warn(slow, UserWarning, stacklevel=3)
    dataset, norm, eps, training = resolve_threat_model(model.metadata, settings.dataset, settings.norm, settings.eps)
    split_name = settings.split or default_split(dataset)
    info, split = load_split(
        dataset, split_name,
        val_size=settings.val_size if settings.val_size is not None else training.get("val_size", 1024), seed=training.get("seed", 0),
        data_dir=settings.data_dir or training.get("data_dir"),
    )
    expected_shape = model.metadata.get("input_shape")
    if expected_shape and list(info.image_shape) != list(expected_shape):
        raise UserError(f"{dataset} images are {list(info.image_shape)} but the model takes {expected_shape}")
    n = len(split) if settings.n_examples is None else min(settings.n_examples, len(split))
    data = eval_dataset(split, num_classes=info.num_classes, batch_size=settings.batch_size, limit=n)
    evaluator = Evaluator(CASCADES[settings.attack], norm=norm, eps=eps)
    path = settings.report
    if path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        parent, leaf = os.path.split(os.path.abspath(model.path))
        # TF Serving layout <name>/<version> -> "name-v3"; any other model -> its file or directory name.
        name = f"{os.path.basename(parent)}-v{leaf}" if leaf.isdigit() else os.path.splitext(leaf)[0]
        path = os.path.join("eval_reports", f"{name}-{settings.attack}-{norm}-{split_name}-{stamp}.json")
    fingerprint = model_fingerprint(model.path)
    if state is None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        recorded = dataclasses.replace(settings, report=path)
        state = EvalState.create(state_dir_for(path), {**dataclasses.asdict(recorded), "model_sha256": fingerprint})
        print(f"progress is saved in {state.directory}; if interrupted, continue with: tfrobust eval --resume {path}",
              flush=True)
    elif state.settings.get("model_sha256") != fingerprint:
        raise UserError(f"the model at {model.path} changed since the interrupted evaluation: delete {state.directory}")
    result = evaluator.run(model.logits, data, seed=settings.seed, progress=True,
                           keep_adversarial=settings.save_examples is not None, state=state)
    report = make_report(result, model=model.path, dataset=info.name, split=split_name, attack=settings.attack,
                         norm=norm, eps=eps, seed=settings.seed)
    if settings.save_examples:
        report["examples"] = settings.save_examples
        save_examples(settings.save_examples, result, labels=split.labels[:n], norm=norm, eps=eps)
    write_report(path, report)
    state.remove()
    return {"report": report, "table": format_table(report), "report_path": path}
