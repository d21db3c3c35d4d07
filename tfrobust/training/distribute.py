"""`--strategy`: one device, several GPUs of one machine, or several machines (TF_CONFIG).

Under `MirroredStrategy` and `MultiWorkerMirroredStrategy` each replica sees a slice of the global batch;
tfrobust makes the distributed step compute what the single-device step computes on the whole batch:

- the loss is each replica's mean divided by the number of replicas (Keras sums gradients);
- the attack's random start is drawn for the global batch and each replica takes its rows
  (`ReplicaShardedInit`), so the adversarial points do not depend on the number of replicas.

BatchNorm (`--sync-batch-norm`, config `sync_batch_norm`):
- default, the reference's: each replica normalises with its own batch's statistics and keeps its own
  moving averages (DeepMind `adversarial_robustness/jax/experiment.py` runs the model under `jax.pmap`
  with no cross-device moments, and its per-device `state` is never averaged; it checkpoints device 0's).
  Keras builds the moving statistics as mirrored variables with aggregation NONE, and TensorFlow applies
  a replica's assign in replica context to that replica's own copy, so the copies diverge as the
  reference's per-device states do; reading them outside a replica (checkpoints, weight averaging,
  export) gives replica 0's copy, as the reference's `jl_utils.get_first`. With several replicas the
  step then depends on how the batch is cut into device batches, as the reference's does.
- `--sync-batch-norm`: moments over the global batch (Keras's `synchronized=True`), so the distributed
  step computes what the single-device step computes on the whole batch; the attack's steps are then
  unrolled (no all-reduce inside a while loop).

Each replica trains on one consecutive block of the global batch (tf.distribute's rebatching of a
batched dataset); the pipelines lay out each block as the reference lays out a device batch, and the
mixing augmentations draw per block (`tfrobust.data.mixing`, `tfrobust.augment.batch_augmentation`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from tfrobust.attacks.init import Init
from tfrobust.data.pipeline import check_device_batches
from tfrobust.errors import UserError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`auto`: every local GPU mirrored when there are several, else one device."""
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multi-worker needs the TF_CONFIG environment variable (cluster and task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        # Every local GPU; on a machine without GPUs, every logical CPU device (one unless configured,
        # which is how the tests run two replicas on a CPU).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    # One device: TensorFlow's default strategy (it places work on the first GPU when there is one);
    # OneDeviceStrategy adds per-step overhead for nothing.
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """True unless TF_CONFIG names this process as a non-chief worker (only the chief writes files)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster


def check_batch_size(batch_size: int, replicas: int, repeats: int = 1) -> None:
    """The global batch must cut into `replicas` device batches, each holding whole augmentation repeats."""
    check_device_batches(batch_size, replicas, repeats)


@dataclasses.dataclass(frozen=True)
class ReplicaShardedInit:
    """Wraps an attack init so each replica gets its rows of the start drawn for the global batch.

    The inner init is evaluated on the local images tiled `replicas` times (the noise depends on the
    images only through the final clip, per element), and the replica keeps the rows of its slot.
    Costs `replicas` times a cheap noise draw; buys replica-count-independent training.
    """

    inner: Init
    replicas: int

    def __call__(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        local = tf.shape(x)[0]
        tiled = tf.tile(x, tf.concat([[self.replicas], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0))
        start = self.inner(tiled, seed)
        return start[replica * local : (replica + 1) * local]


def accelerator_present() -> bool:
    """Whether TensorFlow sees a GPU or TPU."""
    return any(d.device_type in ("GPU", "TPU") for d in tf.config.list_logical_devices())


def resolve_jit_compile(mode: str, *, replicas: int = 1, synchronized_bn: bool = False) -> bool:
    """`--jit-compile`: on, off, or auto (on where an accelerator is present).

    XLA fuses the step's elementwise work (BatchNorm, Swish, the attack's Adam and projection) into the
    convolutions' neighbours, which pays on GPUs and TPUs; on CPUs its backend does not call oneDNN's
    convolutions and the step runs several times slower (docs/xla.md has the measurements). With several
    replicas each compiles its own step (`AdversarialTrainer(xla_per_replica=True)`), which rules out
    synchronised BatchNorm: its all-reduce would sit inside the per-device program.
    """
    if mode == "off":
        return False
    cross_device_bn = synchronized_bn and replicas > 1
    if mode == "auto":
        return accelerator_present() and not cross_device_bn
    if cross_device_bn:
        raise UserError(
            "--jit-compile on cannot compile a step with --sync-batch-norm on several devices (the moments are "
            "all-reduced inside it): use per-replica BatchNorm (the default) or --jit-compile off"
        )
    return True
