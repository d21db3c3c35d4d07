"""Run configurations as frozen dataclasses, the paper's presets, and their JSON form.

A run's `config.json` is the fully resolved `TrainConfig` (every default filled in), so a run directory
says exactly what produced it and `--resume` rebuilds the same run from it.

Presets (`tfrobust train --preset NAME`) give the paper's recipes; options given on the command line
override them. Each preset states its command, expected result and compute, as big_vision's configs do.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tfrobust.errors import UserError
from tfrobust.threat_model import DEFAULT_EPS, NORMS

INNER_OPTIMIZERS = ("adam", "sign")
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
PRECISIONS = ("float32", "mixed_bfloat16")
JIT_COMPILE = ("auto", "on", "off")  # auto: XLA on GPUs and TPUs, off on CPUs (docs/xla.md)
MIX_DRAWS = ("batch", "example")  # tfrobust.augment.batch_augmentation.MIX_DRAWS (config imports no TensorFlow)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults: the paper's CIFAR-10 recipe without added data."""

    # Data
    dataset: str = "cifar10"
    data_dir: str | None = None
    # Held-out training images for model selection; None: 1024, at most a fifth of the training images
    # (tfrobust.data.datasets.default_val_size), written out in the run's config.json once resolved
    val_size: int | None = None
    # Augmentation chain, the CLI's "padcrop+cutmix" (applied in tfrobust.augment.registry.ORDER)
    aug: str = "padcrop"
    # Augmentation repeats: every image of a batch (with generated data: every original image) fills
    # aug_repeats consecutive rows, augmented aug_repeats ways; the reference's 4 "emulated workers"
    # (DeepMind adversarial_robustness/jax/experiment.py `emulated_workers`, datasets.py `_repeat_batch`)
    aug_repeats: int = 4
    # CutMix/MixUp/RICAP draws: "batch" = one lambda, box and partner permutation per device batch,
    # shared by its aug_repeats sub-batches (the reference's utils.py `cutmix`); "example" = per example
    mix_draws: str = "batch"
    # Generated data (paper Sec. 5, App. A; docs/generated_data.md): npz files/directories mixed into
    # every batch, `real_ratio` of each batch original, label smoothing on generated samples only
    extra_data: tuple[str, ...] = ()
    real_ratio: float = 0.3
    extra_label_smoothing: float = 0.1
    # Model
    model: str = "wrn-28-10"
    activation: str = "swish"
    # Objective and inner maximisation (docs/method.md, "TRADES step", "Inner maximisation")
    loss: str = "trades"
    beta: float = 6.0
    norm: str = "linf"
    eps: float | None = None  # None: 8/255 for linf, 128/255 for l2
    attack_steps: int = 10
    inner_optimizer: str | None = None  # None: adam for linf, normalised gradient ("sign") for l2
    # Optimisation (docs/method.md, "Optimizer and schedule", "Epoch length")
    batch_size: int = 512
    epochs: int = 400
    learning_rate: float | None = None  # None: max(0.1 * batch / 256, 0.1)
    warmup_epochs: int = 10
    schedule: str = "piecewise"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    # Weight averaging and model selection
    ema_decay: float = 0.999
    eval_every: int = 10
    # Runtime
    strategy: str = "auto"
    # BatchNorm statistics under several replicas: False = per replica, as the reference (pmap without
    # cross-device moments); True = synchronised over the global batch (same numbers as one device)
    sync_batch_norm: bool = False
    precision: str = "float32"
    jit_compile: str = "auto"
    seed: int = 0
    # Export (TF Serving layout saved_models/<name>/<version>)
    export_dir: str = "saved_models"
    name: str | None = None  # None: "<dataset>-<model>-<loss>" with characters TF Serving accepts

    @property
    def resolved_eps(self) -> float:
        return DEFAULT_EPS[self.norm] if self.eps is None else float(self.eps)

    @property
    def export_name(self) -> str:
        """`name`, else "<dataset>-<model>-<loss>"; an npz:PATH dataset is named by its file's stem
        (npz:/data/cifar_train.npz -> cifar_train-wrn-10-1-trades)."""
        raw = self.name or f"{dataset_label(self.dataset)}-{self.model}-{self.loss}"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)

    def resolved(self) -> "TrainConfig":
        """The same config with every derived default written out (eps, learning rate)."""
        from tfrobust.augment.registry import format_aug, parse_aug
        from tfrobust.training.schedules import peak_learning_rate

        return dataclasses.replace(
            self,
            eps=self.resolved_eps,
            inner_optimizer=self.inner_optimizer or ("adam" if self.norm == "linf" else "sign"),
            aug=format_aug(parse_aug(self.aug)),
            learning_rate=self.learning_rate if self.learning_rate is not None else peak_learning_rate(self.batch_size),
        )

    def validate(self) -> "TrainConfig":
        """Raises `UserError` (one line) for values no run can use; returns self."""
        from tfrobust.augment.registry import parse_aug
        from tfrobust.models.registry import MODELS
        from tfrobust.training.schedules import SCHEDULES
        from tfrobust.training.trainer import LOSSES

        parse_aug(self.aug)
        _choice("model", self.model, tuple(MODELS))
        _choice("loss", self.loss, LOSSES)
        _choice("norm", self.norm, NORMS)
        if self.inner_optimizer is not None:
            _choice("inner optimizer", self.inner_optimizer, INNER_OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("jit-compile", self.jit_compile, JIT_COMPILE)
        _choice("activation", self.activation, ("swish", "relu"))
        _choice("mix draws", self.mix_draws, MIX_DRAWS)
        if not isinstance(self.sync_batch_norm, bool):
            raise UserError(f"sync_batch_norm must be true or false, got {self.sync_batch_norm!r}")
        eps = self.resolved_eps
        limit = 1.0 if self.norm == "linf" else 64.0
        if not 0.0 < eps <= limit:
            raise UserError(
                f"--eps {eps:g} is out of range for {self.norm}: images are in [0, 1], use 0 < eps <= {limit:g}"
                + (" (did you mean a value like 8/255 = 0.0314?)" if self.norm == "linf" and eps > 1 else "")
            )
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
        if self.beta < 0 or self.weight_decay < 0:
            raise UserError("--beta and --weight-decay must be >= 0")
        if not isinstance(self.extra_data, tuple) or not all(isinstance(p, str) and p for p in self.extra_data):
            raise UserError(f"--extra-data must be paths, got {self.extra_data!r}")
        if not 0.0 < self.real_ratio <= 1.0:
            raise UserError(f"--real-ratio must be in (0, 1] (fraction of original images per batch), got {self.real_ratio}")
        if not 0.0 <= self.extra_label_smoothing < 1.0:
            raise UserError(f"--extra-label-smoothing must be in [0, 1), got {self.extra_label_smoothing}")
        return self

    def warmup_warning(self) -> str | None:
        """One line when the linear warm-up lasts the whole run: lr(t) = peak * t / warmup below step
        `warmup` (tfrobust/training/schedules.py), so the learning rate never reaches its peak."""
        if 0 < self.epochs <= self.warmup_epochs:
            shorter = max(self.epochs // 10, 1) if self.epochs > 1 else 0
            return (f"warning: --warmup-epochs {self.warmup_epochs} >= --epochs {self.epochs}: the learning rate "
                    f"never reaches its peak; give a shorter warm-up, e.g. --warmup-epochs {shorter}")
        return None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
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
    def from_run_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """`from_dict` for a run directory's config.json: fields the file lacks take the values that
        runs written without them used (`RUN_FILE_DEFAULTS`), so `--resume` continues them unchanged."""
        return cls.from_dict({**RUN_FILE_DEFAULTS, **values})


# What a config.json without these fields ran with: per-example mixing draws and synchronised BatchNorm.
RUN_FILE_DEFAULTS: dict[str, Any] = {"mix_draws": "example", "sync_batch_norm": True}


def dataset_label(dataset: str) -> str:
    """A short name of a dataset for run, export and report names: npz:PATH -> the file's stem."""
    if dataset.startswith("npz:"):
        stem = os.path.splitext(os.path.basename(os.path.normpath(dataset[len("npz:"):])))[0]
        return stem or "npz"
    return dataset


def _choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose from: {', '.join(choices)}")


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
    dataset="cifar10", batch_size=512, epochs=400, schedule="piecewise", ema_decay=0.999, norm="linf",
    eps=8.0 / 255.0, **_REFERENCE_BATCH,
)

# The paper's recipe with generated data (Sec. 6.1, App. A; docs/method.md, "Recipes", "Weight averaging",
# "Generated data and pseudo-labels"): batch 1024, 30% original images per batch, 800 CIFAR-10-equivalent
# epochs (of 50K samples), cosine schedule, WA tau 0.995, label smoothing 0.1 on generated samples.
# The data comes from --extra-data (the published 1M-image files, or your own generated set).
# 1024 rows per batch on one device = 77 original images x 4 augmentations + 716 distinct generated
# images (tfrobust.data.mixing: the reference's composition).
_GENERATED = dict(
    batch_size=1024, epochs=800, schedule="cosine", ema_decay=0.995, real_ratio=0.3, extra_label_smoothing=0.1,
    norm="linf", eps=8.0 / 255.0, **_REFERENCE_BATCH,
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
            dataset="digits", model="wrn-10-2", val_size=256, batch_size=64, epochs=25, warmup_epochs=2,
            schedule="cosine", eps=0.2, ema_decay=0.99, eval_every=5,
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
    **{name: Preset(overrides=dict(_GENERATED, **overrides), description=description, expected=expected,
                    compute=compute, needs_extra_data=True)
       for name, overrides, description, expected, compute in (
        ("cifar10-wrn-28-10-ddpm", dict(dataset="cifar10", model="wrn-28-10"),
         f"Paper Table 3: WRN-28-10, TRADES, Pad&Crop, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
         "paper: 85.97% clean / 60.73% AA+MT (Linf 8/255, CIFAR-10 test set)", _COMPUTE_28),
        ("cifar10-wrn-28-10-ddpm-cutmix", dict(dataset="cifar10", model="wrn-28-10", aug="padcrop+cutmix"),
         f"Paper Table 3: WRN-28-10, TRADES, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
         "paper: 87.33% clean / 60.73% AA+MT (60.75% AutoAttack, Table 6)", _COMPUTE_28),
        ("cifar10-wrn-70-16-ddpm", dict(dataset="cifar10", model="wrn-70-16"),
         f"Paper Table 3: WRN-70-16, TRADES, Pad&Crop, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
         "paper: 86.94% clean / 63.58% AA+MT", _COMPUTE_70),
        ("cifar10-wrn-70-16-ddpm-cutmix", dict(dataset="cifar10", model="wrn-70-16", aug="padcrop+cutmix"),
         f"Paper Table 3: WRN-70-16, TRADES, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
         "paper: 88.54% clean / 64.20% AA+MT (64.25% AutoAttack, Table 6); CutMix alone 60.07%", _COMPUTE_70),
        ("cifar10-wrn-28-10-ddpm-cutmix-l2",
         dict(dataset="cifar10", model="wrn-28-10", aug="padcrop+cutmix", norm="l2", eps=128.0 / 255.0),
         f"Paper Table 3: WRN-28-10, L2 eps 128/255, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
         "paper: 91.79% clean / 78.69% AA+MT (L2 128/255)", _COMPUTE_28),
        ("cifar10-wrn-70-16-ddpm-cutmix-l2",
         dict(dataset="cifar10", model="wrn-70-16", aug="padcrop+cutmix", norm="l2", eps=128.0 / 255.0),
         f"Paper Table 3: WRN-70-16, L2 eps 128/255, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar10'}",
         "paper: 92.41% clean / 80.38% AA+MT (L2 128/255)", _COMPUTE_70),
        ("cifar100-wrn-28-10-ddpm-cutmix", dict(dataset="cifar100", model="wrn-28-10", aug="padcrop+cutmix"),
         f"Paper Table 4 (App. B): CIFAR-100, WRN-28-10, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar100'}",
         "paper: 62.41% clean / 32.85% AA+MT / 32.06% AA", _COMPUTE_28),
        ("cifar100-wrn-70-16-ddpm-cutmix", dict(dataset="cifar100", model="wrn-70-16", aug="padcrop+cutmix"),
         f"Paper Table 4 (App. B): CIFAR-100, WRN-70-16, Pad&Crop + CutMix, {_GENERATED_RECIPE}. {_DDPM_FILE % 'cifar100'}",
         "paper: 63.56% clean / 35.28% AA+MT / 34.64% AA", _COMPUTE_70),
        ("svhn-wrn-28-10-ddpm-cutmix", dict(dataset="svhn", model="wrn-28-10", aug="padcrop+cutmix"),
         f"Paper Table 5 (App. B): SVHN, WRN-28-10, Pad&Crop (no flips) + CutMix, {_GENERATED_RECIPE} "
         f"(the paper gives no SVHN-specific schedule; these are its CIFAR settings). {_DDPM_FILE % 'svhn'}",
         "paper: 94.39% clean / 61.09% AA+MT (Linf 8/255, SVHN test set)", _COMPUTE_28),
    )},
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
