"""The image operations of AutoAugment (Cubuk et al. 2019) and RandAugment (Cubuk et al. 2020), batched in TF.

Every operation takes float images [B, H, W, C] in [0, 1] and a per-example magnitude `level` (float [B],
on the papers' 0..10 scale) and returns images of the same shape, dtype and range; `apply_ops` applies a
different operation to every example of a batch (op index [B]) without a Python or `tf.map_fn` loop:
the batch is split by operation (`tf.dynamic_partition`), each group runs through its own operation
only, the five geometric operations share one `ImageProjectiveTransformV3` call with per-example
matrices, and `tf.dynamic_stitch` restores the order (about 50 ms per 512-image CIFAR batch and stage
on 2 CPU cores, against 20x that when every operation ran on the whole batch).
No tensorflow-addons (end of life, does not import with Keras 3) and no keras-cv.
The table `OPS` names every operation once, with its implementation; the policies of autoaugment.py
and the operation list of randaugment.py refer to its names.

Magnitude -> parameter, from the AutoAugment paper's table of operations (Cubuk et al. 2019, App. A,
"magnitude range") mapped linearly from level 0..10 as in their CIFAR code
(`tensorflow/models/research/autoaugment/augmentation_transforms.py`, `float_parameter` and
`int_parameter`), with which the CIFAR-10 and SVHN policies were searched:

| op | parameter at level L | range |
|---|---|---|
| ShearX/Y | s = 0.3 L / 10, random sign, about the top-left corner (PIL affine (1, s, 0, 0, 1, 0)) | [-0.3, 0.3] |
| TranslateX/Y | int(L) pixels per 32 pixels of side (the code's 10 px at L = 10 on CIFAR), random sign | 10/32 side |
| Rotate | int(3 L) degrees, random sign, about the image centre | [-30, 30] |
| Solarize | invert pixels whose 8-bit value is >= 256 - int(25.6 L) | [0, 256] |
| Posterize | keep 8 - int(0.4 L) bits (*) | [4, 8] bits |
| Color, Contrast, Brightness, Sharpness | blend factor 0.1 + 0.18 L (`float_parameter(level, 1.8) + .1`) | [0.1, 1.9] |
| AutoContrast, Equalize, Invert, Identity | no magnitude | |

(*) The paper's range [4, 8]; the CIFAR code's `4 - int_parameter(level, 4)` reaches 0 bits (a black
image), so for Posterize the paper's table is followed rather than the code.

Pixel operations follow PIL, which the reference code calls: Color blends with the ITU-R 601 luma
(0.299 R + 0.587 G + 0.114 B), Contrast with the mean luma of the image (rounded to 8 bits), Brightness
with black, Sharpness with PIL's SMOOTH filter (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1, over 13) leaving the
border pixels as they are; Equalize is PIL's per-channel histogram equalisation on 8-bit values;
AutoContrast stretches each channel's min..max to 0..1 (in float, without PIL's 8-bit rounding).
Geometric operations use nearest-neighbour sampling (PIL's default there) and fill the area that comes
from outside the image with `fill` (0.5 by default: the reference fills with the dataset mean colour,
about 0.47 grey on CIFAR-10, see cutout.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

MAX_LEVEL = 10.0
# Parameters per level unit, as single constants. Graph mode (tf.function, tf.data) rewrites a division
# by a constant into a multiplication by its reciprocal and may regroup chains of constant factors, which
# changes float32 results by an ulp; every level -> parameter map is therefore one multiplication by a
# Python-computed constant, so eager, tf.function and tf.data compute the same numbers.
_SHEAR_PER_LEVEL = 0.3 / MAX_LEVEL
_DEGREES_PER_LEVEL = 30.0 / MAX_LEVEL  # 3.0, exact
_SOLARIZE_PER_LEVEL = 256.0 / MAX_LEVEL  # 25.6f is a bit above 25.6: floor() matches int() at integer L
_POSTERIZE_PER_LEVEL = 4.0 / MAX_LEVEL  # 0.4f is slightly above 0.4, likewise
_ENHANCE_PER_LEVEL = 1.8 / MAX_LEVEL
# The CIFAR code translates by up to 10 pixels on 32-pixel images: int(L) pixels per 32 pixels of side.
_TRANSLATE_PER_LEVEL_AND_PIXEL = 1.0 / 32.0  # a power of two: L * side / 32 is exact
# ITU-R 601-2 luma, PIL's "L" conversion.
_LUMA = (0.299, 0.587, 0.114)


def _expand(values: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """[B] -> [B, 1, 1, 1] in `like`'s dtype, to broadcast a per-example value over images."""
    return tf.cast(tf.reshape(values, [-1, 1, 1, 1]), like.dtype)


def _to_levels(images: tf.Tensor) -> tf.Tensor:
    """[0, 1] floats -> 8-bit values 0..255 as float (what PIL sees)."""
    return tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0)


def _from_levels(levels: tf.Tensor, dtype) -> tf.Tensor:
    """8-bit values 0..255 -> k / 255 correctly rounded to `dtype`, the same in eager and graph mode.

    Divided in float64: graph mode turns `/ 255` into `* (1 / 255)`, whose float32 result can differ by an
    ulp from eager's division; in float64 either way rounds to the same float32 (k / 255 is never within
    1e-16 of a float32 rounding boundary).
    """
    return tf.cast(tf.cast(levels, tf.float64) / 255.0, dtype)


def enhance_factor(level: tf.Tensor) -> tf.Tensor:
    """Blend factor of Color/Contrast/Brightness/Sharpness: 0.1 + 1.8 L / 10, in [0.1, 1.9]."""
    return level * _ENHANCE_PER_LEVEL + 0.1


def _blend(degenerate: tf.Tensor, images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance: degenerate + factor (image - degenerate), clipped to [0, 1]."""
    return tf.clip_by_value(degenerate + _expand(factor, images) * (images - degenerate), 0.0, 1.0)


def luma(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 1] grey version: ITU-R 601 luma of RGB images, the image itself when it has one channel."""
    channels = images.shape[-1]
    if channels == 3:
        return tf.reduce_sum(images * tf.constant(_LUMA, images.dtype), axis=-1, keepdims=True)
    if channels == 1:
        return images
    # Other channel counts have no standard luma: the channel mean is the neutral choice.
    return tf.reduce_mean(images, axis=-1, keepdims=True)


def identity(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    return images


def invert(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    return 1.0 - images


def auto_contrast(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """Per image and channel, maps min..max linearly onto 0..1; constant channels are left alone."""
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    span = high - low
    stretched = (images - low) / tf.where(span > 0, span, tf.ones_like(span))
    return tf.clip_by_value(tf.where(span > 0, stretched, images), 0.0, 1.0)


def equalize(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """PIL `ImageOps.equalize` per image and channel, on 8-bit values.

    With h the 256-bin histogram of a channel and `last` the count of its highest non-empty bin,
    step = (N - last) // 255; when step is 0 the channel is unchanged, else value v maps to
    (step // 2 + sum_{u < v} h[u]) // step, at most 255.
    """
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    levels = tf.cast(_to_levels(images), tf.int32)
    per_channel = tf.reshape(tf.transpose(levels, [0, 3, 1, 2]), [batch * channels, height * width])
    # One bincount for all channels of all images: bin (image, channel, value).
    offsets = tf.range(batch * channels)[:, None] * 256
    hist = tf.math.bincount(
        tf.reshape(per_channel + offsets, [-1]), minlength=batch * channels * 256, maxlength=batch * channels * 256
    )
    hist = tf.reshape(hist, [batch * channels, 256])
    nonempty = hist > 0
    last_bin = 255 - tf.argmax(tf.cast(tf.reverse(nonempty, axis=[1]), tf.int32), axis=1, output_type=tf.int32)
    last = tf.gather(hist, last_bin, axis=1, batch_dims=1)
    step = (height * width - last) // 255  # [B*C]
    cumulative = tf.cumsum(hist, axis=1, exclusive=True)
    safe_step = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((safe_step // 2 + cumulative) // safe_step, 255)
    lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None, :])
    mapped = tf.gather(lut, per_channel, axis=1, batch_dims=1)  # [B*C, H*W]
    mapped = tf.transpose(tf.reshape(mapped, [batch, channels, height, width]), [0, 2, 3, 1])
    return _from_levels(mapped, images.dtype)


def solarize(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """PIL `ImageOps.solarize(img, 256 - int(25.6 L))`: invert 8-bit values at or above the threshold."""
    threshold = 256.0 - tf.floor(level * _SOLARIZE_PER_LEVEL)
    return tf.where(_to_levels(images) >= _expand(threshold, images), 1.0 - images, images)


def posterize_bits(level: tf.Tensor) -> tf.Tensor:
    """Bits kept by Posterize at `level`: 8 - int(4 L / 10), i.e. 8 (L < 2.5) down to 4 (L = 10)."""
    return 8.0 - tf.floor(level * _POSTERIZE_PER_LEVEL)


def posterize(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """PIL `ImageOps.posterize`: zero the low 8 - bits bits of every 8-bit value (integer shifts, exact)."""
    # Integer shifts rather than floor(v / 2^k) * 2^k: tf.pow in float is not exact in every mode.
    drop = tf.cast(8.0 - posterize_bits(level), tf.int32)  # 0 (unchanged) .. 4
    drop = tf.reshape(drop, [-1, 1, 1, 1])
    values = tf.cast(_to_levels(images), tf.int32)
    return _from_levels(tf.bitwise.left_shift(tf.bitwise.right_shift(values, drop), drop), images.dtype)


def color(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """PIL `ImageEnhance.Color`: blend with the grey (luma) image."""
    return _blend(tf.broadcast_to(luma(images), tf.shape(images)), images, enhance_factor(level))


def contrast(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """PIL `ImageEnhance.Contrast`: blend with a flat image of the mean luma, rounded to 8 bits."""
    mean = _from_levels(tf.round(tf.reduce_mean(luma(images), axis=[1, 2, 3], keepdims=True) * 255.0), images.dtype)
    return _blend(tf.broadcast_to(mean, tf.shape(images)), images, enhance_factor(level))


def brightness(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """PIL `ImageEnhance.Brightness`: blend with black, i.e. scale by the factor."""
    # Written as the product it is: `_blend(tf.zeros_like(images), ...)` on a `tf.dynamic_partition`
    # output failed inside tf.function with "Incompatible shapes [B,...] vs [0,...]" in TF 2.21 (seen
    # with the level fed as an input; not reduced to a minimal case), and the product is cheaper anyway.
    return tf.clip_by_value(images * _expand(enhance_factor(level), images), 0.0, 1.0)


def sharpness(images: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    """PIL `ImageEnhance.Sharpness`: blend with the SMOOTH-filtered image (border pixels not filtered)."""
    channels = images.shape[-1]
    # Built in numpy: a graph-mode `/ 13` could round differently from eager (see MAX_LEVEL).
    kernel = tf.constant(np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13.0, images.dtype)
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    shape = tf.shape(images)
    # With oneDNN on, TF 2.21's depthwise conv of an empty batch (no image of the batch drew Sharpness)
    # returns the input's spatial size instead of the VALID one, and the tf.where below fails: an empty
    # batch skips the convolution.
    smooth = tf.cond(
        shape[0] > 0,
        lambda: tf.pad(
            tf.nn.depthwise_conv2d(images, kernel, strides=[1, 1, 1, 1], padding="VALID"),
            [[0, 0], [1, 1], [1, 1], [0, 0]],
        ),
        lambda: images,
    )
    rows = tf.range(shape[1])
    cols = tf.range(shape[2])
    interior = ((rows > 0) & (rows < shape[1] - 1))[:, None] & ((cols > 0) & (cols < shape[2] - 1))[None, :]
    degenerate = tf.where(interior[None, :, :, None], smooth, images)
    return _blend(degenerate, images, enhance_factor(level))


def _matrix(a0, a1, a2, b0, b1, b2) -> tf.Tensor:
    """Per-example projective matrices [B, 8] from [B] columns: rows [a0, a1, a2, b0, b1, b2, 0, 0]."""
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def shear_x_matrix(level: tf.Tensor, sign: tf.Tensor, height, width) -> tf.Tensor:
    """PIL affine (1, s, 0, 0, 1, 0) with s = +-0.3 L / 10: shear about the top-left corner."""
    shear = sign * (level * _SHEAR_PER_LEVEL)
    ones, zeros = tf.ones_like(level), tf.zeros_like(level)
    return _matrix(ones, shear, zeros, zeros, ones, zeros)


def shear_y_matrix(level: tf.Tensor, sign: tf.Tensor, height, width) -> tf.Tensor:
    """PIL affine (1, 0, 0, s, 1, 0) with s = +-0.3 L / 10."""
    shear = sign * (level * _SHEAR_PER_LEVEL)
    ones, zeros = tf.ones_like(level), tf.zeros_like(level)
    return _matrix(ones, zeros, zeros, shear, ones, zeros)


def translate_x_matrix(level: tf.Tensor, sign: tf.Tensor, height, width) -> tf.Tensor:
    """A shift by +-int(L W / 32) pixels: `int_parameter(level, 10)` pixels on a 32-pixel side, scaled."""
    shift = sign * tf.floor(level * tf.cast(width, tf.float32) * _TRANSLATE_PER_LEVEL_AND_PIXEL)
    ones, zeros = tf.ones_like(level), tf.zeros_like(level)
    return _matrix(ones, zeros, shift, zeros, ones, zeros)


def translate_y_matrix(level: tf.Tensor, sign: tf.Tensor, height, width) -> tf.Tensor:
    """A shift by +-int(L H / 32) pixels."""
    shift = sign * tf.floor(level * tf.cast(height, tf.float32) * _TRANSLATE_PER_LEVEL_AND_PIXEL)
    ones, zeros = tf.ones_like(level), tf.zeros_like(level)
    return _matrix(ones, zeros, zeros, zeros, ones, shift)


def rotate_matrix(level: tf.Tensor, sign: tf.Tensor, height, width) -> tf.Tensor:
    """A rotation by +-int(3 L) degrees about the image centre c: input = R (output - c) + c."""
    fh = tf.cast(height, tf.float32)
    fw = tf.cast(width, tf.float32)
    angle = sign * (tf.floor(level * _DEGREES_PER_LEVEL) * (math.pi / 180.0))
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (fw - 1.0) / 2.0, (fh - 1.0) / 2.0
    return _matrix(cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)


@dataclasses.dataclass(frozen=True)
class ImageOp:
    """One operation of the table `OPS`: a pixel operation or a geometric one, never both.

    `pixel(images, level)` transforms a group of images. A geometric operation has instead
    `matrix(level, sign, height, width)`: its per-example projective matrices [B, 8], read by
    `geometric_transforms`. `randaugment`: one of RandAugment's K = 14 operations (Cubuk et al. 2020,
    Sec. 3: the AutoAugment operations less Invert).
    """

    pixel: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None
    matrix: Callable[..., tf.Tensor] | None = None
    randaugment: bool = True

    def __post_init__(self) -> None:
        if (self.pixel is None) == (self.matrix is None):
            raise ValueError("an image operation is either a pixel operation or a geometric one")


# Every operation, named once: AutoAugment's policies (autoaugment.py), RandAugment's operation list
# and `apply_ops` all refer to this table. An operation's index (the `op` tensors of `apply_ops`) is its
# position here; RandAugment's list keeps the paper's order (Cubuk et al. 2020, Sec. 3), on which its
# draws depend.
OPS: dict[str, ImageOp] = {
    "Identity": ImageOp(pixel=identity),
    "AutoContrast": ImageOp(pixel=auto_contrast),
    "Equalize": ImageOp(pixel=equalize),
    "Invert": ImageOp(pixel=invert, randaugment=False),
    "Rotate": ImageOp(matrix=rotate_matrix),
    "Solarize": ImageOp(pixel=solarize),
    "Color": ImageOp(pixel=color),
    "Posterize": ImageOp(pixel=posterize),
    "Contrast": ImageOp(pixel=contrast),
    "Brightness": ImageOp(pixel=brightness),
    "Sharpness": ImageOp(pixel=sharpness),
    "ShearX": ImageOp(matrix=shear_x_matrix),
    "ShearY": ImageOp(matrix=shear_y_matrix),
    "TranslateX": ImageOp(matrix=translate_x_matrix),
    "TranslateY": ImageOp(matrix=translate_y_matrix),
}
OP_NAMES: tuple[str, ...] = tuple(OPS)
OP_INDEX: dict[str, int] = {name: index for index, name in enumerate(OP_NAMES)}
GEOMETRIC: tuple[str, ...] = tuple(name for name, spec in OPS.items() if spec.matrix is not None)
PIXEL_OPS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    name: spec.pixel for name, spec in OPS.items() if spec.pixel is not None
}
RANDAUGMENT_OPS: tuple[str, ...] = tuple(name for name, spec in OPS.items() if spec.randaugment)


def geometric_transforms(op: tf.Tensor, level: tf.Tensor, sign: tf.Tensor, height, width) -> tf.Tensor:
    """Per-example projective matrices [B, 8] (output pixel -> input pixel), identity for non-geometric ops.

    A row [a0, a1, a2, b0, b1, b2, 0, 0] reads output pixel (x, y) from input (a0 x + a1 y + a2,
    b0 x + b1 y + b2), the convention of PIL's affine `data` and of `ImageProjectiveTransformV3`.
    """
    level = tf.cast(level, tf.float32)
    sign = tf.cast(sign, tf.float32)
    ones, zeros = tf.ones_like(level), tf.zeros_like(level)
    out = _matrix(ones, zeros, zeros, zeros, ones, zeros)
    for name in GEOMETRIC:
        out = tf.where((op == OP_INDEX[name])[:, None], OPS[name].matrix(level, sign, height, width), out)
    return out


def projective_transform(images: tf.Tensor, transforms: tf.Tensor, fill: float) -> tf.Tensor:
    """Nearest-neighbour projective warp of each image by its own matrix; outside pixels get `fill`."""
    shape = tf.shape(images)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=tf.cast(transforms, tf.float32),
        output_shape=shape[1:3],
        fill_value=tf.constant(fill, tf.float32),
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return tf.cast(warped, images.dtype)


def apply_ops(
    images: tf.Tensor,
    op: tf.Tensor,
    level: tf.Tensor,
    sign: tf.Tensor,
    *,
    fill: float,
    ops_in_use: Sequence[str] = OP_NAMES,
) -> tf.Tensor:
    """Applies operation `OP_NAMES[op[b]]` at `level[b]` (sign `sign[b]` = +-1 for signed ops) to image b.

    The batch is split by operation (`tf.dynamic_partition`), each group goes through its operation only,
    and the results are put back in order (`tf.dynamic_stitch`): every image is processed once per stage
    instead of once per operation. The five geometric operations form one group, warped by one
    `ImageProjectiveTransformV3` call with per-image matrices. Only the operations in `ops_in_use` are
    built into the graph; an image whose op is Identity or not among them is returned unchanged.
    """
    if images.shape[-1] is None:
        raise ValueError("AutoAugment/RandAugment need a static channel count (images [B, H, W, C] with C known)")
    unknown = [name for name in ops_in_use if name not in OP_INDEX]
    if unknown:
        raise ValueError(f"unknown image operations {unknown}; known: {', '.join(OP_NAMES)}")
    op = tf.cast(op, tf.int32)
    level = tf.cast(level, tf.float32)
    sign = tf.cast(sign, tf.float32)
    pixel_ops = [name for name in ops_in_use if name not in GEOMETRIC and name != "Identity"]
    has_geometric = any(name in GEOMETRIC for name in ops_in_use)
    # Group of each image: 0 unchanged, 1 geometric, 2 + k the k-th pixel operation.
    group = tf.zeros_like(op)
    if has_geometric:
        is_geometric = tf.reduce_any(tf.stack([op == OP_INDEX[name] for name in GEOMETRIC if name in ops_in_use]), 0)
        group = tf.where(is_geometric, 1, group)
    for k, name in enumerate(pixel_ops):
        group = tf.where(op == OP_INDEX[name], 2 + k, group)
    num_groups = 2 + len(pixel_ops)
    positions = tf.dynamic_partition(tf.range(tf.shape(images)[0]), group, num_groups)
    parts = tf.dynamic_partition(images, group, num_groups)
    part_ops = tf.dynamic_partition(op, group, num_groups)
    part_levels = tf.dynamic_partition(level, group, num_groups)
    part_signs = tf.dynamic_partition(sign, group, num_groups)
    results = [parts[0]]
    if has_geometric:
        shape = tf.shape(images)
        matrices = geometric_transforms(part_ops[1], part_levels[1], part_signs[1], shape[1], shape[2])
        results.append(projective_transform(parts[1], matrices, fill))
    else:
        results.append(parts[1])  # empty
    for k, name in enumerate(pixel_ops):
        results.append(PIXEL_OPS[name](parts[2 + k], part_levels[2 + k]))
    out = tf.dynamic_stitch(positions, results)
    out.set_shape(images.shape)
    return out
