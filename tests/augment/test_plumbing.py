"""The plumbing every augmentation layer shares: pinned outputs for a fixed batch and seed, Keras
serialization round trips, one table of image-operation names, one RNG algorithm for augment/ and data/.

The pinned fingerprints are regression values measured on this code (not an independent known answer):
they keep a rearrangement of the layers (base classes, seed handling, op tables) from changing what any
layer draws or computes. Each is (sum of the images, sum of the images times fixed random weights in
[-1, 1], sum of the labels times fixed random weights in [-1, 1]), in float64 over the float32 outputs, compared
within 1e-4: a different draw, operation, partner or pixel order moves them by orders of magnitude more
(one pixel changed by 0.01 moves the weighted sum by 0.01 times its weight), while ulp-level differences
of float kernels between CPUs (oneDNN picks its code per instruction set) stay near 1e-6.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust.augment import common, image_ops
from tfrobust.augment.autoaugment import POLICIES, AutoAugment
from tfrobust.augment.batch_augmentation import BatchAugmentation, MixingAugmentation
from tfrobust.augment.compose import Compose
from tfrobust.augment.cutmix import CutMix
from tfrobust.augment.cutout import Cutout
from tfrobust.augment.mixup import MixUp
from tfrobust.augment.pad_crop import PadCrop
from tfrobust.augment.randaugment import RandAugment
from tfrobust.augment.registry import AUGMENTATIONS, build_augmentation
from tfrobust.augment.ricap import Ricap
from tfrobust.data.pipeline import batch_seed, epoch_permutation

B, H, W, C, K = 16, 12, 12, 3, 5
SEED = tf.constant([3, 7], tf.int64)


def _batch() -> dict:
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, (B, H, W, C)).astype(np.float32)
    labels = np.eye(K, dtype=np.float32)[rng.integers(0, K, B)]
    return {"images": tf.constant(images), "labels": tf.constant(labels)}


FINGERPRINT_LAYERS = {
    "padcrop": lambda: PadCrop(padding=2),
    "cutout": lambda: Cutout(window=5),
    "cutmix": lambda: CutMix(devices=2, sub_batches=2),
    "cutmix-example": lambda: CutMix(draws="example"),
    "mixup": lambda: MixUp(alpha=0.5, devices=2, sub_batches=2),
    "mixup-example": lambda: MixUp(alpha=0.5, draws="example"),
    "ricap": lambda: Ricap(devices=2, sub_batches=2),
    "ricap-example": lambda: Ricap(draws="example"),
    "autoaugment": lambda: AutoAugment(),
    "autoaugment-svhn": lambda: AutoAugment(policy="svhn"),
    "randaugment": lambda: RandAugment(),
    "randaugment-2-9": lambda: RandAugment(num_ops=2, magnitude=9),
    "compose": lambda: build_augmentation(
        ["padcrop", "autoaugment", "cutout", "cutmix"], image_shape=(H, W, C), allow_flip=True
    ),
}


def _fingerprint(name: str) -> tuple[float, float, float]:
    out = FINGERPRINT_LAYERS[name]()(_batch(), training=True, seed=SEED)
    images = out["images"].numpy().astype(np.float64)
    labels = out["labels"].numpy().astype(np.float64)
    weights = np.random.default_rng(1)
    image_weights = weights.uniform(-1.0, 1.0, images.shape)
    label_weights = weights.uniform(-1.0, 1.0, labels.shape)
    return (
        float(images.sum()),
        float((images * image_weights).sum()),
        float((labels * label_weights).sum()),
    )


FINGERPRINTS = {
    "padcrop": (2829.635937746294, 12.008911772950416, 2.002208397672497),
    "cutout": (3438.8708341319434, 22.326641706676263, 2.002208397672497),
    "cutmix": (3432.7518733578327, 21.398259275757933, 1.8086619814157756),
    "cutmix-example": (3425.7564929150685, 36.838496826222844, 1.1705870609066205),
    "mixup": (3432.751874779875, 20.177158912902193, 1.7296807595722812),
    "mixup-example": (3442.426315222867, 27.896231466531077, 0.4339649149735049),
    "ricap": (3443.223989586666, 33.97808315131309, 0.8765609881771199),
    "ricap-example": (3476.249881078562, 32.954189810019976, 1.21615056625351),
    "autoaugment": (3562.966908392438, 35.63632258349624, 2.002208397672497),
    "autoaugment-svhn": (3436.5510607552424, 24.53834244194572, 2.002208397672497),
    "randaugment": (3203.346836106386, 11.211412316493071, 2.002208397672497),
    "randaugment-2-9": (3745.332848276419, 18.776773362099085, 2.002208397672497),
    "compose": (2868.654561229676, 40.89176958309269, 1.1664027964560235),
}


@pytest.mark.parametrize("name", list(FINGERPRINT_LAYERS))
def test_outputs_for_a_fixed_seed_are_pinned(name):
    np.testing.assert_allclose(_fingerprint(name), FINGERPRINTS[name], rtol=0.0, atol=1e-4, err_msg=name)


def test_pipeline_draws_are_pinned():
    """The shuffling order and the batch seeds of data/pipeline.py (Philox, exact integers)."""
    assert epoch_permutation(20, 5, 2).numpy().tolist() == [
        3,
        2,
        9,
        13,
        15,
        0,
        7,
        6,
        11,
        8,
        16,
        18,
        12,
        5,
        14,
        19,
        10,
        4,
        17,
        1,
    ]
    assert batch_seed(5, 2, 3).numpy().tolist() == [1980244712444345427, 3]


# Every registered augmentation with parameters other than its defaults, and a chain of them.
SERIALIZED_LAYERS = {
    "padcrop": lambda: PadCrop(padding=3, flip=False, seed=4),
    "autoaugment": lambda: AutoAugment(policy="svhn", fill=0.25, seed=4),
    "randaugment": lambda: RandAugment(num_ops=2, magnitude=7.5, fill=0.0, seed=4),
    "cutout": lambda: Cutout(window=4, fill=[0.1, 0.2, 0.3], seed=4),
    "cutmix": lambda: CutMix(alpha=0.5, devices=2, sub_batches=2, seed=4),
    "mixup": lambda: MixUp(alpha=0.3, draws="example", seed=4),
    "ricap": lambda: Ricap(beta=0.5, devices=4, seed=4),
    "compose": lambda: Compose([PadCrop(padding=1), RandAugment(num_ops=1), CutMix(draws="example")], seed=4),
}


def test_serialized_layers_cover_the_registry():
    assert set(SERIALIZED_LAYERS) == set(AUGMENTATIONS) | {"compose"}
    for name, cls in AUGMENTATIONS.items():
        assert type(SERIALIZED_LAYERS[name]()) is cls


@pytest.mark.parametrize("name", list(SERIALIZED_LAYERS))
def test_keras_layers_serialize_round_trip(name):
    """`keras.layers.deserialize(keras.layers.serialize(layer))`: the same class, config and output."""
    layer = SERIALIZED_LAYERS[name]()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
    batch = _batch()
    expected = layer(batch, training=True, seed=SEED)
    out = restored(batch, training=True, seed=SEED)
    for key in ("images", "labels"):
        np.testing.assert_array_equal(out[key].numpy(), expected[key].numpy(), err_msg=f"{name} {key}")
    # Without a call seed both draw from generators built from the same constructor seed.
    np.testing.assert_array_equal(
        layer(batch, training=True)["images"].numpy(), restored(batch, training=True)["images"].numpy()
    )


# Cubuk et al. 2020, Sec. 3, in the paper's order: "identity, autoContrast, equalize, rotate, solarize,
# color, posterize, contrast, brightness, sharpness, shear-x, shear-y, translate-x, translate-y".
PAPER_RANDAUGMENT_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Rotate",
    "Solarize",
    "Color",
    "Posterize",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
)
# Cubuk et al. 2019, App. A, Table 6: the geometric operations (the rest transform pixel values).
PAPER_GEOMETRIC_OPS = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


def test_every_policy_names_operations_of_the_one_table():
    for policy, table in POLICIES.items():
        for sub_policy in table:
            for name, _, _ in sub_policy:
                assert name in image_ops.OPS, f"{policy} policy names {name!r}, not in image_ops.OPS"


def test_operation_lists_are_derived_from_the_table():
    assert image_ops.OP_NAMES == tuple(image_ops.OPS)
    assert image_ops.RANDAUGMENT_OPS == PAPER_RANDAUGMENT_OPS
    from tfrobust.augment import randaugment

    assert randaugment.RANDAUGMENT_OPS is image_ops.RANDAUGMENT_OPS
    assert set(image_ops.GEOMETRIC) == PAPER_GEOMETRIC_OPS
    assert set(image_ops.PIXEL_OPS) == set(image_ops.OP_NAMES) - PAPER_GEOMETRIC_OPS
    assert [image_ops.OP_INDEX[name] for name in image_ops.OP_NAMES] == list(range(len(image_ops.OP_NAMES)))
    with pytest.raises(ValueError, match="either a pixel operation or a geometric one"):
        image_ops.ImageOp()
    with pytest.raises(ValueError, match="either a pixel operation or a geometric one"):
        image_ops.ImageOp(pixel=image_ops.identity, matrix=image_ops.shear_x_matrix)


def _reference_matrix(name: str, level: float, sign: float, height: int, width: int) -> np.ndarray:
    """The projective row [a0, a1, a2, b0, b1, b2, 0, 0] of one geometric operation, in NumPy, from the
    magnitude table of image_ops.py's docstring (Cubuk et al. 2019, App. A; PIL's affine convention)."""
    if name == "ShearX":
        row = [1, sign * 0.3 * level / 10, 0, 0, 1, 0]
    elif name == "ShearY":
        row = [1, 0, 0, sign * 0.3 * level / 10, 1, 0]
    elif name == "TranslateX":
        row = [1, 0, sign * np.floor(level * width / 32), 0, 1, 0]
    elif name == "TranslateY":
        row = [1, 0, 0, 0, 1, sign * np.floor(level * height / 32)]
    else:
        angle = sign * np.floor(3 * level) * np.pi / 180
        c, s = np.cos(angle), np.sin(angle)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        row = [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy]
    return np.array(row + [0, 0], np.float64)


def test_geometric_transforms_pick_each_operations_matrix():
    names = ["Identity", *image_ops.GEOMETRIC, "Solarize", "Rotate", "ShearX"]
    levels = np.array([3.0, 7.0, 10.0, 4.0, 9.0, 6.0, 5.0, 2.0, 8.0], np.float32)
    signs = np.array([1, -1, 1, -1, 1, -1, 1, 1, -1], np.float32)
    height, width = 20, 28
    op = tf.constant([image_ops.OP_INDEX[name] for name in names])
    got = image_ops.geometric_transforms(op, tf.constant(levels), tf.constant(signs), height, width).numpy()
    for b, name in enumerate(names):
        expected = (
            _reference_matrix(name, float(levels[b]), float(signs[b]), height, width)
            if name in PAPER_GEOMETRIC_OPS
            else np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float64)
        )
        np.testing.assert_allclose(got[b], expected, atol=1e-5, err_msg=name)


def test_every_augmentation_layer_is_a_batch_augmentation():
    for name, cls in AUGMENTATIONS.items():
        assert issubclass(cls, BatchAugmentation), name
    assert {name for name, cls in AUGMENTATIONS.items() if issubclass(cls, MixingAugmentation)} == {
        "cutmix",
        "mixup",
        "ricap",
    }


@pytest.mark.parametrize(
    "factory", [lambda: PadCrop(padding=0, flip=False, seed=2), lambda: RandAugment(num_ops=0, seed=2)]
)
def test_identity_parameters_return_the_inputs_and_draw_no_seed(factory):
    layer = factory()
    batch = _batch()
    out = layer(batch, training=True)
    for key in ("images", "labels"):
        np.testing.assert_array_equal(out[key].numpy(), batch[key].numpy())
    # The layer's generator has not advanced: it is where a fresh layer's starts.
    np.testing.assert_array_equal(layer.seed_generator.state.numpy(), factory().seed_generator.state.numpy())


def test_augment_and_data_draw_with_one_rng_algorithm():
    from tfrobust.data import pipeline

    assert common.RNG_ALG == "philox" and pipeline.RNG_ALG is common.RNG_ALG
    # Philox shuffling, the same as TF's own call with alg="philox".
    expected = tf.random.experimental.stateless_shuffle(
        tf.range(20, dtype=tf.int64), seed=tf.constant([5, 2], tf.int64), alg="philox"
    )
    np.testing.assert_array_equal(epoch_permutation(20, 5, 2).numpy(), expected.numpy())


def test_no_module_imports_another_modules_private_names():
    """`from tfrobust.x import _name` couples a module to another's internals: shared helpers are public."""
    import ast
    import pathlib

    import tfrobust

    root = pathlib.Path(tfrobust.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfrobust"):
                offenders += [
                    f"{path.relative_to(root)}: {alias.name}" for alias in node.names if alias.name.startswith("_")
                ]
    assert not offenders, offenders
