"""`Compose`: a chain of augmentation layers that share one seed, like `keras.Sequential` for batch dicts."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfrobust.augment import common


@keras.saving.register_keras_serializable(package="tfrobust")
class Compose(keras.layers.Layer):
    """Applies `layers` in the given order to a `{"images", "labels"}` batch.

    `call(inputs, training=None, seed=None)`: with `training=True`, the [2] `seed` is split with
    `tf.random.experimental.stateless_split` (Philox) into one seed per layer, layer i getting row i, so
    the chain is as reproducible as each layer (same seed, same batch: eagerly, in `tf.function`, in
    tf.data). A chain of one layer passes the seed through unsplit, so it is exactly that layer (a
    Pad & Crop-only run draws the crops it drew before augmentations were composable). Without a seed,
    one is drawn from this layer's `keras.random.SeedGenerator` (never inside tf.data).
    `training=False`/`None` returns the inputs. Integer labels are rejected even when the
    chain is empty or not training, so a pipeline fails on its first batch.

    `build_augmentation` (registry.py) builds one in the canonical order; constructing one by hand
    applies the layers in whatever order they are given.
    """

    def __init__(self, layers: Sequence[keras.layers.Layer] = (), seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.augmentations = list(layers)
        for layer in self.augmentations:
            if not isinstance(layer, keras.layers.Layer):
                raise ValueError(f"Compose takes Keras layers, got {layer!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    @property
    def layers(self) -> list[keras.layers.Layer]:
        return list(self.augmentations)

    def build(self, input_shape=None) -> None:
        # Augmentations keep the batch's shapes, so every sub-layer is built with the chain's input shape.
        # Without this, Keras would try to trace `call` symbolically to build the sub-layers (its default
        # for layers with unbuilt children), which TF ops on a seed cannot do.
        for layer in self.augmentations:
            if not layer.built:
                layer.build(input_shape)
        self.built = True

    def call(self, inputs: dict, training=None, seed=None) -> dict:
        common.check_batch(inputs, "Compose")
        if not training or not self.augmentations:
            return inputs
        seed = common.resolve_seed(seed, self.seed_generator)
        # One split for the whole chain: each layer's seed depends only on the batch seed and its position.
        seeds = common.split_seed(seed, len(self.augmentations)) if len(self.augmentations) > 1 else [seed]
        out = inputs
        for layer, layer_seed in zip(self.augmentations, seeds):
            out = layer(out, training=True, seed=layer_seed)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "layers": [keras.saving.serialize_keras_object(layer) for layer in self.augmentations],
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict) -> Compose:
        config = dict(config)
        config["layers"] = [keras.saving.deserialize_keras_object(layer) for layer in config.get("layers", [])]
        return cls(**config)
