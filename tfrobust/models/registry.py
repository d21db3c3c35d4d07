"""Model registry: a plain dict from the CLI's `--model` name to a builder (no string parsing, no importlib).

Parameter counts at 32x32x3, 10 classes: WRN-28-10 36,497,146 and PreAct-ResNet-18 12,556,234
(asserted by `tests/models/test_models.py`), WRN-70-16 266,875,386, as docs/method.md, "Model", lists (36M, 267M).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import keras

from tfrobust.config import MODEL_NAMES
from tfrobust.errors import UserError
from tfrobust.models.preact_resnet import preact_resnet18
from tfrobust.models.wide_resnet import wide_resnet

ModelBuilder = Callable[..., keras.Model]

MODELS: dict[str, ModelBuilder] = {
    # Small configurations of the same code paths, for CPU runs and tests.
    "wrn-10-1": functools.partial(wide_resnet, depth=10, width=1),
    "wrn-10-2": functools.partial(wide_resnet, depth=10, width=2),
    "wrn-16-2": functools.partial(wide_resnet, depth=16, width=2),
    "wrn-16-4": functools.partial(wide_resnet, depth=16, width=4),
    # The paper's models.
    "wrn-28-10": functools.partial(wide_resnet, depth=28, width=10),
    "wrn-34-10": functools.partial(wide_resnet, depth=34, width=10),
    "wrn-34-20": functools.partial(wide_resnet, depth=34, width=20),
    "wrn-70-16": functools.partial(wide_resnet, depth=70, width=16),
    "wrn-106-16": functools.partial(wide_resnet, depth=106, width=16),
    "preact-resnet-18": preact_resnet18,
}
# tfrobust.config validates --model against its own list (it imports no TensorFlow): the same names, in this order.
assert tuple(MODELS) == MODEL_NAMES, "tfrobust.config.MODEL_NAMES must list MODELS' names in order"


def build_model(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    activation: str = "swish",
    synchronized_bn: bool = False,
) -> keras.Model:
    """Builds the registered model `name` for images of `input_shape` (H, W, C) in [0, 1]."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")
    return MODELS[name](
        input_shape=input_shape,
        num_classes=num_classes,
        mean=mean,
        std=std,
        activation=activation,
        synchronized_bn=synchronized_bn,
        name=name,
    )
