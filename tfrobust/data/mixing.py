"""The training stream with generated data: every batch mixes an exact number of original and generated images.

Rebuffi, Gowal et al. 2021 (Sec. 5, 6.3 and App. A; after Carmon et al. 2019): each batch holds a fixed
fraction `real_ratio` of original images (0.3 by default: "for every 3 original images, we include 7
generated images"), original data is sampled without replacement, generated data is fully shuffled
(published files are sorted by class), generated labels get label smoothing 0.1, and an "epoch" is
always the original set's size in samples (50K "CIFAR-10-equivalent" samples), whatever the size of the
generated set.

Batch composition, as the reference's (DeepMind `adversarial_robustness/jax/experiment.py` `_dataset`
and `concatenate`, datasets.py `_repeat_batch`): the batch of B rows is `devices` consecutive device
batches of n = B / devices rows (block k is what replica k trains on under tf.distribute). With
R = `repeats` (the reference's emulated workers, 4) and d = n / R, each device batch holds
  * r = round(real_ratio * d) distinct original images, each repeated R times in consecutive rows
    (rows [0, r R) of the block: a a a a b b b b ..., the layout of `tf.repeat` in `_repeat_batch`),
  * then R (d - r) generated images, all distinct (the reference's extra-data stream asks for
    R (d - r) images per device and does not repeat them),
so the original rows are r R of n, a fraction r / d of the batch counted after repetition (0.3008 for
the paper's B = 1024, R = 4, ratio 0.3 on one device: 308 original rows of 77 images, 716 generated
rows), exact in every batch, not on average. Python's round (half to even) as the reference's. Where the
reference clamps r into [1, d - 1], tfrobust refuses r = 0 with a clear error and gives r = d
(no generated rows) for real_ratio = 1.

Which images, as pure functions of (seed, epoch, step), so that `--resume` reproduces the uninterrupted
run (the same contract as `pipeline.py`); with S steps per epoch, t = epoch * S + step, and
q = devices * r original images per batch (device batch k takes the k-th r of them):
  * original: pass p = t // (N // q) over the original set; the batch takes positions
    (t mod (N // q)) * q ... + q - 1 of pass p's permutation. Each pass is a permutation (no image
    repeats within a pass, none within a batch; the N mod q images left over change every pass).
  * generated: the stream of positions t * g ... t * g + g - 1 (g = devices * R (d - r) generated images
    per batch) walks through successive permutations of the M generated images, one per pass over them.
Both permutations are `index_permutation`: a keyed Feistel network on the index bits with cycle
walking, a bijection of 0..n-1 computed per index in O(1) memory. A materialised permutation of 20M
images would be a 160 MB int64 table per pass, and `tf.random.experimental.stateless_shuffle` of it a
second copy; this costs nothing up front and is cheap per batch.

Images are gathered from the memory-mapped shards (`tfrobust.data.extra`) inside tf.data by a
`tf.numpy_function`, in parallel (`deterministic=True`), and only the batch is converted to float32
(x / 255) and one-hot; the generated set is never loaded or copied. The augmentation callback of
`pipeline.train_dataset` then runs on the mixed batch with the seed `batch_seed(seed, epoch, step)`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tfrobust.data.datasets import Split
from tfrobust.data.extra import ExtraData
from tfrobust.data.pipeline import AugmentFn, Batch, batch_seed, check_device_batches, to_float_images
from tfrobust.errors import UserError

# Key streams, so that the original and generated permutations of the same seed are unrelated.
_REAL_STREAM = 0x0E1_6A1
_GENERATED_STREAM = 0x6E4_E7A
_FEISTEL_ROUNDS = 6
_MASK64 = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


# --------------------------------------------------------------------------------------------------
# Stateless permutations


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014): a well-mixing bijection of uint64 values."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def permutation_key(seed: int, stream: int, rotation: int) -> int:
    """A 64-bit key for permutation number `rotation` of stream `stream` under `seed`."""
    key = np.uint64(0)
    for part in (seed, stream, rotation):
        with np.errstate(over="ignore"):
            key = _mix64(
                np.uint64(key) ^ (np.uint64(int(part) & 0xFFFF_FFFF_FFFF_FFFF) + np.uint64(0x9E3779B97F4A7C15))
            )
    return int(key)


def index_permutation(index: np.ndarray, n: int, key: int) -> np.ndarray:
    """pi_key(index) for a pseudo-random permutation pi_key of 0..n-1 (int64 in, int64 out).

    A balanced Feistel network (Luby & Rackoff 1988) of `_FEISTEL_ROUNDS` rounds over 2h bits with
    2^(2h) >= n, round function SplitMix64(right ^ round key), is a bijection of 0..2^(2h)-1; applying
    it again to values >= n until they fall below n ("cycle walking", Black & Rogaway 2002) restricts it
    to a bijection of 0..n-1. 2^(2h) < 4n, so fewer than 4 applications are needed on average.
    """
    if n < 1:
        raise ValueError(f"cannot permute {n} elements")
    index = np.asarray(index, dtype=np.int64)
    if n == 1:
        return np.zeros_like(index)
    bits = max(2, int(n - 1).bit_length())
    half = (bits + 1) // 2
    mask = np.uint64((1 << half) - 1)
    round_keys = [np.uint64(permutation_key(key, 0xF, r)) for r in range(_FEISTEL_ROUNDS)]

    def encrypt(v: np.ndarray) -> np.ndarray:
        left = v >> np.uint64(half)
        right = v & mask
        for k in round_keys:
            left, right = right, left ^ (_mix64(right ^ k) & mask)
        return (left << np.uint64(half)) | right

    out = encrypt(index.astype(np.uint64))
    todo = out >= np.uint64(n)
    while todo.any():
        out[todo] = encrypt(out[todo])
        todo = out >= np.uint64(n)
    return out.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Which images make batch (epoch, step)


@dataclasses.dataclass(frozen=True)
class MixPlan:
    """The composition of every batch: `devices` device batches, each of `real` distinct original images
    repeated `repeats` times, then `generated` distinct generated images (rows)."""

    batch_size: int
    repeats: int
    real: int  # distinct original images per device batch
    generated: int  # generated images (= rows, all distinct) per device batch
    devices: int = 1

    @property
    def real_per_batch(self) -> int:
        """Distinct original images per (global) batch."""
        return self.real * self.devices

    @property
    def generated_per_batch(self) -> int:
        """Generated images per (global) batch."""
        return self.generated * self.devices

    @property
    def real_rows(self) -> int:
        """Original rows per (global) batch, repeats counted."""
        return self.real * self.repeats * self.devices

    @property
    def generated_rows(self) -> int:
        return self.generated * self.devices

    def row_is_generated(self) -> np.ndarray:
        """bool [batch_size]: which rows of a batch hold generated images."""
        block = np.r_[np.zeros(self.real * self.repeats, bool), np.ones(self.generated, bool)]
        return np.tile(block, self.devices)


def mix_plan(batch_size: int, real_ratio: float, repeats: int = 1, devices: int = 1) -> MixPlan:
    """The reference's composition (module docstring): per device batch of d = B / (devices repeats)
    distinct slots, r = round(real_ratio * d) original images repeated `repeats` times and
    `repeats` (d - r) distinct generated images."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"batch size must be a positive integer, got {batch_size!r}: fix --batch-size")
    if not 0.0 < real_ratio <= 1.0:
        raise UserError(f"--real-ratio must be in (0, 1] (fraction of original images per batch), got {real_ratio}")
    check_device_batches(batch_size, devices, repeats)
    distinct = batch_size // devices // repeats
    real = int(round(real_ratio * distinct))
    if real < 1:
        raise UserError(
            f"--real-ratio {real_ratio} of {distinct} images per device batch rounds to 0 original images: "
            "raise --real-ratio or --batch-size"
        )
    return MixPlan(
        batch_size=batch_size, repeats=repeats, real=real, generated=(distinct - real) * repeats, devices=devices
    )


class MixedBatches:
    """Index arithmetic and host-side gathering of mixed batches; a pure function of (seed, epoch, step)."""

    def __init__(self, real: Split, extra: ExtraData, plan: MixPlan, *, seed: int, steps_per_epoch: int):
        self.real = real
        self.extra = extra
        self.plan = plan
        self.seed = int(seed)
        self.steps_per_epoch = int(steps_per_epoch)
        self.real_per_pass = len(real) // plan.real_per_batch  # batches per pass over the original data

    def indices(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(original indices [real_per_batch], generated global indices [generated_per_batch]) of batch
        `step` of `epoch`; device batch k takes the k-th `real` and the k-th `generated` of them."""
        t = int(epoch) * self.steps_per_epoch + int(step)
        plan = self.plan
        rotation, within = divmod(t, self.real_per_pass)
        positions = within * plan.real_per_batch + np.arange(plan.real_per_batch, dtype=np.int64)
        real_index = index_permutation(positions, len(self.real), permutation_key(self.seed, _REAL_STREAM, rotation))
        m = len(self.extra)
        stream = t * plan.generated_per_batch + np.arange(plan.generated_per_batch, dtype=np.int64)
        generated_index = np.empty(plan.generated_per_batch, np.int64)
        rotations = stream // m
        for r in np.unique(rotations):
            here = rotations == r
            generated_index[here] = index_permutation(
                stream[here] % m, m, permutation_key(self.seed, _GENERATED_STREAM, int(r))
            )
        return real_index, generated_index

    def arrays(self, epoch, step) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images [B, H, W, C] and int64 labels [B]: per device batch, its original images (each
        `repeats` times in consecutive rows), then its generated images."""
        plan = self.plan
        real_index, generated_index = self.indices(int(epoch), int(step))
        real_images = np.repeat(self.real.images[real_index], plan.repeats, axis=0)
        real_labels = np.repeat(np.asarray(self.real.labels[real_index], dtype=np.int64), plan.repeats)
        generated_images, generated_labels = self.extra.gather(generated_index)
        if generated_labels is None:  # real_ratio 1: no generated rows, unlabelled extra data is fine
            generated_labels = np.empty(0, np.int64)
        generated_labels = np.asarray(generated_labels, dtype=np.int64)
        real_rows, generated_rows = plan.real * plan.repeats, plan.generated
        images, labels = [], []
        for k in range(plan.devices):
            images += [
                real_images[k * real_rows : (k + 1) * real_rows],
                generated_images[k * generated_rows : (k + 1) * generated_rows],
            ]
            labels += [
                real_labels[k * real_rows : (k + 1) * real_rows],
                generated_labels[k * generated_rows : (k + 1) * generated_rows],
            ]
        return np.concatenate(images), np.concatenate(labels)


def mixed_train_dataset(
    real: Split,
    extra: ExtraData,
    *,
    num_classes: int,
    batch_size: int,
    real_ratio: float,
    label_smoothing: float,
    seed: int,
    first_epoch: int,
    steps_per_epoch: int,
    augment: AugmentFn | None,
    repeats: int = 1,
    devices: int = 1,
    first_step: int = 0,
) -> tf.data.Dataset:
    """An endless stream of mixed `(images float32 [B,H,W,C] in [0,1], labels float32 [B,K])` batches.

    Epochs `first_epoch`, `first_epoch + 1`, ... of `steps_per_epoch` batches each, composed as
    `mix_plan(batch_size, real_ratio, repeats, devices)` (module docstring): original rows have one-hot
    labels, generated rows labels smoothed as y (1 - s) + s / K (label smoothing, Szegedy et al. 2016;
    the paper's 0.1 on generated samples only; the reference's `concatenate`). `augment(batch, seed)`
    then runs on the whole mixed batch. The stream starts at batch `first_step` of epoch `first_epoch`;
    the skipped batches are not gathered.
    """
    plan = mix_plan(batch_size, real_ratio, repeats, devices)
    if first_epoch < 0:
        raise UserError(f"first epoch must be >= 0, got {first_epoch}")
    if steps_per_epoch < 1:
        raise UserError(f"steps per epoch must be >= 1, got {steps_per_epoch}")
    if not 0 <= first_step < steps_per_epoch:
        raise UserError(f"first step must be in 0..{steps_per_epoch - 1}, got {first_step}")
    if not 0.0 <= label_smoothing < 1.0:
        raise UserError(f"--extra-label-smoothing must be in [0, 1), got {label_smoothing}")
    if plan.real_per_batch > len(real):
        raise UserError(f"{plan.real_per_batch} original images per batch but the training split has only {len(real)}")
    if plan.generated and not extra.labelled:
        raise UserError("the extra data has no labels: label it first with tfrobust pseudolabel")
    if tuple(real.images.shape[1:]) != tuple(extra.image_shape):
        raise UserError(f"extra images are {extra.image_shape} but the original images {real.images.shape[1:]}")
    if len(real) and (real.labels.min() < 0 or real.labels.max() >= num_classes):
        raise UserError(f"original labels must be in 0..{num_classes - 1}")

    batches = MixedBatches(real, extra, plan, seed=seed, steps_per_epoch=steps_per_epoch)
    image_shape = tuple(int(d) for d in real.images.shape[1:])
    # Per-row smoothing amount: 0 for original rows, `label_smoothing` for generated rows.
    smoothing = tf.constant(
        np.where(plan.row_is_generated(), np.float32(label_smoothing), np.float32(0.0))[:, None], tf.float32
    )

    def gather(epoch: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = tf.numpy_function(batches.arrays, [epoch, step], [tf.uint8, tf.int64], stateful=False)
        images.set_shape([batch_size, *image_shape])
        labels.set_shape([batch_size])
        return images, labels

    def make_batch(epoch: tf.Tensor, step: tf.Tensor) -> Batch:
        images, labels = gather(epoch, step)
        x = to_float_images(images)
        y = tf.one_hot(labels, num_classes, dtype=tf.float32)
        y = y * (1.0 - smoothing) + smoothing / float(num_classes)
        if augment is not None:
            out = augment({"images": x, "labels": y}, batch_seed(seed, epoch, step))
            x, y = out["images"], out["labels"]
        return x, y

    def epoch_steps(epoch: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.range(steps_per_epoch).map(lambda step: (epoch, step))

    # flat_map keeps epochs strictly in order; `counter` makes the stream endless.
    ds = tf.data.Dataset.counter(start=first_epoch, dtype=tf.int64).flat_map(epoch_steps).skip(first_step)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def samples_per_epoch(
    batch_size: int, real_ratio: float, repeats: int, steps_per_epoch: int, devices: int = 1
) -> tuple[int, int]:
    """(original rows, generated rows) consumed by one epoch: what the per-epoch CSV records."""
    plan = mix_plan(batch_size, real_ratio, repeats, devices)
    return plan.real_rows * steps_per_epoch, plan.generated_rows * steps_per_epoch
