"""Run configurations as frozen dataclasses, the paper's presets, and their JSON form.

A run's `config.json` is the fully resolved `TrainConfig` (every default filled in), so a run directory
says exactly what produced it and `--resume` rebuilds the same run from it.

Each `TrainConfig` field carries its command-line help in `dataclasses.field(metadata=...)`
(`option_help`): `tfrobust train` and `tfrobust benchmark` build their options from the fields, so every
default and help text is written once, here.

Presets (`tfrobust train --preset NAME`) give the paper's recipes; options given on the command line
override them. Each preset states its command, expected result and compute, as big_vision's configs do.

This is the lowest layer: it imports nothing of tfrobust but `errors`, and no TensorFlow. The names it
validates (models, losses, schedules, augmentations) are plain tuples here; the registries that build
them check at import time, or tests/test_config.py checks, that their names are these.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from tfrobust.errors import UserError
from tfrobust.threat_model import DEFAULT_EPS, TRAIN_NORMS, check_eps

INNER_OPTIMIZERS = ("adam", "sign")
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_COMPILE = ("auto", "on", "off")  # auto: XLA on GPUs and TPUs, off on CPUs (docs/xla.md)
ACTIVATIONS = ("swish", "relu")
# The registries' names (each asserted equal to its registry, see the module docstring):
MIX_DRAWS = ("batch", "example")  # tfrobust.augment.batch_augmentation.MIX_DRAWS
MODEL_NAMES = (  # tfrobust.models.registry.MODELS, in its order
    "wrn-10-1",
    "wrn-10-2",
    "wrn-16-2",
    "wrn-16-4",
    "wrn-28-10",
    "wrn-34-10",
    "wrn-34-20",
    "wrn-70-16",
    "wrn-106-16",
    "preact-resnet-18",
)
LOSSES = ("trades", "pgd-at", "standard")  # tfrobust.training.trainer.LOSSES
SCHEDULES = ("cosine", "piecewise")  # tfrobust.training.schedules imports these
# Augmentations (tfrobust.augment.registry.AUGMENTATIONS) in the order a chain applies them
# (tfrobust/augment/registry.py says why), the ones that mix labels, and the name of no augmentation.
AUG_ORDER: tuple[str, ...] = ("padcrop", "autoaugment", "randaugment", "cutout", "cutmix", "mixup", "ricap")
AUG_MIXING: frozenset[str] = frozenset({"cutmix", "mixup", "ricap"})
AUG_NONE = "none"


def _valid_aug_names() -> str:
    return ", ".join((*AUG_ORDER, AUG_NONE))


def canonical_aug(names: Sequence[str]) -> list[str]:
    """Checks `names` (known, no repeats, at most one mixing operation) and sorts them into `AUG_ORDER`."""
    names = list(names)
    unknown = [name for name in names if name not in AUG_ORDER]
    if unknown:
        raise UserError(
            f"unknown augmentation {unknown[0]!r}; valid names: {_valid_aug_names()} (join several with '+')"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"augmentation {repeated[0]!r} is given twice in --aug")
    mixing = [name for name in AUG_ORDER if name in names and name in AUG_MIXING]
    if len(mixing) > 1:
        raise UserError(
            f"--aug combines {' and '.join(mixing)}: use at most one mixing augmentation "
            f"({', '.join(sorted(AUG_MIXING))}), each already mixes the labels of the pixels it produces"
        )
    return [name for name in AUG_ORDER if name in names]


def parse_aug(text: str) -> list[str]:
    """`"padcrop+cutmix"` -> `["padcrop", "cutmix"]` in canonical order; `"none"` -> `[]`.

    Names are case-insensitive and may have spaces around them. Unknown names, repeats, empty parts and
    two mixing operations are `UserError`s that list what is valid.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"--aug is empty; give names joined with '+' from: {_valid_aug_names()}")
    parts = [part.strip().lower() for part in text.split("+")]
    if any(not part for part in parts):
        raise UserError(f"--aug {text!r} has an empty name; join names from {_valid_aug_names()} with '+'")
    if parts == [AUG_NONE]:
        return []
    if AUG_NONE in parts:
        raise UserError(f"--aug {text!r}: 'none' cannot be combined with other augmentations")
    return canonical_aug(parts)


def format_aug(names: Sequence[str]) -> str:
    """The inverse of `parse_aug`: canonical names joined with '+', or 'none'."""
    names = canonical_aug(names)
    return "+".join(names) if names else AUG_NONE


def peak_learning_rate(batch_size: int, base: float = 0.1) -> float:
    """max(base * batch / 256, base): linear scaling above 256, never below `base` (docs/method.md,
    "Optimizer and schedule"); the default `learning_rate` of a run."""
    return max(base * batch_size / 256.0, base)


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A `TrainConfig` field with its command-line option: `help` may hold "{default}" (the field's
    default, `show_default`) and "{choices}" (`choices` joined with " | ", the default marked)."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults: the paper's CIFAR-10 recipe without added data.

    Field order is the order of the options in `tfrobust train --help`.
    """

    # Data
    dataset: str = _option("cifar10", "cifar10 | cifar100 | svhn | digits | npz:PATH [{default}]")
    data_dir: str | None = _option(None, "tensorflow-datasets data directory.")
    # Augmentation chain, the CLI's "padcrop+cutmix" (applied in AUG_ORDER)
    aug: str = _option("padcrop", f"Augmentations joined by '+': {', '.join(AUG_ORDER)}, or {AUG_NONE} [{{default}}].")
    # Augmentation repeats: every image of a batch (with generated data: every original image) fills
    # aug_repeats consecutive rows, augmented aug_repeats ways; the reference's 4 "emulated workers"
    # (DeepMind adversarial_robustness/jax/experiment.py `emulated_workers`, datasets.py `_repeat_batch`)
    aug_repeats: int = _option(
        4,
        "Every image of a batch (with --extra-data: every original image) in N consecutive rows, augmented N "
        "ways; generated images are never repeated [{default}, the reference's emulated workers].",
    )
    # CutMix/MixUp/RICAP draws: "batch" = one lambda, box and partner permutation per device batch,
    # shared by its aug_repeats sub-batches (the reference's utils.py `cutmix`); "example" = per example
    mix_draws: str = _option(
        "batch",
        "CutMix/MixUp/RICAP draws: batch (one lambda, box and partner permutation per device batch, shared "
        "by its --aug-repeats sub-batches, as the reference and the paper's numbers) | example (per example) "
        "[{default}].",
    )
    # Generated data (paper Sec. 5, App. A; docs/generated_data.md): npz files/directories mixed into
    # every batch, `real_ratio` of each batch original, label smoothing on generated samples only
    extra_data: tuple[str, ...] = _option(
        (),
        "Generated data mixed into every batch: an npz file (image uint8, label int) or a directory of shards; "
        "repeat the option for several [{default}].",
    )
    real_ratio: float = _option(
        0.3, "With --extra-data: fraction of original images in every batch, exact per batch [{default}]."
    )
    extra_label_smoothing: float = _option(
        0.1, "With --extra-data: label smoothing of generated samples only [{default}]."
    )
    # Held-out training images for model selection; None: tfrobust.data.datasets.default_val_size, written
    # out in the run's config.json once resolved
    val_size: int | None = _option(
        None, "Held-out training images for model selection [1024, at most a fifth of the training images]."
    )
    # Model
    model: str = _option(
        "wrn-28-10",
        "{default} (default), wrn-34-10, wrn-34-20, wrn-70-16, wrn-106-16, wrn-16-4, wrn-10-1, preact-resnet-18, ...",
    )
    activation: str = _option("swish", "{choices}", ACTIVATIONS)
    # Objective and inner maximisation (docs/method.md, "TRADES step", "Inner maximisation")
    loss: str = _option("trades", "{choices}", LOSSES)
    beta: float = _option(6.0, "TRADES beta [{default}].")
    norm: str = _option("linf", "{choices}", TRAIN_NORMS)
    eps: float | None = _option(None, "Perturbation radius in [0,1] pixel units [8/255 linf, 128/255 l2].")
    attack_steps: int = _option(10, "Inner maximisation steps [{default}].")
    inner_optimizer: str | None = _option(
        None,
        "adam (linf default: lr 0.1 then 0.01) | sign (linf: step eps/4; l2: normalised gradient, the l2 default)",
        INNER_OPTIMIZERS,
    )
    # Optimisation (docs/method.md, "Optimizer and schedule", "Epoch length")
    batch_size: int = _option(512, "Global batch size [{default}].")
    epochs: int = _option(400, "Epochs [{default}].")
    learning_rate: float | None = _option(None, "Peak learning rate [max(0.1*batch/256, 0.1)].")  # peak_learning_rate
    warmup_epochs: int = _option(10, "Linear warm-up epochs [{default}].")
    schedule: str = _option("piecewise", "{default} (default: x0.1 at 2/3) | cosine", SCHEDULES)
    weight_decay: float = _option(5e-4, "Coupled L2 weight decay on kernels [{default}].")
    # The trace decay of the reference's SGD (utils.py `sgd_momentum`: optax `trace(momentum, nesterov=True)`)
    momentum: float = _option(0.9, "Nesterov momentum of SGD [{default}].")
    # Weight averaging and model selection
    ema_decay: float = _option(0.999, "Weight-averaging decay tau [{default}].")
    eval_every: int = _option(10, "Validate (clean + PGD-40) every N epochs; 0: never [{default}].")
    # Runtime
    strategy: str = _option("auto", "{choices}", STRATEGIES)
    # BatchNorm statistics under several replicas: False = per replica, as the reference (pmap without
    # cross-device moments); True = synchronised over the global batch (same numbers as one device)
    sync_batch_norm: bool = _option(
        False,
        "With several replicas: BatchNorm statistics over the global batch instead of per replica "
        "[{default}: per replica, as the reference].",
    )
    precision: str = _option(
        "float32",
        "{choices}: the layers' compute dtype; weights, BatchNorm statistics, logits, losses and the exported "
        "model stay float32. bfloat16 on TPUs and NVIDIA A100 or newer; float16 (with dynamic loss scaling) "
        'on GPUs without bfloat16, e.g. V100, T4 (docs/xla.md, "Precision")',
        PRECISIONS,
    )
    jit_compile: str = _option(
        "auto",
        "XLA-compile the train step: {default} (default: on GPUs and TPUs, off on CPUs, where XLA skips "
        "oneDNN's convolutions) | on | off",
        JIT_COMPILE,
    )
    seed: int = _option(0, "Seed of data order, augmentation and attacks [{default}].")
    # Export (TF Serving layout saved_models/<name>/<version>)
    export_dir: str = _option("saved_models", "Export root [{default}].")
    name: str | None = _option(None, "Export name [<dataset>-<model>-<loss>].")  # None: export_name

    @property
    def resolved_eps(self) -> float:
        return DEFAULT_EPS[self.norm] if self.eps is None else float(self.eps)

    @property
    def export_name(self) -> str:
        """`name`, else "<dataset>-<model>-<loss>"; an npz:PATH dataset is named by its file's stem
        (npz:/data/cifar_train.npz -> cifar_train-wrn-10-1-trades)."""
        raw = self.name or f"{dataset_label(self.dataset)}-{self.model}-{self.loss}"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)

    def resolved(self) -> TrainConfig:
        """The same config with every derived default written out (eps, learning rate)."""
        return dataclasses.replace(
            self,
            eps=self.resolved_eps,
            inner_optimizer=self.inner_optimizer or ("adam" if self.norm == "linf" else "sign"),
            aug=format_aug(parse_aug(self.aug)),
            learning_rate=self.learning_rate if self.learning_rate is not None else peak_learning_rate(self.batch_size),
        )

    def validate(self) -> TrainConfig:
        """Raises `UserError` (one line) for values no run can use; returns self."""
        parse_aug(self.aug)
        _choice("model", self.model, MODEL_NAMES)
        _choice("loss", self.loss, LOSSES)
        _choice("norm", self.norm, TRAIN_NORMS)
        if self.inner_optimizer is not None:
            _choice("inner optimizer", self.inner_optimizer, INNER_OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("jit-compile", self.jit_compile, JIT_COMPILE)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("mix draws", self.mix_draws, MIX_DRAWS)
        if not isinstance(self.sync_batch_norm, bool):
            raise UserError(f"sync_batch_norm must be true or false, got {self.sync_batch_norm!r}")
        check_eps(self.norm, self.resolved_eps)
        for field, value, low in (
            ("batch-size", self.batch_size, 1),
            ("epochs", self.epochs, 1),
            ("attack-steps", self.attack_steps, 1),
            ("eval-every", self.eval_every, 0),
            ("warmup-epochs", self.warmup_epochs, 0),
            ("val-size", 0 if self.val_size is None else self.val_size, 0),
            ("aug-repeats", self.aug_repeats, 1),
        ):
            if value < low:
                raise UserError(f"--{field} must be >= {low}, got {value}")
        if self.batch_size % self.aug_repeats:
            raise UserError(f"--aug-repeats {self.aug_repeats} must divide --batch-size {self.batch_size}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not (0 <= self.beta < math.inf and 0 <= self.weight_decay < math.inf):  # NaN fails both comparisons
            raise UserError("--beta and --weight-decay must be finite and >= 0")
        if self.learning_rate is not None and not 0 < self.learning_rate < math.inf:
            raise UserError(f"--learning-rate must be finite and > 0, got {self.learning_rate}")
        if not 0 <= self.seed < 2**32:  # keras.utils.set_random_seed seeds numpy's legacy generator: 32 bits
            raise UserError(f"--seed must be in 0..{2**32 - 1}, got {self.seed}")
        if not 0.0 <= self.momentum <= 1.0:  # tfrobust.training.optimizers.TraceSGD's range
            raise UserError(f"--momentum must be in [0, 1], got {self.momentum}")
        if not isinstance(self.extra_data, tuple) or not all(isinstance(p, str) and p for p in self.extra_data):
            raise UserError(f"--extra-data must be paths, got {self.extra_data!r}")
        if not 0.0 < self.real_ratio <= 1.0:
            raise UserError(
                f"--real-ratio must be in (0, 1] (fraction of original images per batch), got {self.real_ratio}"
            )
        if not 0.0 <= self.extra_label_smoothing < 1.0:
            raise UserError(f"--extra-label-smoothing must be in [0, 1), got {self.extra_label_smoothing}")
        return self

    def warmup_warning(self) -> str | None:
        """One line when the linear warm-up lasts the whole run: lr(t) = peak * t / warmup below step
        `warmup` (tfrobust/training/schedules.py), so the learning rate never reaches its peak."""
        if 0 < self.epochs <= self.warmup_epochs:
            shorter = max(self.epochs // 10, 1) if self.epochs > 1 else 0
            return (
                f"warning: --warmup-epochs {self.warmup_epochs} >= --epochs {self.epochs}: the learning rate "
                f"never reaches its peak; give a shorter warm-up, e.g. --warmup-epochs {shorter}"
            )
        return None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown config fields {unknown}; known: {sorted(known)}")
        if isinstance(values.get("extra_data"), (list, str)):
            # JSON has no tuples (config.json stores a list); a lone string is one path.
            extra = values["extra_data"]
            values = {**values, "extra_data": (extra,) if isinstance(extra, str) else tuple(extra)}
        if isinstance(values.get("jit_compile"), bool):
            # A boolean jit_compile (true/false in a config.json) means on/off.
            values = {**values, "jit_compile": "on" if values["jit_compile"] else "off"}
        return cls(**values)

    @classmethod
    def from_run_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """`from_dict` for a run directory's config.json: fields the file lacks take the values that
        runs written without them used (`RUN_FILE_DEFAULTS`), so `--resume` continues them unchanged."""
        return cls.from_dict({**RUN_FILE_DEFAULTS, **values})


# What a config.json without these fields ran with: per-example mixing draws and synchronised BatchNorm.
RUN_FILE_DEFAULTS: dict[str, Any] = {"mix_draws": "example", "sync_batch_norm": True}


def dataset_label(dataset: str) -> str:
    """A short name of a dataset for run, export and report names: npz:PATH -> the file's stem."""
    if dataset.startswith("npz:"):
        stem = os.path.splitext(os.path.basename(os.path.normpath(dataset[len("npz:") :])))[0]
        return stem or "npz"
    return dataset


def _choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose from: {', '.join(choices)}")


def show_default(value: Any) -> str:
    """A default as the help texts write it: 0.999, 6, 5e-4 (below 1e-3: the short exponent form), off, none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if 0.0 < abs(value) < 1e-3:
            mantissa, exponent = f"{value:e}".split("e")
            return f"{float(mantissa):g}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, tuple) and not value:
        return "none"
    return str(value)


def option_help(field: dataclasses.Field) -> str:
    """The command-line help of a `TrainConfig` field: its "help" metadata with "{default}" and
    "{choices}" filled in (see `_option`)."""
    choices = field.metadata.get("choices", ())
    listed = " | ".join(f"{name} (default)" if name == field.default else name for name in choices)
    return field.metadata["help"].format(default=show_default(field.default), choices=listed)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named recipe: config overrides plus what the paper (or our own run) says it reaches."""

    overrides: dict[str, Any]
    description: str
    expected: str
    compute: str
    needs_extra_data: bool = False  # a generated-data recipe: `tfrobust train` refuses it without --extra-data


# The reference's batch composition and per-device draws (DeepMind adversarial_robustness/jax
# experiment.py: `emulated_workers=4` in every setting, utils.py `cutmix(..., split=4)`, BatchNorm state
# per device): what every paper preset shares, written out so presets do not depend on the defaults.
_REFERENCE_BATCH = dict(aug_repeats=4, mix_draws="batch", sync_batch_norm=False)

# The paper's CIFAR-10 recipe without added data (docs/method.md, "Recipes"): what the CIFAR presets below
# share.
# 512 rows per batch = 128 distinct images x 4 augmentations.
_CIFAR10 = dict(
    dataset="cifar10",
    batch_size=512,
    epochs=400,
    schedule="piecewise",
    ema_decay=0.999,
    norm="linf",
    eps=8.0 / 255.0,
    **_REFERENCE_BATCH,
)

# The paper's recipe with generated data (Sec. 6.1, App. A; docs/method.md, "Recipes", "Weight averaging",
# "Generated data and pseudo-labels"): batch 1024, 30% original images per batch, 800 CIFAR-10-equivalent
# epochs (of 50K samples), cosine schedule, WA tau 0.995, label smoothing 0.1 on generated samples.
# The data comes from --extra-data (the published 1M-image files, or your own generated set).
# 1024 rows per batch on one device = 77 original images x 4 augmentations + 716 distinct generated
# images (tfrobust.data.mixing: the reference's composition).
_GENERATED = dict(
    batch_size=1024,
    epochs=800,
    schedule="cosine",
    ema_decay=0.995,
    real_ratio=0.3,
    extra_label_smoothing=0.1,
    norm="linf",
    eps=8.0 / 255.0,
    **_REFERENCE_BATCH,
)
_GENERATED_RECIPE = "1M generated images, batch 1024, ratio 0.3, 800 CIFAR-equivalent epochs, cosine, WA tau 0.995"
_DDPM_FILE = (
    "The paper's data: %s_ddpm.npz (1M DDPM images, 100K per class, pseudo-labelled; "
    "https://storage.googleapis.com/dm-adversarial-robustness/) - pass it with --extra-data."
)
_COMPUTE_28 = "283 GFLOP per image-step x 1024 x 39.1K steps (800 x 50,000 / 1024): 1.1e19 FLOP, 2x the Pad&Crop recipe"
_COMPUTE_70 = "7.4x WRN-28-10 per image-step: 8.1e19 FLOP"

PRESETS: dict[str, Preset] = {
    "quickstart-digits": Preset(
        overrides=dict(
            dataset="digits",
            model="wrn-10-2",
            val_size=256,
            batch_size=64,
            epochs=25,
            warmup_epochs=2,
            schedule="cosine",
            eps=0.2,
            ema_decay=0.99,
            eval_every=5,
            aug_repeats=1,  # 64 distinct images per batch, as measured below (not a paper recipe)
        ),
        description="TRADES on scikit-learn's embedded 8x8 digits (no network): the README's quick start.",
        expected="measured: 98.89% clean / 68.89% PGD-40 (eps 0.2) on the digits test split; --loss standard: 99.17% / 0.00%",
        compute="119 s of training on 2 CPU cores (Intel Xeon, AVX-512)",
    ),
    "cifar10-wrn-28-10-padcrop": Preset(
        overrides=dict(_CIFAR10, model="wrn-28-10"),
        description="Paper Table 2 baseline: WRN-28-10, TRADES, Pad&Crop, no added data, Linf 8/255.",
        expected="paper: 84.32% clean / 54.44% AA+MT on the CIFAR-10 test set",
        compute="forward 10.49 GFLOP/image, TRADES-10 = 27 forwards: 283 GFLOP x 20M image-steps = 5.7e18 FLOP",
    ),
    "cifar10-wrn-70-16-padcrop": Preset(
        overrides=dict(_CIFAR10, model="wrn-70-16"),
        description="WRN-70-16, TRADES, Pad&Crop, no added data, Linf 8/255 (paper's larger model).",
        expected="paper (Gowal et al. 2020 setting, RobustBench): 85.29% clean / 57.20% AA",
        compute="forward 77.5 GFLOP/image (7.4x WRN-28-10): 4.2e19 FLOP",
    ),
    "cifar10-wrn-28-10-cutmix": Preset(
        overrides=dict(_CIFAR10, model="wrn-28-10", aug="padcrop+cutmix"),
        description="Paper Table 2 / Fig. 9(c): WRN-28-10, TRADES, CutMix (area ~ U(0,1)) with WA tau 0.999.",
        expected="paper: 86.09% clean / 57.50% AA+MT on the CIFAR-10 test set",
        compute="as cifar10-wrn-28-10-padcrop",
    ),
    "cifar10-wrn-70-16-cutmix": Preset(
        overrides=dict(_CIFAR10, model="wrn-70-16", aug="padcrop+cutmix"),
        description="Paper Table 2: WRN-70-16, TRADES, CutMix, WA tau 0.999, no added data.",
        expected="paper: 87.25% clean / 60.07% AA+MT",
        compute="as cifar10-wrn-70-16-padcrop",
    ),
    "cifar10-wrn-28-10-cutout": Preset(
        overrides=dict(_CIFAR10, model="wrn-28-10", aug="padcrop+cutout"),
        description="Paper Fig. 6 / 9(b): WRN-28-10, TRADES, Cutout (window 18 px, the best), WA tau 0.999.",
        expected="paper: above Pad&Crop's 54.44% AA+MT (Fig. 6 plots it; no table value)",
        compute="as cifar10-wrn-28-10-padcrop",
    ),
    "cifar10-wrn-28-10-mixup": Preset(
        overrides=dict(_CIFAR10, model="wrn-28-10", aug="padcrop+mixup"),
        description="Paper Fig. 6 / 9(a): WRN-28-10, TRADES, MixUp (alpha 1.0 here; the paper favours small alpha), WA 0.999.",
        expected="paper: +0.91 points robust over Pad&Crop's 54.44% AA+MT (Sec. 6.2)",
        compute="as cifar10-wrn-28-10-padcrop",
    ),
    "cifar10-wrn-28-10-padcrop-l2": Preset(
        overrides=dict(_CIFAR10, model="wrn-28-10", norm="l2", eps=128.0 / 255.0),
        description="WRN-28-10, TRADES, Pad&Crop, no added data, L2 eps 128/255.",
        expected="paper reports L2 numbers only with added data (WRN-70-16 DDPM+CutMix 92.41 / 80.38)",
        compute="as cifar10-wrn-28-10-padcrop",
    ),
    **{
        name: Preset(
            overrides=dict(_GENERATED, **overrides),
            description=description,
            expected=expected,
            compute=compute,
            needs_extra_data=True,
        )
        for name, overrides, description, expected, compute in (
            (
                "cifar10-wrn-28-10-ddpm",
                dict(dataset="cifar10", model="wrn-28-10"),
                f"Paper Table 3: WRN-28-10, TRADES, Pad&Crop, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
                "paper: 85.97% clean / 60.73% AA+MT (Linf 8/255, CIFAR-10 test set)",
                _COMPUTE_28,
            ),
            (
                "cifar10-wrn-28-10-ddpm-cutmix",
                dict(dataset="cifar10", model="wrn-28-10", aug="padcrop+cutmix"),
                f"Paper Table 3: WRN-28-10, TRADES, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
                "paper: 87.33% clean / 60.73% AA+MT (60.75% AutoAttack, Table 6)",
                _COMPUTE_28,
            ),
            (
                "cifar10-wrn-70-16-ddpm",
                dict(dataset="cifar10", model="wrn-70-16"),
                f"Paper Table 3: WRN-70-16, TRADES, Pad&Crop, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
                "paper: 86.94% clean / 63.58% AA+MT",
                _COMPUTE_70,
            ),
            (
                "cifar10-wrn-70-16-ddpm-cutmix",
                dict(dataset="cifar10", model="wrn-70-16", aug="padcrop+cutmix"),
                f"Paper Table 3: WRN-70-16, TRADES, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
                "paper: 88.54% clean / 64.20% AA+MT (64.25% AutoAttack, Table 6); CutMix alone 60.07%",
                _COMPUTE_70,
            ),
            (
                "cifar10-wrn-28-10-ddpm-cutmix-l2",
                dict(dataset="cifar10", model="wrn-28-10", aug="padcrop+cutmix", norm="l2", eps=128.0 / 255.0),
                f"Paper Table 3: WRN-28-10, L2 eps 128/255, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
                "paper: 91.79% clean / 78.69% AA+MT (L2 128/255)",
                _COMPUTE_28,
            ),
            (
                "cifar10-wrn-70-16-ddpm-cutmix-l2",
                dict(dataset="cifar10", model="wrn-70-16", aug="padcrop+cutmix", norm="l2", eps=128.0 / 255.0),
                f"Paper Table 3: WRN-70-16, L2 eps 128/255, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
                "paper: 92.41% clean / 80.38% AA+MT (L2 128/255)",
                _COMPUTE_70,
            ),
            (
                "cifar100-wrn-28-10-ddpm-cutmix",
                dict(dataset="cifar100", model="wrn-28-10", aug="padcrop+cutmix"),
                f"Paper Table 4 (App. B): CIFAR-100, WRN-28-10, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar100'}",
                "paper: 62.41% clean / 32.85% AA+MT / 32.06% AA",
                _COMPUTE_28,
            ),
            (
                "cifar100-wrn-70-16-ddpm-cutmix",
                dict(dataset="cifar100", model="wrn-70-16", aug="padcrop+cutmix"),
                f"Paper Table 4 (App. B): CIFAR-100, WRN-70-16, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar100'}",
                "paper: 63.56% clean / 35.28% AA+MT / 34.64% AA",
                _COMPUTE_70,
            ),
            (
                "svhn-wrn-28-10-ddpm-cutmix",
                dict(dataset="svhn", model="wrn-28-10", aug="padcrop+cutmix"),
                f"Paper Table 5 (App. B): SVHN, WRN-28-10, Pad&Crop (no flips) + CutMix, {_GENERATED_RECIPE} "
                f"(the paper gives no SVHN-specific schedule; these are its CIFAR settings). {_DDPM_FILE % 'svhn'}",
                "paper: 94.39% clean / 61.09% AA+MT (Linf 8/255, SVHN test set)",
                _COMPUTE_28,
            ),
        )
    },
}


def make_config(preset: str | None, options: dict[str, Any]) -> TrainConfig:
    """Defaults <- preset overrides <- options the user gave (None means 'not given')."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
        values.update(PRESETS[preset].overrides)
    values.update({k: v for k, v in options.items() if v is not None})
    return TrainConfig.from_dict(values).validate()


def new_run_config(preset: str | None, options: dict[str, Any]) -> TrainConfig:
    """`make_config` for a new run of `tfrobust train`: a generated-data preset (`Preset.needs_extra_data`)
    also needs `extra_data` among the options."""
    if preset in PRESETS and PRESETS[preset].needs_extra_data and not options.get("extra_data"):
        raise UserError(
            f"preset {preset} is a generated-data recipe: give the data with --extra-data PATH "
            "(the paper's npz file, or the output of tfrobust generate/pseudolabel)"
        )
    return make_config(preset, options)


def check_resume_alone(options: dict[str, Any]) -> None:
    """`tfrobust train --resume RUN_DIR` rebuilds the run from RUN_DIR/config.json: every other option
    (the fields, --preset, --out) must be left out (None)."""
    if any(value is not None for value in options.values()):
        raise UserError("--resume rebuilds the run from RUN_DIR/config.json: give no other training options")


def default_run_dir(config: TrainConfig, now: datetime.datetime | None = None) -> str:
    """runs/<export name>-<YYYYmmdd-HHMMSS>: the run directory of `tfrobust train` without --out."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{config.export_name}-{stamp}")
