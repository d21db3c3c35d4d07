"""`tfrobust eval`: load an exported model and its data, run a cascade, write the report; resume one.

`run_eval` is a client of the Python API (`api.py`): it checks the settings (`api.check_options`), loads
the model (`tfrobust.export.load_model`) and the split, takes the threat model from the options or the
model's metadata (`tfrobust.threat_model.resolve_threat_model`), checks the data against the model
(`api.check_data`), and runs the cascade and writes the report (`api.evaluate_arrays`, as
`tfrobust.evaluation.evaluate` does; with `report_format="robustbench"` also the RobustBench entry) with its
progress saved batch by batch (`state.EvalState`).
`resume_eval` continues an interrupted evaluation with its saved settings, after checking that the model is
the same (`model_fingerprint`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator

from tfrobust.errors import Interrupted, UserError
from tfrobust.evaluation.api import (
    check_data,
    check_options,
    evaluate_arrays,
    warn_if_slow,
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
    eot_iter: int | None = None  # model calls per APGD gradient (EOT); None: each stage's own (aa-rand: 20)
    report_format: str = "json"  # "robustbench": also <report>.robustbench.json, a RobustBench entry
    trust_model: bool = (
        False  # run the model without `tfrobust.inspection` (`export.load_model`); the report records it
    )
    jit_compile: str = "auto"  # the attacks under XLA: auto (with a GPU or TPU) | on | off; the report records it


def model_fingerprint(path: str) -> str:
    """A digest of the files that define a model (graph, variable index with its per-tensor checksums,
    or the .keras file): a resumed evaluation must attack the same model."""
    files = (
        [path]
        if os.path.isfile(path)
        else [os.path.join(path, name) for name in ("saved_model.pb", os.path.join("variables", "variables.index"))]
    )
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
    if not isinstance(state.settings.get("model_path"), str):
        raise UserError(f"{state.directory}: its settings name no model (model_path): not an evaluation's state")
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


def _flag(name: str) -> str:
    """The command line's name of a setting (`batch_size` -> `--batch-size`), for `api.check_options`."""
    return "--" + name.replace("_", "-")


def _run_eval(settings: EvalSettings, *, state: EvalState | None) -> dict:
    from tfrobust.data.datasets import default_split, load_split
    from tfrobust.export import load_model, resolve_model_dir

    check_options(
        attack=settings.attack,
        batch_size=settings.batch_size,
        n_examples=settings.n_examples,
        report=settings.report,
        save_examples=settings.save_examples,
        eot_iter=settings.eot_iter,
        report_format=settings.report_format,
        jit_compile=settings.jit_compile,
        flag=_flag,
    )
    if settings.val_size is not None and settings.val_size < 0:
        raise UserError(f"--val-size must be >= 0, got {settings.val_size}")
    if state is not None:
        # Before the model loads: a resumed evaluation runs no model but the one it started with.
        resolved = (
            settings.model_path if settings.model_path.endswith(".keras") else resolve_model_dir(settings.model_path)
        )
        if state.settings.get("model_sha256") != model_fingerprint(resolved):
            raise UserError(
                f"the model at {resolved} changed since the interrupted evaluation: delete {state.directory}"
            )
    model = load_model(settings.model_path, trust_model=settings.trust_model)
    warn_if_slow()
    dataset, norm, eps, training = resolve_threat_model(model.metadata, settings.dataset, settings.norm, settings.eps)
    split_name = settings.split or default_split(dataset)
    info, split = load_split(
        dataset,
        split_name,
        val_size=settings.val_size if settings.val_size is not None else training.get("val_size", 1024),
        seed=training.get("seed", 0),
        data_dir=settings.data_dir or training.get("data_dir"),
    )
    n = len(split) if settings.n_examples is None else min(settings.n_examples, len(split))
    images, labels, num_classes = check_data(
        model.logits,
        split.images[:n],
        split.labels[:n],
        num_classes=info.num_classes,
        input_shape=model.metadata.get("input_shape"),
        name=f"{dataset} images",
    )
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
        print(
            f"progress is saved in {state.directory}; if interrupted, continue with: tfrobust eval --resume {path}",
            flush=True,
        )
    stopped = (
        f"evaluation stopped on request (SIGTERM): its progress is saved in {state.directory}; "
        f"continue with: tfrobust eval --resume {path}"
    )
    with _sigterm_raises(stopped):
        evaluation = evaluate_arrays(
            model.logits,
            images,
            labels,
            num_classes=num_classes,
            attack=settings.attack,
            norm=norm,
            eps=eps,
            batch_size=settings.batch_size,
            seed=settings.seed,
            model_name=model.path,
            dataset=info.name,
            split=split_name,
            report_path=path,
            save_examples=settings.save_examples,
            state=state,
            verbose=True,
            eot_iter=settings.eot_iter,
            report_format=settings.report_format,
            metadata=model.metadata,
            trust_model=settings.trust_model,
            jit_compile=settings.jit_compile,
        )
    state.remove()
    return {"report": evaluation.report, "table": evaluation.table, "report_path": path}


@contextlib.contextmanager
def _sigterm_raises(message: str) -> Iterator[None]:
    """While the block runs, SIGTERM (a scheduler's stop) raises `Interrupted(message)` instead of ending the
    process. Every attacked batch is already in the evaluation state (written atomically), so at most the
    batch in progress is lost; the CLI prints `message` and exits with status 143. Only the main thread
    can take signals: elsewhere the block runs with the process's own handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Interrupted(message)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
