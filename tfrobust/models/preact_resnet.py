"""Pre-activation ResNet-18 (He et al. 2016), as in DeepMind's reference `model_zoo.PreActResNet`.

Widths 64-128-256-512, two blocks per stage, strides 1, 2, 2, 2. A block computes
a = act(BN(x)); out = conv3x3(act(BN(conv3x3_stride(a)))); when the block changes width or
resolution its shortcut is a 3x3 convolution of the *raw* x (docs/method.md, "Model"), unlike the WRN's
1x1 on a.
Same stem, head, padding, BatchNorm settings and initialisation as `wide_resnet` (the reference's JAX
code has no PreAct-ResNet; its convolutions would get Haiku's default init like the WRN's).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfrobust.models.standardize import Standardize
from tfrobust.models.wide_resnet import ACTIVATIONS, Activation, bn_layer, conv3x3, head


def _preact_block(x, filters: int, stride: int, activation: Activation, synchronized: bool, name: str):
    has_shortcut = stride != 1 or x.shape[-1] != filters
    a = bn_layer(f"{name}_batchnorm_0", synchronized)(x)
    a = keras.layers.Activation(activation, name=f"{name}_act_0")(a)
    out = conv3x3(filters, stride, f"{name}_conv_0")(a)
    out = bn_layer(f"{name}_batchnorm_1", synchronized)(out)
    out = keras.layers.Activation(activation, name=f"{name}_act_1")(out)
    out = conv3x3(filters, 1, f"{name}_conv_1")(out)
    shortcut = conv3x3(filters, stride, f"{name}_shortcut")(x) if has_shortcut else x
    return keras.layers.Add(name=f"{name}_add")([shortcut, out])


def preact_resnet18(
    *,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    activation: str = "swish",
    synchronized_bn: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds PreAct-ResNet-18 as a functional Keras model mapping [0,1] images to logits."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    act = ACTIVATIONS[activation]
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = Standardize(mean, std, dtype="float32", name="standardize")(inputs)
    x = conv3x3(64, 1, "init_conv")(x)
    for stage, (filters, stride) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2))):
        for block in range(2):
            x = _preact_block(
                x, filters, stride if block == 0 else 1, act, synchronized_bn, name=f"layer_{stage}_block_{block}"
            )
    logits = head(x, num_classes, act, synchronized_bn)
    return keras.Model(inputs, logits, name=name or "preact-resnet-18")
