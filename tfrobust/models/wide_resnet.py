"""Pre-activation WideResNet-D-W with Swish/SiLU, the architecture of Rebuffi, Gowal et al. 2021.

Structure (docs/method.md, "Model", matching DeepMind's reference `model_zoo.WideResNet` so the
published checkpoints map onto it weight for weight):

- Standardize (dataset mean/std) -> 3x3 conv, 16 channels, no bias;
- three groups of n = (D - 4) / 6 blocks, widths 16W, 32W, 64W, strides 1, 2, 2. A block computes
  a = act(BN(x)); out = conv3x3(act(BN(conv3x3_stride(a)))); when the block changes width, the 1x1
  projection shortcut reads the *activated* a, otherwise the residual adds the raw x;
- stride-2 convolutions pad only bottom/right (TF "same" on even sizes), which is the reference's
  explicit `F.pad(x, (0, 1, 0, 1))`; stride-1 ones pad 1 all round;
- head act(BN(.)) -> global average pool -> dense logits, zero-initialised (as the reference);
- every convolution starts from Haiku's default initializer (`hk.Conv2D` without `w_init` in the
  reference model_zoo.py): truncated normal with stddev 1 / sqrt(fan_in), see `initializers.py`.

BatchNorm uses decay 0.99 and epsilon 1e-5 (the reference's haiku/PyTorch settings). Logits are float32
even under a mixed-precision policy, so losses and attacks see full-precision scores.

Usage:
    model = wide_resnet(depth=28, width=10, input_shape=(32, 32, 3), num_classes=10,
                        mean=CIFAR10_MEAN, std=CIFAR10_STD)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from tfrobust.models.batch_norm import BatchNorm
from tfrobust.models.initializers import FanInTruncatedNormal
from tfrobust.models.standardize import Standardize
from tfrobust.models.swish import swish

Activation = str | Callable  # a Keras activation: a name or a function

BN_MOMENTUM = 0.99  # Keras momentum is the decay of the moving average (PyTorch momentum 0.01).
BN_EPSILON = 1e-5
ACTIVATIONS = {"swish": swish, "relu": "relu"}  # the Keras activation of each option


def bn_layer(name: str, synchronized: bool) -> BatchNorm:
    """The networks' BatchNorm: decay `BN_MOMENTUM`, epsilon `BN_EPSILON`, per replica or synchronized."""
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized, name=name)


def conv3x3(filters: int, stride: int, name: str) -> keras.layers.Conv2D:
    """3x3 conv, no bias, Haiku's default init; "same" padding pads bottom/right only for stride 2 on even
    sizes (reference)."""
    return keras.layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=FanInTruncatedNormal(),
        name=name,
    )


def head(x, num_classes: int, activation: Activation, synchronized: bool):
    """act(BN(x)) -> global average pool -> zero-initialised float32 logits (reference head)."""
    x = bn_layer("batchnorm", synchronized)(x)
    x = keras.layers.Activation(activation, name="head_act")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(
        num_classes, kernel_initializer="zeros", bias_initializer="zeros", dtype="float32", name="logits"
    )(x)


def _wrn_block(x, filters: int, stride: int, activation: Activation, synchronized: bool, name: str):
    has_shortcut = x.shape[-1] != filters
    a = bn_layer(f"{name}_batchnorm_0", synchronized)(x)
    a = keras.layers.Activation(activation, name=f"{name}_act_0")(a)
    out = conv3x3(filters, stride, f"{name}_conv_0")(a)
    out = bn_layer(f"{name}_batchnorm_1", synchronized)(out)
    out = keras.layers.Activation(activation, name=f"{name}_act_1")(out)
    out = conv3x3(filters, 1, f"{name}_conv_1")(out)
    if has_shortcut:
        shortcut = keras.layers.Conv2D(
            filters,
            1,
            strides=stride,
            padding="valid",
            use_bias=False,
            kernel_initializer=FanInTruncatedNormal(),
            name=f"{name}_shortcut",
        )(a)
    else:
        if stride != 1:
            raise ValueError("a WideResNet block that keeps its width must keep its resolution")
        shortcut = x
    return keras.layers.Add(name=f"{name}_add")([shortcut, out])


def wide_resnet(
    *,
    depth: int,
    width: int,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    activation: str = "swish",
    synchronized_bn: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds WRN-`depth`-`width` as a functional Keras model mapping [0,1] images to logits."""
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    act = ACTIVATIONS[activation]
    blocks_per_group = (depth - 4) // 6
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = Standardize(mean, std, dtype="float32", name="standardize")(inputs)
    x = conv3x3(16, 1, "init_conv")(x)
    for group, (filters, stride) in enumerate(zip((16 * width, 32 * width, 64 * width), (1, 2, 2))):
        for block in range(blocks_per_group):
            x = _wrn_block(
                x, filters, stride if block == 0 else 1, act, synchronized_bn, name=f"layer_{group}_block_{block}"
            )
    logits = head(x, num_classes, act, synchronized_bn)
    return keras.Model(inputs, logits, name=name or f"wrn-{depth}-{width}")
