"""The `tfrobust` command line: train, export, eval, import.

    tfrobust train --preset quickstart-digits --out runs/digits
    tfrobust train --dataset cifar10 --model wrn-28-10 --batch-size 512 --epochs 400 --out runs/c10
    tfrobust train --resume runs/c10
    tfrobust benchmark --preset cifar10-wrn-28-10-cutmix --precision mixed_bfloat16   # cost before a run
    tfrobust export runs/c10 --which best
    tfrobust eval --model saved_models/cifar10-wrn-28-10-trades --n-examples 1000
    tfrobust import --checkpoint cifar10_linf_wrn28-10_cutmix_ddpm_v2.pt --arch wrn-28-10 --dataset cifar10 \
        --out saved_models/rebuffi2021-wrn-28-10/1
    tfrobust generate --generator gaussian --dataset cifar10 --n 5000000 --output data/raw
    tfrobust pseudolabel --classifier saved_models/labeller --input data/raw --output data/1m --top-k-per-class 100000
    tfrobust train --preset cifar10-wrn-28-10-ddpm-cutmix --extra-data data/1m --out runs/c10-extra

Options are parsed once into a frozen `TrainConfig`/evaluation settings; each command calls one function.
Bad input (`UserError`) prints one line and exits with status 1; a run stopped by SIGTERM (`Interrupted`)
prints how to continue and exits with status 143; TensorFlow is imported only when a command runs, so
`--help` is instant.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import types
import typing
from typing import Any

import click

from tfrobust.errors import Interrupted, UserError


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ start-up log (CUDA probing, oneDNN and CPU-feature notices) out of the output.

    TF_CPP_MIN_LOG_LEVEL=3 silences TensorFlow's own log (the "failed call to cuInit" error included) once
    it has read it, but the messages its libraries write while they load go through absl before
    `absl::InitializeLog()` and ignore that variable, straight to file descriptor 2: they are captured
    during `import tensorflow` and dropped, or written out if the import fails. A TF_CPP_MIN_LOG_LEVEL the
    user set, or `tfrobust --verbose`, leaves everything as TensorFlow prints it.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


_INT64_MAX = 2**63 - 1
# A seed of numpy's generators (np.random.default_rng refuses a negative one).
_SEED = click.IntRange(min=0)


class _Command(click.Command):
    """A command that quiets TensorFlow (unless --verbose) once its options are parsed, so --help stays instant.

    An option or argument given an empty value (`--dataset ""`) is a usage error (exit status 2): no option
    takes one, and an empty value would otherwise read as "not given" and fall back to the default. So is an
    integer past what 64 bits hold: numpy's and TensorFlow's integers are 64-bit.
    """

    def invoke(self, ctx):
        for param in self.params:
            if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
                continue
            value = ctx.params.get(param.name)
            values = value if isinstance(value, tuple) else (value,)
            if "" in values:
                raise click.BadParameter("an empty value: give one, or leave the option out", ctx=ctx, param=param)
            if any(isinstance(v, int) and not -_INT64_MAX - 1 <= v <= _INT64_MAX for v in values):
                raise click.BadParameter(f"{value} is past what a 64-bit integer holds", ctx=ctx, param=param)
        if not ctx.find_root().params.get("verbose"):
            _quiet_tensorflow()
        return super().invoke(ctx)


class _Group(click.Group):
    """Turns a `UserError` anywhere below into click's one-line "Error: ..." and exit status 1, and an
    `Interrupted` command (SIGTERM) into its line and `Interrupted.exit_code`."""

    command_class = _Command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            raise click.ClickException(str(error)) from None
        except Interrupted as interrupted:
            click.echo(str(interrupted), err=True)
            ctx.exit(interrupted.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="tfrobust")
@click.option(
    "--verbose", is_flag=True, help="Show TensorFlow's C++ start-up log (CUDA probing, oneDNN, CPU features)."
)
def cli(verbose: bool) -> None:
    """Adversarially robust image classifiers in TensorFlow/Keras (Rebuffi, Gowal et al. 2021)."""


def _given_paths(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...] | None:
    """A repeatable option's paths; None when not given (click gives ())."""
    return tuple(value) or None


def _trust_model_option(function):
    """--trust-model: load the model without `tfrobust.inspection` (passed to `tfrobust.export.load_model`)."""
    return click.option(
        "--trust-model",
        is_flag=True,
        help="Run the model without inspecting it first (a SavedModel's ops, a .keras file's layers; a .keras file "
        "loads with Keras's safe_mode off). Its graph may then read or write files or run Python: only for "
        "models you trust. The report records it.",
    )(function)


def _field_option(field: dataclasses.Field, hint: Any):
    """The click option of a `TrainConfig` field: --field-name, its type from the annotation (a bool is an
    on/off pair, a tuple a repeatable option), default None ('not given': the preset or the field's
    default applies), help from `config.option_help`."""
    from tfrobust.config import option_help

    flag = "--" + field.name.replace("_", "-")
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    (kind,) = [k for k in kinds if k is not type(None)]  # str | None -> str
    help_text = option_help(field)
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None, help=help_text)
    if typing.get_origin(kind) is tuple:
        return click.option(flag, field.name, multiple=True, default=None, callback=_given_paths, help=help_text)
    return click.option(flag, field.name, type=kind, default=None, help=help_text)


def _train_options(function):
    """--preset and the TrainConfig fields as options, in field order; None means 'not given'."""
    from tfrobust.config import PRESETS, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    options = [
        click.option(
            "--preset", type=click.Choice(list(PRESETS)), default=None, help="A recipe of the paper (see README)."
        )
    ]
    options += [_field_option(field, hints[field.name]) for field in dataclasses.fields(TrainConfig)]
    for option in reversed(options):
        function = option(function)
    return function


@cli.command()
@_train_options
@click.option("--out", default=None, help="Run directory [runs/<name>-<time>]; must be new or empty.")
@click.option(
    "--resume", "resume_dir", default=None, help="Continue the run in this directory from its last checkpoint."
)
def train(out: str | None, resume_dir: str | None, preset: str | None, **options: Any) -> None:
    """Adversarial training (TRADES by default) with weight averaging; exports the selected model.

    SIGTERM writes a checkpoint at the next step boundary and exits with status 143, naming the
    `--resume` command that continues the run.
    """
    from tfrobust.config import check_resume_alone, default_run_dir, new_run_config
    from tfrobust.training.faults import stop_on_sigterm
    from tfrobust.training.run import train as run_train

    with stop_on_sigterm() as stop:
        if resume_dir is not None:
            check_resume_alone({"preset": preset, "out": out, **options})
            summary = run_train(None, resume_dir, resume=True, stop=stop)
        else:
            config = new_run_config(preset, options)
            if config.warmup_warning():
                click.echo(config.warmup_warning(), err=True)
            out = out or default_run_dir(config)
            click.echo(f"run directory: {out}")
            summary = run_train(config, out, stop=stop)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    if summary.get("export"):
        click.echo(f"exported: {summary['export']}")


@cli.command()
@_train_options
@click.option("--steps", type=int, default=5, show_default=True, help="Timed steps (after the warm-up).")
@click.option(
    "--warmup",
    type=int,
    default=2,
    show_default=True,
    help="Untimed steps first (tracing, XLA compilation, autotuning).",
)
@click.option(
    "--eval-attack",
    default=None,
    help="Also time one batch of each stage of `tfrobust eval --attack` this (e.g. aa) when no point breaks.",
)
@click.option("--eval-batch-size", type=int, default=256, show_default=True, help="The batch of --eval-attack.")
@click.option("--json", "json_path", default=None, help="Also write the result as JSON to this file (must not exist).")
def benchmark(
    preset: str | None,
    steps: int,
    warmup: int,
    eval_attack: str | None,
    eval_batch_size: int,
    json_path: str | None,
    **options: Any,
) -> None:
    """Times the training step a run would take on this hardware: images/s, MFU, memory, projected time;
    with --eval-attack, also the cost of an evaluation."""
    from tfrobust import benchmark as bench
    from tfrobust.config import make_config
    from tfrobust.fileio import write_bytes_atomic

    if options.get("extra_data"):
        click.echo("note: --extra-data is not read: generated images cost the step what original ones do", err=True)
    options["extra_data"] = None
    config = make_config(preset, options)
    if json_path is not None:
        # Checked before minutes of timing, not after.
        if os.path.exists(json_path):
            raise UserError(f"--json {json_path} exists: give a new file")
        folder = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UserError(f"--json {json_path}: {folder} is not a writable directory")
    result = bench.benchmark(
        config,
        steps=steps,
        warmup=warmup,
        eval_attack=eval_attack,
        eval_batch_size=eval_batch_size,
        progress=lambda line: click.echo(line, err=True),
    )
    click.echo(bench.table(result))
    if json_path is not None:
        write_bytes_atomic(json_path, (json.dumps(result, indent=2) + "\n").encode())
        click.echo(f"wrote {json_path}")


@cli.command()
@click.argument("run_dir")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", help="Selected or last averaged weights.")
@click.option("--export-dir", default=None, help="Export root [the run's export_dir].")
@click.option("--name", default=None, help="Export name [the run's name].")
def export(run_dir: str, which: str, export_dir: str | None, name: str | None) -> None:
    """Exports a run's averaged model as a SavedModel (TF Serving layout)."""
    from tfrobust.training import callbacks as cb
    from tfrobust.training.checkpoint import CHECKPOINT_NAME
    from tfrobust.training.run import build_run, export_selected, read_run_config

    config = read_run_config(run_dir)
    config = dataclasses.replace(
        config, export_dir=export_dir or config.export_dir, name=name or config.name, strategy="one-device"
    )
    run = build_run(config, run_dir)
    cb.restore(os.path.join(run_dir, CHECKPOINT_NAME), run.trainer, run.averaging, run.selection)
    click.echo(f"exported: {export_selected(run, run_dir, which=which)}")


@cli.command(name="eval")
@click.option("--model", "model_path", default=None, help="SavedModel dir, TF Serving base dir, or .keras file.")
@click.option(
    "--attack",
    default="pgd40",
    help="Attack cascade: aa (AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square) | aa-plus (AutoAttack plus) | aa-rand (AutoAttack rand, EOT: randomised models) | aa+mt (the paper's: APGD-CE 5x100, APGD-DLR 5x100, MultiTargeted 10x200) | mt | pgd40 | one attack or a comma list in order, e.g. apgd-ce,apgd-dlr,square (apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square as AutoAttack standard configures them; NAME@plus, NAME@rand as that version does) [pgd40].",
)
@click.option("--dataset", default=None, help="Dataset [the model's]; npz:PATH for your own arrays.")
@click.option("--data-dir", default=None, help="tensorflow-datasets data directory.")
@click.option(
    "--split",
    default=None,
    help="test | val | train | all (train and val) [test; npz:PATH: all, every image of the file]",
)
@click.option("--norm", default=None, help="linf | l2 [the model's]")
@click.option("--eps", type=float, default=None, help="Radius [the model's].")
@click.option("--n-examples", type=int, default=None, help="First N examples of the split [all].")
@click.option("--batch-size", type=int, default=256, help="Evaluation batch size [256].")
@click.option("--seed", type=int, default=0, help="Seed of the attacks' random starts [0].")
@click.option("--report", default=None, help="JSON report path [eval_reports/<model>-<attack>-<split>-<time>.json].")
@click.option(
    "--val-size",
    type=int,
    default=None,
    help="Validation images held out of train (split val/train) [the run's, else 1024].",
)
@click.option(
    "--save-examples",
    default=None,
    help="Also write an npz of per-example flags (clean correct, robust, stage that broke it) and adversarial examples.",
)
@click.option(
    "--eot-iter",
    type=int,
    default=None,
    help="Model calls averaged per APGD gradient step (expectation over transformation, randomised models) [aa-rand: 20; otherwise 1].",
)
@click.option(
    "--format",
    "report_format",
    type=click.Choice(["json", "robustbench"]),
    default="json",
    help="robustbench: also write <report>.robustbench.json, the fields of a RobustBench leaderboard entry [json].",
)
@click.option(
    "--jit-compile",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    help="Compile each attack with XLA at a fixed batch shape: auto (with a GPU or TPU) | on | off [auto].",
)
@click.option(
    "--resume",
    "resume_report",
    default=None,
    help="Continue the interrupted evaluation that was writing this report (its settings are reused).",
)
@_trust_model_option
@click.pass_context
def evaluate(ctx: click.Context, model_path: str | None, resume_report: str | None, **options: Any) -> None:
    """Clean and robust accuracy of an exported model; prints a table, writes a JSON report."""
    from tfrobust.evaluation import EvalSettings, resume_eval, run_eval

    if resume_report is not None:
        given = [name for name in options if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]
        if model_path is not None or given:
            raise UserError("--resume continues with the interrupted evaluation's own settings: give no other options")
        result = resume_eval(resume_report)
    else:
        if model_path is None:
            raise UserError("give --model (or --resume REPORT to continue an interrupted evaluation)")
        result = run_eval(EvalSettings(model_path=model_path, **options))
    click.echo(result["table"])
    click.echo(f"report: {result['report_path']}")
    robustbench = result["report"].get("robustbench")
    if robustbench:
        click.echo(
            f"RobustBench entry: {robustbench['entry']} (fill in by hand: {', '.join(robustbench['empty_fields'])})"
        )
        for note in robustbench["notes"]:
            click.echo(f"  note: {note}")


@cli.command(name="import")
@click.option(
    "--checkpoint",
    required=True,
    help="PyTorch state dict (.pt) of the reference model_zoo, e.g. a published checkpoint.",
)
@click.option(
    "--arch",
    required=True,
    help="wrn-28-10 | wrn-34-20 | wrn-70-16 | wrn-106-16 | preact-resnet-18 | wrn-16-2 | ... (tfrobust's model names)",
)
@click.option(
    "--dataset",
    type=click.Choice(["cifar10", "cifar100"]),
    required=True,
    help="What the checkpoint was trained on (classes, normalisation).",
)
@click.option(
    "--activation",
    type=click.Choice(["swish", "relu"]),
    default="swish",
    help="The model's activation [swish, as the published models].",
)
@click.option(
    "--out", required=True, help="saved_models/NAME/VERSION (TF Serving layout; saved_models/NAME: the next version)."
)
@click.option(
    "--norm",
    type=click.Choice(["linf", "l2"]),
    default="linf",
    help="Threat model written to the metadata (eval's default) [linf].",
)
@click.option("--eps", type=float, default=None, help="Radius written to the metadata [8/255 linf, 128/255 l2].")
def import_(checkpoint: str, arch: str, dataset: str, activation: str, out: str, norm: str, eps: float | None) -> None:
    """Imports a published PyTorch checkpoint as a SavedModel (needs the [import] extra: torch)."""
    from tfrobust.importer import import_checkpoint

    path = import_checkpoint(checkpoint, arch=arch, dataset=dataset, activation=activation, out=out, norm=norm, eps=eps)
    click.echo(f"imported: {path}")


@cli.command(name="augment-preview")
@click.option("--aug", required=True, help="Augmentation chain, e.g. padcrop+cutmix.")
@click.option("--dataset", default="digits", help="Dataset to draw images from [digits].")
@click.option("--data-dir", default=None, help="tensorflow-datasets data directory.")
@click.option("--out", required=True, help="PNG file to write.")
@click.option("--n", "num_images", type=int, default=8, help="Images per row [8].")
@click.option("--draws", type=int, default=2, help="Augmented rows (different seeds) [2].")
@click.option("--seed", type=_SEED, default=0, help="Seed [0].")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def augment_preview(
    aug: str, dataset: str, data_dir: str | None, out: str, num_images: int, draws: int, seed: int, overwrite: bool
) -> None:
    """A PNG grid of original and augmented images with their (soft) labels."""
    from tfrobust.diagnostics.augment_preview import preview_grid

    path = preview_grid(
        aug=aug,
        dataset=dataset,
        out=out,
        num_images=num_images,
        draws=draws,
        seed=seed,
        data_dir=data_dir,
        overwrite=overwrite,
    )
    click.echo(f"wrote {path}")


# --- Diagnostics: report, audit, diversity (tfrobust/diagnostics/; docs/diagnostics.md) ---------------


def _number_list(kind: type):
    """A click callback parsing "0,0.5,1" once into a tuple of `kind` (None stays None)."""

    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return tuple(kind(part) for part in value.split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__} values, got {value!r}") from None

    return parse


def _name_list(ctx, param, value):
    return None if value is None else tuple(part.strip() for part in value.split(",") if part.strip())


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--out", required=True, help="Report folder (new or empty; see --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace the report previously written in --out (only its own files).")
def report(run_dirs: tuple[str, ...], out: str, overwrite: bool) -> None:
    """Training curves (clean/PGD-40, raw vs averaged; LR and EMA decay) and final numbers of runs."""
    from tfrobust.diagnostics.report import build_report

    result = build_report(list(run_dirs), out, overwrite=overwrite)
    click.echo(result["table"])
    click.echo(f"report: {os.path.join(out, 'report.md')}")


@cli.command()
@click.option("--model", "model_path", required=True, help="SavedModel dir, TF Serving base dir, or .keras file.")
@click.option("--out", required=True, help="Report folder (new or empty; see --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace the report previously written in --out (only its own files).")
@click.option("--dataset", default=None, help="Dataset [the model's]; npz:PATH for your own arrays.")
@click.option("--data-dir", default=None, help="tensorflow-datasets data directory.")
@click.option("--split", default="test", help="test (default) | val | train")
@click.option("--norm", default=None, help="linf | l2 [the model's]")
@click.option(
    "--eps", type=float, default=None, help="The model's radius; the sweeps are multiples of it [the model's]."
)
@click.option("--n-examples", type=int, default=200, help="First N examples of the split [200].")
@click.option(
    "--checks",
    callback=_name_list,
    default="eps,steps,square,landscape",
    help="Checks to run [eps,steps,square,landscape].",
)
@click.option(
    "--eps-multiples",
    callback=_number_list(float),
    default="0,0.5,1,2,4,8",
    help="Eps sweep, in multiples of --eps [0,0.5,1,2,4,8].",
)
@click.option(
    "--steps",
    callback=_number_list(int),
    default="5,10,20,50,100,200,500,1000",
    help="APGD-CE iterations of the steps sweep [5,...,1000].",
)
@click.option("--square-queries", type=int, default=5000, help="Square's query budget [5000].")
@click.option("--landscape-images", type=int, default=2, help="Loss landscapes of the first N examples [2].")
@click.option("--grid", "grid_size", type=int, default=21, help="Landscape grid points per axis [21].")
@click.option("--batch-size", type=int, default=256, help="Attack batch size [256].")
@click.option(
    "--seed", type=_SEED, default=0, help="Seed of the attacks' random starts and the Rademacher direction [0]."
)
@_trust_model_option
def audit(
    model_path: str,
    out: str,
    overwrite: bool,
    dataset: str | None,
    data_dir: str | None,
    split: str,
    norm: str | None,
    eps: float | None,
    n_examples: int,
    checks: tuple[str, ...],
    eps_multiples: tuple[float, ...],
    steps: tuple[int, ...],
    square_queries: int,
    landscape_images: int,
    grid_size: int,
    batch_size: int,
    seed: int,
    trust_model: bool,
) -> None:
    """Gradient-masking checks of the paper's appendix C: eps and steps sweeps, Square vs APGD, loss landscapes."""
    from tfrobust.diagnostics.audit import AuditConfig, AuditSettings, run_audit

    config = AuditConfig(
        eps_multiples=eps_multiples,
        steps=steps,
        square_queries=square_queries,
        landscape_images=landscape_images,
        grid_size=grid_size,
        batch_size=batch_size,
        seed=seed,
        checks=checks,
    )
    result = run_audit(
        AuditSettings(
            model_path=model_path,
            out=out,
            config=config,
            dataset=dataset,
            data_dir=data_dir,
            split=split,
            norm=norm,
            eps=eps,
            n_examples=n_examples,
            overwrite=overwrite,
            trust_model=trust_model,
        )
    )
    click.echo(result["table"])
    click.echo(f"overall: {'no check flagged' if result['report']['passed'] else 'FLAGGED'}")
    click.echo(f"report: {os.path.join(out, 'audit.json')}")


@cli.command()
@click.option("--out", required=True, help="Report folder (new or empty; see --overwrite).")
@click.option("--overwrite", is_flag=True, help="Replace the report previously written in --out (only its own files).")
@click.option("--dataset", default=None, help="Train/test reference dataset [the classifier's or extractor's].")
@click.option("--data-dir", default=None, help="tensorflow-datasets data directory.")
@click.option(
    "--aug", default=None, help="The set: this augmentation chain applied to training images, e.g. padcrop+cutmix."
)
@click.option("--set", "set_path", default=None, help="The set: a generated npz file, npz:PATH (arrays image, label).")
@click.option(
    "--test",
    "test_path",
    default=None,
    help="Held-out images as npz:PATH, for a dataset without a test split (npz:PATH datasets).",
)
@click.option(
    "--n", type=int, default=10_000, help="Images of train, test and the set [10000, capped by the smallest]."
)
@click.option(
    "--extractor",
    default="pixels",
    help="pixels (default: raw pixels) | a classifier SavedModel/.keras (penultimate layer).",
)
@click.option("--classifier", default=None, help="A classifier for the label-agreement numbers.")
@click.option("--pca-dims", type=int, default=100, help="PCA components, fitted on train+test [100].")
@click.option("--batch-size", type=int, default=256, help="Batch size of feature extraction and augmentation [256].")
@click.option("--seed", type=_SEED, default=0, help="Seed of the samples and the augmentation [0].")
@_trust_model_option
def diversity(
    out: str,
    overwrite: bool,
    dataset: str | None,
    data_dir: str | None,
    aug: str | None,
    set_path: str | None,
    test_path: str | None,
    n: int,
    extractor: str,
    classifier: str | None,
    pca_dims: int,
    batch_size: int,
    seed: int,
    trust_model: bool,
) -> None:
    """Nearest-neighbour diversity of an augmentation or generated set (the paper's Tables 1 and 7)."""
    from tfrobust.diagnostics.diversity import DiversitySettings, run_diversity

    result = run_diversity(
        DiversitySettings(
            out=out,
            overwrite=overwrite,
            dataset=dataset,
            data_dir=data_dir,
            aug=aug,
            set_path=set_path,
            test_path=test_path,
            n=n,
            extractor=extractor,
            classifier=classifier,
            pca_dims=pca_dims,
            batch_size=batch_size,
            seed=seed,
            trust_model=trust_model,
        )
    )
    click.echo(result["table"])
    click.echo(f"report: {os.path.join(out, 'diversity.json')}")


@cli.command()
@click.option(
    "--generator", required=True, help="gaussian (the paper's class-conditional full-covariance Gaussian baseline)."
)
@click.option(
    "--dataset",
    required=True,
    help="Dataset whose training split the generator is fitted on: cifar10 | cifar100 | svhn | digits | npz:PATH.",
)
@click.option("--data-dir", default=None, help="tensorflow-datasets data directory.")
@click.option("--n", "n", type=int, required=True, help="Number of images to generate.")
@click.option(
    "--output", required=True, help="Directory of npz shards to write (new, empty, or an unfinished output to resume)."
)
@click.option("--shard-size", type=int, default=100_000, help="Images per shard [100000].")
@click.option("--seed", type=_SEED, default=0, help="Seed of sampling and of the held-out validation images [0].")
@click.option(
    "--val-size", type=int, default=1024, help="Training images held out (not fitted), as tfrobust train does [1024]."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output written by tfrobust.")
def generate(
    generator: str,
    dataset: str,
    data_dir: str | None,
    n: int,
    output: str,
    shard_size: int,
    seed: int,
    val_size: int,
    overwrite: bool,
) -> None:
    """Generates labelled images (npz shards) to train with --extra-data or to pseudo-label."""
    from tfrobust.generators.generate import generate as run_generate

    summary = run_generate(
        generator,
        dataset,
        n,
        output,
        shard_size=shard_size,
        seed=seed,
        val_size=val_size,
        data_dir=data_dir,
        overwrite=overwrite,
    )
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    click.echo(f"wrote {summary['images']} images in {summary['shards']} shards to {output}")


@cli.command()
@click.option(
    "--classifier",
    required=True,
    help="Model giving the labels: a tfrobust export (train --loss standard), a SavedModel or a .keras file.",
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    help="Images to label: npz file or directory of shards (labels not needed); repeatable.",
)
@click.option(
    "--output", required=True, help="Directory of labelled npz shards (new, empty, or an unfinished output to resume)."
)
@click.option(
    "--top-k-per-class",
    "top_k",
    type=int,
    default=None,
    help="Keep the K highest-scoring images of each predicted class [all].",
)
@click.option("--batch-size", type=int, default=512, help="Images per classifier call [512].")
@click.option("--shard-size", type=int, default=100_000, help="Images per output shard [100000].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output written by tfrobust.")
@_trust_model_option
def pseudolabel(
    classifier: str,
    inputs: tuple[str, ...],
    output: str,
    top_k: int | None,
    batch_size: int,
    shard_size: int,
    overwrite: bool,
    trust_model: bool,
) -> None:
    """Labels images with a classifier and keeps the top-K scoring images per class (the paper: 100K of 5M)."""
    from tfrobust.pseudolabel import format_summary
    from tfrobust.pseudolabel import pseudolabel as run_pseudolabel

    summary = run_pseudolabel(
        classifier,
        list(inputs),
        output,
        top_k=top_k,
        batch_size=batch_size,
        shard_size=shard_size,
        overwrite=overwrite,
        trust_model=trust_model,
    )
    click.echo(format_summary(summary))
    click.echo(f"summary: {os.path.join(output, 'summary.json')}")


@cli.command()
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    help="npz files (compressed or not) or directories of shards; repeatable.",
)
@click.option("--output", required=True, help="Directory of uncompressed npz shards to write.")
@click.option("--shard-size", type=int, default=100_000, help="Images per shard [100000].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output written by tfrobust.")
def pack(inputs: tuple[str, ...], output: str, shard_size: int, overwrite: bool) -> None:
    """Rewrites extra data as memory-mappable npz shards (compressed npz included), streaming."""
    from tfrobust.generators.writer import pack as run_pack

    summary = run_pack(list(inputs), output, shard_size=shard_size, overwrite=overwrite)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))


def main() -> None:
    cli(prog_name="tfrobust")


if __name__ == "__main__":
    sys.exit(main())
