"""Run by tests/training/test_distribute.py in a fresh process (two logical CPU devices must exist before TensorFlow
initialises): per-replica BatchNorm (the default, the reference's) against synchronised BatchNorm under
MirroredStrategy, the run's wiring of `sync_batch_norm`, and which rows each replica trains on.
Prints a JSON report.

`layer` mode: one BatchNorm layer both ways, and the rows of each replica. `run NPZ` mode: the run's
wiring and a training step with per-replica BatchNorm. Separate processes: collective ops of differently
built mirrored steps in one process collide in TensorFlow's collective instance keys."""

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from tfrobust.config import make_config  # noqa: E402
from tfrobust.data.datasets import Split, load_dataset  # noqa: E402
from tfrobust.data.pipeline import train_dataset  # noqa: E402
from tfrobust.models.batch_norm import BatchNorm, batch_norm_layers  # noqa: E402
from tfrobust.training.run import build_run, training_stream  # noqa: E402

report = {}
mode = sys.argv[1]
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])

# One BatchNorm layer; a batch of 8 rows whose two halves (one per replica) differ in distribution.
rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(-1.0, 0.5, (4, 3, 3, 2)), rng.normal(2.0, 2.0, (4, 3, 3, 2))]).astype(np.float32)
GAMMA = np.float32([1.5, 0.5])
BETA = np.float32([0.1, -0.2])
EPS, MOMENTUM = 1e-5, 0.9


def make_layer(synchronized: bool) -> BatchNorm:
    layer = BatchNorm(momentum=MOMENTUM, epsilon=EPS, synchronized=synchronized)
    layer.build((None, 3, 3, 2))
    layer.gamma.assign(GAMMA)
    layer.beta.assign(BETA)
    return layer


def one_device_moving(rows: np.ndarray) -> list:
    """Moving statistics a fresh single-device layer holds after one training call on `rows`."""
    layer = make_layer(False)
    layer(tf.constant(rows), training=True)
    return [layer.moving_mean.numpy().tolist(), layer.moving_variance.numpy().tolist()]


def layer_mode() -> None:
    for synchronized in (False, True):
        with strategy.scope():
            layer = make_layer(synchronized)
        data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(X))

        @tf.function
        def step(batch):
            # Called within this iteration only: the loop variable is the layer meant.
            return strategy.run(lambda rows: layer(rows, training=True), args=(batch,))  # noqa: B023

        out = np.concatenate([t.numpy() for t in strategy.experimental_local_results(step(next(iter(data))))])
        key = "sync" if synchronized else "per_replica"
        report[f"{key}_output"] = out.tolist()
        for name in ("moving_mean", "moving_variance"):
            variable = getattr(layer, name)
            copies = strategy.experimental_local_results(variable.value)
            report[f"{key}_{name}_copies"] = [v.numpy().tolist() for v in copies]
            report[f"{key}_{name}_read"] = variable.numpy().tolist()
    report["x"], report["gamma"], report["beta"], report["eps"] = X.tolist(), GAMMA.tolist(), BETA.tolist(), EPS
    report["one_device_moving_halves"] = [one_device_moving(X[:4]), one_device_moving(X[4:])]
    report["one_device_moving_whole"] = one_device_moving(X)

    # Replica k trains on the k-th consecutive block of the global batch (the device batch the pipelines
    # lay out): tagged images, 16 rows, 4 repeats, 2 replicas.
    tags = np.arange(64, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
    split = Split(images=tags, labels=np.zeros(64, np.int64))
    ds = train_dataset(
        split,
        num_classes=2,
        batch_size=16,
        seed=0,
        first_epoch=0,
        steps_per_epoch=2,
        augment=None,
        repeats=4,
        devices=2,
    )
    global_batch = next(iter(ds))[0].numpy()
    local = strategy.experimental_local_results(next(iter(strategy.experimental_distribute_dataset(ds)))[0])
    report["replica_rows_are_blocks"] = all(
        np.array_equal(local[k].numpy(), global_batch[8 * k : 8 * (k + 1)]) for k in range(2)
    )


def run_mode(npz: str) -> None:
    """The run's wiring of sync_batch_norm, and training steps with per-replica BatchNorm."""
    base = dict(
        dataset=f"npz:{npz}",
        model="wrn-10-1",
        batch_size=32,
        epochs=1,
        val_size=64,
        eval_every=0,
        attack_steps=2,
        warmup_epochs=1,
        eps=0.1,
        ema_decay=0.9,
        strategy="mirrored",
        aug="padcrop",
    )
    splits = load_dataset(base["dataset"], val_size=64, seed=0)
    # The synchronised run is only built: distributed_check.py trains it against one device.
    for sync in (True, False):
        config = make_config(None, dict(base, sync_batch_norm=sync)).resolved()
        run = build_run(config, tempfile.mkdtemp(), splits=splits)
        layers = batch_norm_layers(run.trainer.network)
        key = "sync" if sync else "per_replica"
        report[f"{key}_layers_synchronized"] = sorted({bool(layer.synchronized) for layer in layers})
        report[f"{key}_attack_unrolled"] = bool(run.trainer.attack.unroll)
        if sync:
            continue
        data, _ = training_stream(config, run.splits, None, replicas=2, first_epoch=0, steps_per_epoch=2)
        history = run.trainer.fit(data, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[run.averaging])
        report[f"{key}_loss"] = history.history["loss"][-1]
        copies = [run.strategy.experimental_local_results(layer.moving_mean.value) for layer in layers]
        report[f"{key}_max_copy_difference"] = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in copies)


if mode == "layer":
    layer_mode()
else:
    run_mode(sys.argv[2])
print("REPORT " + json.dumps(report))
