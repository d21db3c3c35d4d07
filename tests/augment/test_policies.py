"""AutoAugment / RandAugment: every operation keeps shape, dtype and [0, 1]; operations match PIL where the
reference code calls PIL; per-image choice of operations; the policy tables."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrobust.augment import image_ops
from tfrobust.augment.autoaugment import POLICIES, AutoAugment
from tfrobust.augment.randaugment import RANDAUGMENT_OPS, RandAugment

SEED = tf.constant([13, 1], tf.int64)


def _images(b=6, h=10, w=12, c=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(b, h, w, c)).astype(np.float32) / 255.0
    images[0] = 0.0  # constant images: the edge cases of AutoContrast/Equalize
    images[1] = 1.0
    images[2, :, :, 0] = 0.4  # one constant channel
    return images


def _apply(name, images, level, sign=1.0, fill=0.5):
    b = images.shape[0]
    op = tf.fill([b], image_ops.OP_INDEX[name])
    return image_ops.apply_ops(
        tf.constant(images), op, tf.fill([b], float(level)), tf.fill([b], float(sign)), fill=fill, ops_in_use=(name,)
    ).numpy()


@pytest.mark.parametrize("name", image_ops.OP_NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_keeps_shape_dtype_and_range(name, channels):
    images = _images(c=channels)
    for level in (0.0, 3.0, 7.5, 10.0):
        for sign in (-1.0, 1.0):
            out = _apply(name, images, level, sign)
            assert out.shape == images.shape and out.dtype == np.float32
            assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0, (name, level)


def test_every_op_gives_the_same_result_in_graph_mode():
    # Every image on one operation (the other groups of the batch split are empty), level fed as an input.
    images = tf.constant(_images(b=4, h=8, w=8))
    level, sign = tf.constant([0.0, 3.0, 7.5, 10.0]), tf.constant([1.0, -1.0, 1.0, -1.0])

    def run(name, x, lv, sg):
        op = tf.fill([4], image_ops.OP_INDEX[name])
        return image_ops.apply_ops(x, op, lv, sg, fill=0.5, ops_in_use=(name,))

    for name in image_ops.OP_NAMES:
        graph = tf.function(lambda x, lv, sg, name=name: run(name, x, lv, sg))(images, level, sign)
        np.testing.assert_array_equal(graph.numpy(), run(name, images, level, sign).numpy(), err_msg=name)


@pytest.mark.parametrize("name", ["Identity", "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Solarize"])
def test_level_zero_is_identity_for_parametrised_ops(name):
    images = _images()
    np.testing.assert_array_equal(_apply(name, images, 0.0), images)


def test_brightness_color_contrast_sharpness_at_level_five_are_identity():
    # Blend factor 0.1 + 0.18 * 5 = 1.0: the image itself.
    images = _images()
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):
        np.testing.assert_allclose(_apply(name, images, 5.0), images, atol=1e-6, err_msg=name)


def test_translate_shifts_by_whole_pixels_and_fills():
    images = _images(b=3, h=32, w=32)
    out = _apply("TranslateX", images, 9.0, sign=1.0, fill=0.25)  # 9 px on a 32-px image
    np.testing.assert_array_equal(out[:, :, :-9], images[:, :, 9:])
    np.testing.assert_array_equal(out[:, :, -9:], 0.25)
    out = _apply("TranslateY", images, 4.0, sign=-1.0, fill=0.25)
    np.testing.assert_array_equal(out[:, 4:], images[:, :-4])
    np.testing.assert_array_equal(out[:, :4], 0.25)


def test_shear_keeps_the_first_row_and_moves_the_rest():
    images = _images(b=3, h=16, w=16)
    out = _apply("ShearX", images, 10.0)
    np.testing.assert_array_equal(out[:, 0], images[:, 0])  # y = 0: input x = x + s * 0
    assert not np.array_equal(out[:, -1], images[:, -1])


def test_rotate_by_the_drawn_angle():
    # Level 10 is 30 degrees; a 90-degree check is impossible, but the centre pixel stays and corners fill.
    images = _images(b=3, h=15, w=15)
    out = _apply("Rotate", images, 10.0, fill=0.5)
    np.testing.assert_array_equal(out[:, 7, 7], images[:, 7, 7])
    np.testing.assert_array_equal(out[:, 0, 0], 0.5)  # the corner comes from outside after 30 degrees


def test_solarize_posterize_invert_values():
    images = _images()
    np.testing.assert_allclose(_apply("Invert", images, 0.0), 1.0 - images, atol=1e-7)
    np.testing.assert_allclose(_apply("Solarize", images, 10.0), 1.0 - images, atol=1e-7)  # threshold 0
    levels = np.round(_apply("Posterize", images, 10.0) * 255.0)  # 4 bits kept: multiples of 16
    assert np.all(levels % 16 == 0)
    np.testing.assert_array_equal(image_ops.posterize_bits(tf.constant([0.0, 2.5, 5.0, 10.0])).numpy(), [8, 7, 6, 4])


def test_auto_contrast_stretches_each_channel():
    images = _images() * 0.5 + 0.25
    out = _apply("AutoContrast", images, 0.0)
    for b in range(3, images.shape[0]):
        np.testing.assert_allclose(out[b].min(axis=(0, 1)), 0.0, atol=1e-6)
        np.testing.assert_allclose(out[b].max(axis=(0, 1)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(out[0], images[0])  # constant image unchanged


def _pil_equalize(channel: np.ndarray) -> np.ndarray:
    """PIL's ImageOps.equalize on one uint8 channel, transcribed (the algorithm the docstring states)."""
    h = np.bincount(channel.ravel(), minlength=256)
    nonzero = h[h > 0]
    if len(nonzero) <= 1:
        return channel
    step = (nonzero.sum() - nonzero[-1]) // 255
    if not step:
        return channel
    lut, n = [], step // 2
    for i in range(256):
        lut.append(min(n // step, 255))
        n += h[i]
    return np.asarray(lut, np.uint8)[channel]


def test_equalize_matches_pil_algorithm():
    images = _images(b=5, h=16, w=16)
    images[3] = np.round(np.linspace(0.2, 0.3, 16 * 16 * 3).reshape(16, 16, 3) * 255) / 255  # narrow histogram
    out = np.round(_apply("Equalize", images, 0.0) * 255).astype(np.uint8)
    levels = np.round(images * 255).astype(np.uint8)
    for b in range(images.shape[0]):
        for c in range(3):
            np.testing.assert_array_equal(out[b, :, :, c], _pil_equalize(levels[b, :, :, c]), err_msg=f"{b} {c}")


@pytest.mark.parametrize(
    "name, level",
    [
        ("Equalize", 0),
        ("Posterize", 7),
        ("Solarize", 3),
        ("Invert", 0),
        ("AutoContrast", 0),
        ("Color", 3),
        ("Contrast", 7),
        ("Brightness", 9),
        ("Sharpness", 1),
        ("TranslateX", 6),
    ],
)
def test_pixel_ops_match_pil(name, level):
    Image = pytest.importorskip("PIL.Image")
    ImageOps = pytest.importorskip("PIL.ImageOps")
    ImageEnhance = pytest.importorskip("PIL.ImageEnhance")
    images = _images(b=4, h=16, w=16)
    levels = np.round(images * 255).astype(np.uint8)
    factor = 0.1 + 1.8 * level / 10
    reference = {
        "Equalize": lambda im: ImageOps.equalize(im),
        "Posterize": lambda im: ImageOps.posterize(im, 8 - int(level * 4 / 10)),
        "Solarize": lambda im: ImageOps.solarize(im, 256 - int(level * 256 / 10)),
        "Invert": lambda im: ImageOps.invert(im),
        "AutoContrast": lambda im: ImageOps.autocontrast(im),
        "Color": lambda im: ImageEnhance.Color(im).enhance(factor),
        "Contrast": lambda im: ImageEnhance.Contrast(im).enhance(factor),
        "Brightness": lambda im: ImageEnhance.Brightness(im).enhance(factor),
        "Sharpness": lambda im: ImageEnhance.Sharpness(im).enhance(factor),
        # PIL affine data (1, 0, t, 0, 1, 0): output x reads input x + t; int(L) px per 32 px of width.
        "TranslateX": lambda im: im.transform(im.size, Image.AFFINE, (1, 0, int(level * im.size[0] / 32), 0, 1, 0)),
    }[name]
    expected = np.stack([np.asarray(reference(Image.fromarray(x))) for x in levels]) / 255.0
    out = _apply(name, images, level, sign=1.0, fill=0.0)
    # PIL rounds its blends and luma to 8 bits; this works in float: allow two 8-bit steps.
    tolerance = 0.5 / 255 if name in ("Equalize", "Posterize", "Solarize", "Invert", "TranslateX") else 2.01 / 255
    np.testing.assert_allclose(out, expected, atol=tolerance)


def test_apply_ops_picks_an_op_per_example():
    images = _images(b=4)
    op = tf.constant([image_ops.OP_INDEX[n] for n in ("Invert", "Identity", "Solarize", "Invert")])
    out = image_ops.apply_ops(
        tf.constant(images), op, tf.fill([4], 10.0), tf.ones([4]), fill=0.5, ops_in_use=("Invert", "Solarize")
    ).numpy()
    np.testing.assert_allclose(out[0], 1.0 - images[0], atol=1e-7)
    np.testing.assert_array_equal(out[1], images[1])
    np.testing.assert_allclose(out[2], 1.0 - images[2], atol=1e-7)
    np.testing.assert_allclose(out[3], 1.0 - images[3], atol=1e-7)


def test_policy_tables():
    for name, table in POLICIES.items():
        assert len(table) == 25, name
        for sub in table:
            assert len(sub) == 2
            for op, prob, level in sub:
                assert op in image_ops.OP_INDEX and op != "Identity"
                assert 0.0 <= prob <= 1.0 and 0 <= level <= 10
    assert set(RANDAUGMENT_OPS) <= set(image_ops.OP_NAMES) and len(RANDAUGMENT_OPS) == 14


def test_randaugment_picks_different_ops_for_different_images():
    layer = RandAugment(num_ops=2, magnitude=9)
    ops, signs = (t.numpy() for t in layer.draw(SEED, 256))
    assert ops.shape == (256, 2)
    assert len({tuple(row) for row in ops}) > 50  # 14^2 = 196 possible pairs
    counts = np.bincount(ops.ravel(), minlength=len(image_ops.OP_NAMES))
    used = [image_ops.OP_INDEX[n] for n in RANDAUGMENT_OPS]
    assert np.all(counts[used] > 0) and counts.sum() == counts[used].sum()
    assert set(np.unique(signs)) == {-1.0, 1.0}


def test_autoaugment_draws_one_sub_policy_per_image_with_its_probabilities():
    layer = AutoAugment()
    sub, ops, levels, _ = (t.numpy() for t in layer.draw(SEED, 20000))
    assert len(np.unique(sub)) == 25
    table = POLICIES["cifar10"]
    identity = image_ops.OP_INDEX["Identity"]
    for stage in range(2):
        probs = np.array([table[s][stage][1] for s in sub])
        applied = ops[:, stage] != identity
        assert abs(applied.mean() - probs.mean()) < 0.015
        # Applied operations are the sub-policy's, at its magnitude.
        names = np.array([image_ops.OP_INDEX[table[s][stage][0]] for s in sub])
        np.testing.assert_array_equal(ops[applied, stage], names[applied])
        np.testing.assert_array_equal(levels[:, stage], [table[s][stage][2] for s in sub])
    # Sub-policy 14 applies "Invert" with probability 0: never.
    assert np.all(ops[sub == 14, 1] == identity)


_EMPTY_SHARPNESS = """
import os
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"  # as `import tfrobust` sets it: the failing configuration
import tensorflow as tf
from tfrobust.augment import image_ops

@tf.autograph.experimental.do_not_convert
def none_drew_sharpness(x):
    chosen = tf.where(tf.reduce_sum(x, [1, 2, 3]) < -1.0)[:, 0]  # empty, of dynamic size
    return image_ops.sharpness(tf.gather(x, chosen), tf.gather(tf.ones([4]), chosen))

out = next(iter(tf.data.Dataset.from_tensors(tf.random.uniform([4, 8, 8, 1])).map(none_drew_sharpness)))
print("shape", tuple(out.shape))
"""


def test_sharpness_of_an_empty_batch_inside_tf_data():
    """No image of a batch drew Sharpness: its group is empty. Inside tf.data (where training runs the
    augmentations) with oneDNN on, TF 2.21's depthwise conv returned the wrong shape for an empty batch and
    a training run with randaugment failed. A subprocess, so that oneDNN is on whatever imported
    TensorFlow first in this test session."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _EMPTY_SHARPNESS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shape (0, 8, 8, 1)" in done.stdout
