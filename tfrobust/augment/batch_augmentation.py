"""`BatchAugmentation`: the Keras-layer plumbing shared by every augmentation layer but `Compose`.

A subclass sets its own parameters in `__init__`, implements `augment(images, labels, seed)` (a pure
function of tensors: the seeded transform), adds its parameters to `get_config` and, when some
parameters make it the identity, says so in `is_identity`. This class does the rest, following the
conventions of common.py: checks the batch (integer labels refused, also when not training), `training`
other than True is a no-op, the seed is the caller's int [2] tensor or else the layer's
`keras.random.SeedGenerator` (never inside tf.data), and the output keeps any extra dict keys.

`MixingAugmentation` adds what the mixing layers (CutMix, MixUp, RICAP) share: whether their random
draws are made per device batch, as the reference does, or per example.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfrobust.augment import common


class BatchAugmentation(keras.layers.Layer):
    """Base of the batch augmentations whose work is one seeded function of (images, labels)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def augment(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def is_identity(self) -> bool:
        """True when the parameters make `augment` change nothing: `call` then returns its inputs as they
        are and draws no seed (the layer's generator does not advance)."""
        return False

    def call(self, inputs: dict, training=None, seed=None) -> dict:
        common.check_batch(inputs, type(self).__name__)
        if not training or self.is_identity():
            return inputs
        seed = common.resolve_seed(seed, self.seed_generator)
        out = dict(inputs)
        out["images"], out["labels"] = self.augment(
            tf.convert_to_tensor(inputs["images"]), tf.convert_to_tensor(inputs["labels"]), seed
        )
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


MIX_DRAWS = ("batch", "example")


class MixingAugmentation(BatchAugmentation):
    """Base of CutMix, MixUp and RICAP: `draws`, `devices` and `sub_batches` choose how they draw.

    `draws="batch"` (default, the reference's): the batch is `devices` consecutive device batches
    (replica k trains on block k under tf.distribute), and each device batch gets one set of draws
    (CutMix's lambda and box, MixUp's lambda, RICAP's boundary and crop offsets) and one partner
    permutation, shared by its `sub_batches` emulated-worker sub-batches (rows s, s + S, s + 2S, ...;
    `common.block_partners`). This is DeepMind's `adversarial_robustness/jax/utils.py` `cutmix`, called
    per device with `split` = the emulated workers (experiment.py `_train_fn`), with which the paper's
    numbers were produced; `sub_batches` should equal the pipeline's augmentation repeats, so that the
    copies of one image land in different sub-batches and meet copies of one partner.
    `draws="example"`: every example draws its own, and partners are a permutation of the whole batch
    (same marginal distributions, more diversity per batch); `devices` and `sub_batches` are unused.
    """

    def __init__(self, draws: str = "batch", devices: int = 1, sub_batches: int = 1, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if draws not in MIX_DRAWS:
            raise ValueError(f"draws must be one of {MIX_DRAWS}, got {draws!r}")
        for what, value in (("devices", devices), ("sub_batches", sub_batches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive integer, got {value!r}")
        self.draws = draws
        self.devices = devices
        self.sub_batches = sub_batches

    def call(self, inputs: dict, training=None, seed=None) -> dict:
        name = type(self).__name__
        common.check_batch(inputs, name)
        if training and self.draws == "batch":
            common.check_blocks(tf.convert_to_tensor(inputs["images"]), self.devices, self.sub_batches, name)
        return super().call(inputs, training=training, seed=seed)

    def get_config(self) -> dict:
        return {**super().get_config(), "draws": self.draws, "devices": self.devices, "sub_batches": self.sub_batches}
