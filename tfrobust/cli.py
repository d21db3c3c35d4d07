"""The `tfrobust` command line: train, export, eval, import.

    tfrobust train --preset quickstart-digits --out runs/digits
    tfrobust train --dataset cifar10 --model wrn-28-10 --batch-size 512 --epochs 400 --out runs/c10
    tfrobust train --resume runs/c10
    tfrobust export runs/c10 --which best
    tfrobust eval --model saved_models/cifar10-wrn-28-10-trades --n-examples 1000
    tfrobust import --checkpoint cifar10_linf_wrn28-10_cutmix_ddpm_v2.pt --arch wrn-28-10 --dataset cifar10 \
        --out saved_models/rebuffi2021-wrn-28-10/1

Options are parsed once into a frozen `TrainConfig`/evaluation settings; each command calls one function.
Bad input (`UserError`) prints one line and exits with status 1; TensorFlow is imported only when a
command runs, so `--help` is instant.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
from typing import Any

import click

from tfrobust.errors import UserError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the output


class _Group(click.Group):
    """Turns a `UserError` anywhere below into click's one-line "Error: ..." and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group)
@click.version_option(package_name="tfrobust")
def cli() -> None:
    """Adversarially robust image classifiers in TensorFlow/Keras (Rebuffi, Gowal et al. 2021)."""


def _train_options(function):
    """The TrainConfig fields as options; None means 'not given' (preset or default applies)."""
    from tfrobust import config as cfg

    options = [
        click.option("--preset", type=click.Choice(list(cfg.PRESETS)), default=None, help="A recipe of the paper (see README)."),
        click.option("--dataset", default=None, help="cifar10 | cifar100 | svhn | digits | npz:PATH [cifar10]"),
        click.option("--data-dir", default=None, help="tensorflow-datasets data directory."),
        click.option("--aug", default=None, help="Augmentations joined by '+': padcrop, autoaugment, randaugment, cutout, cutmix, mixup, ricap, or none [padcrop]."),
        click.option("--aug-repeats", type=int, default=None, help="Each batch: batch/N distinct images, each augmented N ways [1]."),
        click.option("--val-size", type=int, default=None, help="Held-out training images for model selection [1024]."),
        click.option("--model", default=None, help="wrn-28-10 (default), wrn-34-10, wrn-34-20, wrn-70-16, wrn-106-16, wrn-16-4, wrn-10-1, preact-resnet-18, ..."),
        click.option("--activation", default=None, help="swish (default) | relu"),
        click.option("--loss", default=None, help="trades (default) | pgd-at | standard"),
        click.option("--beta", type=float, default=None, help="TRADES beta [6]."),
        click.option("--norm", default=None, help="linf (default) | l2"),
        click.option("--eps", type=float, default=None, help="Perturbation radius in [0,1] pixel units [8/255 linf, 128/255 l2]."),
        click.option("--attack-steps", type=int, default=None, help="Inner maximisation steps [10]."),
        click.option("--inner-optimizer", default=None, help="adam (linf default: lr 0.1 then 0.01) | sign (linf: step eps/4; l2: normalised gradient, the l2 default)"),
        click.option("--batch-size", type=int, default=None, help="Global batch size [512]."),
        click.option("--epochs", type=int, default=None, help="Epochs [400]."),
        click.option("--learning-rate", type=float, default=None, help="Peak learning rate [max(0.1*batch/256, 0.1)]."),
        click.option("--warmup-epochs", type=int, default=None, help="Linear warm-up epochs [10]."),
        click.option("--schedule", default=None, help="piecewise (default: x0.1 at 2/3) | cosine"),
        click.option("--weight-decay", type=float, default=None, help="Coupled L2 weight decay on kernels [5e-4]."),
        click.option("--ema-decay", type=float, default=None, help="Weight-averaging decay tau [0.999]."),
        click.option("--eval-every", type=int, default=None, help="Validate (clean + PGD-40) every N epochs; 0: never [10]."),
        click.option("--strategy", default=None, help="auto | one-device | mirrored | multi-worker"),
        click.option("--precision", default=None, help="float32 (default) | mixed_bfloat16"),
        click.option("--jit-compile/--no-jit-compile", default=None, help="XLA-compile the train step [off]."),
        click.option("--seed", type=int, default=None, help="Seed of data order, augmentation and attacks [0]."),
        click.option("--export-dir", default=None, help="Export root [saved_models]."),
        click.option("--name", default=None, help="Export name [<dataset>-<model>-<loss>]."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@cli.command()
@_train_options
@click.option("--out", default=None, help="Run directory [runs/<name>-<time>]; must be new or empty.")
@click.option("--resume", "resume_dir", default=None, help="Continue the run in this directory from its last checkpoint.")
def train(out: str | None, resume_dir: str | None, preset: str | None, **options: Any) -> None:
    """Adversarial training (TRADES by default) with weight averaging; exports the selected model."""
    from tfrobust.config import make_config
    from tfrobust.training.run import train as run_train

    given = {k: v for k, v in options.items() if v is not None}
    if resume_dir is not None:
        if given or preset or out:
            raise UserError("--resume rebuilds the run from RUN_DIR/config.json: give no other training options")
        summary = run_train(None, resume_dir, resume=True)
    else:
        config = make_config(preset, options)
        if out is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = os.path.join("runs", f"{config.export_name}-{stamp}")
        click.echo(f"run directory: {out}")
        summary = run_train(config, out)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))
    if summary.get("export"):
        click.echo(f"exported: {summary['export']}")


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
@click.option("--model", "model_path", required=True, help="SavedModel dir, TF Serving base dir, or .keras file.")
@click.option("--attack", default="pgd40", help="Attack cascade: aa (AutoAttack: APGD-CE, APGD-T, FAB-T, Square) | aa+mt (the paper's: APGD-CE 5x100, APGD-DLR 5x100, MultiTargeted 10x200) | mt | apgd-ce | apgd-t | apgd-dlr | fab-t | square | pgd40 [pgd40].")
@click.option("--dataset", default=None, help="Dataset [the model's]; npz:PATH for your own arrays.")
@click.option("--data-dir", default=None, help="tensorflow-datasets data directory.")
@click.option("--split", default="test", help="test (default) | val | train")
@click.option("--norm", default=None, help="linf | l2 [the model's]")
@click.option("--eps", type=float, default=None, help="Radius [the model's].")
@click.option("--n-examples", type=int, default=None, help="First N examples of the split [all].")
@click.option("--batch-size", type=int, default=256, help="Evaluation batch size [256].")
@click.option("--seed", type=int, default=0, help="Seed of the attacks' random starts [0].")
@click.option("--report", default=None, help="JSON report path [eval_reports/<model>-<attack>-<split>-<time>.json].")
@click.option("--val-size", type=int, default=None, help="Validation images held out of train (split val/train) [the run's, else 1024].")
def evaluate(model_path: str, attack: str, dataset: str | None, data_dir: str | None, split: str, norm: str | None,
             eps: float | None, n_examples: int | None, batch_size: int, seed: int, report: str | None,
             val_size: int | None) -> None:
    """Clean and robust accuracy of an exported model; prints a table, writes a JSON report."""
    from tfrobust.evaluation import EvalSettings, run_eval

    settings = EvalSettings(model_path=model_path, attack=attack, dataset=dataset, data_dir=data_dir, split=split,
                            norm=norm, eps=eps, n_examples=n_examples, batch_size=batch_size, seed=seed, report=report,
                            val_size=val_size)
    result = run_eval(settings)
    click.echo(result["table"])
    click.echo(f"report: {result['report_path']}")


@cli.command(name="import")
@click.option("--checkpoint", required=True, help="PyTorch state dict (.pt) of the reference model_zoo, e.g. a published checkpoint.")
@click.option("--arch", required=True, help="wrn-28-10 | wrn-34-20 | wrn-70-16 | wrn-106-16 | preact-resnet-18 | wrn-16-2 | ... (tfrobust's model names)")
@click.option("--dataset", type=click.Choice(["cifar10", "cifar100"]), required=True, help="What the checkpoint was trained on (classes, normalisation).")
@click.option("--activation", type=click.Choice(["swish", "relu"]), default="swish", help="The model's activation [swish, as the published models].")
@click.option("--out", required=True, help="saved_models/NAME/VERSION (TF Serving layout; saved_models/NAME: the next version).")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", help="Threat model written to the metadata (eval's default) [linf].")
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
@click.option("--seed", type=int, default=0, help="Seed [0].")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def augment_preview(aug: str, dataset: str, data_dir: str | None, out: str, num_images: int, draws: int, seed: int,
                    overwrite: bool) -> None:
    """A PNG grid of original and augmented images with their (soft) labels."""
    from tfrobust.augment.preview import preview_grid

    path = preview_grid(aug=aug, dataset=dataset, out=out, num_images=num_images, draws=draws, seed=seed,
                        data_dir=data_dir, overwrite=overwrite)
    click.echo(f"wrote {path}")


def main() -> None:
    cli(prog_name="tfrobust")


if __name__ == "__main__":
    sys.exit(main())
