"""Augmentation registry: a plain dict from the CLI's `--aug` names to layer classes, and the chain builder.

`--aug padcrop+cutmix` is parsed once by `parse_aug` into canonical names; `build_augmentation` turns
them into one `Compose` layer that applies them in the canonical order `ORDER`, whatever order they were
written in:

    padcrop -> autoaugment -> randaugment -> cutout -> cutmix | mixup | ricap

Geometric jitter first (as every reference pipeline: pad-and-crop and flip, then the policy, Cubuk et
al. 2019), then occlusion (Cutout after the policy, as Cubuk et al. apply it on CIFAR), then at most one
mixing operation last, so that the mixed labels describe the final pixels and no later stage moves a
pasted box or mixes an already-mixed image again. Two mixing operations together are refused.

`MIXING` names the operations that produce soft labels: with them, docs/method.md, "CutMix with TRADES",
says the attack maximises the divergence from the mixed labels instead of from the clean softmax (the
trainer's business; see `produces_soft_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tfrobust.augment.autoaugment import AutoAugment
from tfrobust.augment.batch_augmentation import BatchAugmentation, MixingAugmentation
from tfrobust.augment.compose import Compose
from tfrobust.augment.cutmix import CutMix
from tfrobust.augment.cutout import Cutout
from tfrobust.augment.mixup import MixUp
from tfrobust.augment.pad_crop import PadCrop
from tfrobust.augment.randaugment import RandAugment
from tfrobust.augment.ricap import Ricap
from tfrobust.config import AUG_MIXING as MIXING
from tfrobust.config import AUG_NONE as NONE  # noqa: F401 (public name)
from tfrobust.config import AUG_ORDER as ORDER
from tfrobust.config import canonical_aug as canonical
from tfrobust.config import format_aug, parse_aug  # noqa: F401 (public names)
from tfrobust.errors import UserError

# The augmentations, listed in the order in which a chain applies them (see the module docstring for why).
AUGMENTATIONS: dict[str, type[BatchAugmentation]] = {
    "padcrop": PadCrop,
    "autoaugment": AutoAugment,
    "randaugment": RandAugment,
    "cutout": Cutout,
    "cutmix": CutMix,
    "mixup": MixUp,
    "ricap": Ricap,
}
# ORDER (the order a chain applies them in, see the module docstring for why), MIXING (the ones whose
# output labels are soft), NONE (`--aug none`) and the parsing of `--aug` live in tfrobust.config, which
# validates a run's names without importing this module.
assert ORDER == tuple(AUGMENTATIONS), "AUGMENTATIONS lists config.AUG_ORDER's names in its order"
assert MIXING == frozenset(name for name, cls in AUGMENTATIONS.items() if issubclass(cls, MixingAugmentation)), (
    "config.AUG_MIXING names exactly the MixingAugmentation layers"
)


def produces_soft_labels(names: Sequence[str]) -> bool:
    """True when the chain mixes labels (CutMix/MixUp/RICAP): the attack should then target the labels."""
    return any(name in MIXING for name in names)


def mixing_options(
    names: Sequence[str], *, draws: str = "batch", devices: int = 1, sub_batches: int = 1
) -> dict[str, dict[str, Any]]:
    """`build_augmentation` options that set how the chain's mixing operation draws (`MixingAugmentation`):
    `draws` ("batch", the reference's, or "example"), the number of device batches and of sub-batches
    (the augmentation repeats) per device batch. Empty when the chain has no mixing operation."""
    return {
        name: {"draws": draws, "devices": int(devices), "sub_batches": int(sub_batches)}
        for name in canonical(names)
        if name in MIXING
    }


def default_options(name: str, *, image_shape: Sequence[int], allow_flip: bool) -> dict[str, Any]:
    """Constructor arguments of augmentation `name` for images of `image_shape` (H, W, C).

    Sizes given in pixels on CIFAR's 32x32 images keep their fraction of the image side elsewhere:
    Pad & Crop's 4-pixel padding (as run.py did before) and Cutout's 18-pixel window (the paper's best,
    App. B, Fig. 9(b)). AutoAugment uses the SVHN policy for datasets without flips (the digit datasets:
    SVHN, scikit-learn digits) and the CIFAR-10 policy otherwise.
    """
    height = int(image_shape[0])
    if name == "padcrop":
        return {"padding": max(1, round(4 * height / 32)), "flip": bool(allow_flip)}
    if name == "cutout":
        return {"window": max(1, round(18 * height / 32))}
    if name == "autoaugment":
        return {"policy": "cifar10" if allow_flip else "svhn"}
    return {}


def build_augmentation(
    names: Sequence[str],
    *,
    image_shape: Sequence[int],
    allow_flip: bool,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Compose:
    """One `Compose` layer applying `names` (e.g. `parse_aug("padcrop+cutmix")`) in the order `ORDER`.

    `image_shape` (H, W, C) sizes the pixel parameters (`default_options`); `allow_flip` is the
    dataset's `DatasetInfo.allow_flip`. `options` overrides constructor arguments per name, e.g.
    `{"mixup": {"alpha": 0.2}}`. Call the result as `aug(batch, training=True, seed=seed)` with an int
    [2] seed; `parse_aug`/`canonical` errors are `UserError`s.

    Every layer is built with dtype float32: run.py sets the global Keras policy (e.g. mixed_bfloat16)
    before building the pipeline, and Keras would otherwise cast the batch to bfloat16 on entry, losing
    the exactness of label weights and pixel values (augmentation runs in tf.data on the CPU anyway).
    """
    if len(image_shape) != 3 or any(int(d) < 1 for d in image_shape):
        raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {tuple(image_shape)}")
    ordered = canonical(names)
    options = dict(options or {})
    stray = [name for name in options if name not in ordered]
    if stray:
        raise UserError(f"options given for {stray[0]!r}, which is not among the augmentations {ordered}")
    layers = []
    for name in ordered:
        kwargs = {**default_options(name, image_shape=image_shape, allow_flip=allow_flip), **options.get(name, {})}
        try:
            layers.append(AUGMENTATIONS[name](name=name, dtype="float32", **kwargs))
        except (TypeError, ValueError) as error:
            raise UserError(f"bad options for augmentation {name!r}: {error}") from None
    return Compose(layers, name="augmentation", dtype="float32")
