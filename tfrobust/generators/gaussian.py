"""The paper's class-conditional Gaussian baseline generator.

Rebuffi, Gowal et al. 2021, App. D: "As a baseline, we also fit a class-conditional multivariate
Gaussian" (FID 120.63, IS 3.49); mixed into training it still improves robust accuracy by +0.93% (App.
D, Fig. 12). Here: for each class c, the mean mu_c and the full covariance Sigma_c of its training images'
pixels (D = H * W * C dimensions, float64, unbiased), the Cholesky factor L_c of Sigma_c + jitter * I,
and samples x = mu_c + L_c z with z ~ N(0, I), clipped to [0, 255] and rounded to uint8.

Memory: one D x D factor per class, kept in float32 (CIFAR-10: 10 x 3072^2 x 4 bytes = 377 MB; fitting
holds one float64 class covariance, 75 MB, at a time). Images are read and sampled in chunks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from tfrobust.data.datasets import DatasetInfo, Split
from tfrobust.errors import UserError
from tfrobust.generators.base import Generator

_CHUNK = 2048  # images per chunk when fitting and sampling
# Relative jitter added to the diagonal (times the mean pixel variance) so that pixels that never vary
# (the digits' border) leave the covariance positive definite; multiplied by 10 until Cholesky succeeds.
_JITTER = 1e-6
_JITTER_TRIES = 8


class GaussianGenerator(Generator):
    """A full-covariance Gaussian per class, fitted on the training pixels (values 0..255)."""

    name: ClassVar[str] = "gaussian"

    def __init__(self) -> None:
        self.image_shape: tuple[int, ...] | None = None
        self.means: np.ndarray | None = None  # float64 [K, D]
        self.factors: list[np.ndarray] = []  # float32 [D, D] lower-triangular, one per class
        self.jitters: list[float] = []
        self.counts: list[int] = []

    def fit(self, split: Split, info: DatasetInfo) -> None:
        images, labels = split.images, np.asarray(split.labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise UserError(
                f"the Gaussian generator needs uint8 images [N, H, W, C], got {images.dtype} {images.shape}"
            )
        k = info.num_classes
        dim = int(np.prod(images.shape[1:]))
        means = np.zeros((k, dim), np.float64)
        self.factors, self.jitters, self.counts = [], [], []
        for c in range(k):
            index = np.flatnonzero(labels == c)
            if index.shape[0] < 2:
                raise UserError(
                    f"class {c} has {index.shape[0]} training images: a Gaussian per class needs at least 2"
                )
            mean = np.zeros(dim, np.float64)
            for chunk in _chunks(images, index):
                mean += chunk.sum(axis=0)
            mean /= index.shape[0]
            # Two passes (centre, then accumulate) rather than E[xx^T] - mu mu^T: no cancellation.
            scatter = np.zeros((dim, dim), np.float64)
            for chunk in _chunks(images, index):
                centred = chunk - mean
                scatter += centred.T @ centred
            covariance = scatter / (index.shape[0] - 1)
            del scatter
            factor, jitter = _cholesky(covariance)
            means[c] = mean
            self.factors.append(factor.astype(np.float32))
            self.jitters.append(jitter)
            self.counts.append(int(index.shape[0]))
        self.means = means
        self.image_shape = tuple(int(d) for d in images.shape[1:])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`n` images, classes balanced (n // K each, the remainder to random classes), in random order.

        Balanced like the paper's sets (100K per class); the order is shuffled so a shard is not sorted.
        """
        if self.means is None or self.image_shape is None:
            raise RuntimeError("GaussianGenerator.sample called before fit")
        k, dim = self.means.shape
        labels = np.arange(n, dtype=np.int64) % k
        labels = rng.permutation(labels)
        images = np.empty((n, dim), np.uint8)
        for c in range(k):
            rows = np.flatnonzero(labels == c)
            for start in range(0, rows.shape[0], _CHUNK):
                part = rows[start : start + _CHUNK]
                z = rng.standard_normal((part.shape[0], dim), dtype=np.float32)
                x = self.means[c].astype(np.float32) + z @ self.factors[c].T
                images[part] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return images.reshape((n, *self.image_shape)), labels

    def describe(self) -> dict[str, Any]:
        return {
            "generator": self.name,
            "dimensions": int(self.means.shape[1]) if self.means is not None else None,
            "training_images_per_class": list(self.counts),
            "cholesky_jitter_per_class": [float(j) for j in self.jitters],
        }


def _chunks(images: np.ndarray, index: np.ndarray):
    for start in range(0, index.shape[0], _CHUNK):
        part = images[index[start : start + _CHUNK]]
        yield part.reshape(part.shape[0], -1).astype(np.float64)


def _cholesky(covariance: np.ndarray) -> tuple[np.ndarray, float]:
    """Cholesky factor of covariance + jitter * I with the smallest jitter (x10 steps) that works."""
    scale = max(float(np.mean(np.diag(covariance))), 1.0)
    jitter = _JITTER * scale
    for _ in range(_JITTER_TRIES):
        try:
            return np.linalg.cholesky(covariance + jitter * np.eye(covariance.shape[0])), jitter
        except np.linalg.LinAlgError:
            jitter *= 10.0
    raise UserError("the class covariance is not positive definite even with jitter: the images may be constant")
