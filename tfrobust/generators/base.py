"""The interface every generator of extra data implements.

The training side never sees a generator: it reads the shards `tfrobust generate` writes
(`tfrobust.data.extra`). A new generator (e.g. a diffusion model) is a subclass of `Generator` added to
`registry.GENERATORS`; nothing in training changes.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from tfrobust.data.datasets import DatasetInfo, Split


class Generator(abc.ABC):
    """Produces labelled uint8 images shaped like a dataset's.

    `fit` sees the original training split (never the validation or test images) and must be
    deterministic; `sample(n, rng)` must depend only on the fitted state and `rng`, so that shard i,
    sampled with its own seeded `rng`, is the same whether or not the run was interrupted.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def fit(self, split: Split, info: DatasetInfo) -> None:
        """Fits (or loads) the model for the dataset described by `info` from the training `split`."""

    @abc.abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`n` images (uint8 [n, H, W, C]) and their class labels (int64 [n])."""

    def describe(self) -> dict[str, Any]:
        """What was fitted, for the output's summary.json."""
        return {"generator": self.name}
