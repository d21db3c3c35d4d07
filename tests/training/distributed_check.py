"""Run by tests/training/test_distribute.py in a fresh process: two logical CPU devices must exist before
TensorFlow initialises. Trains the same steps on one device and mirrored on two, prints a JSON report."""

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
from tfrobust.data.datasets import load_dataset  # noqa: E402
from tfrobust.data.pipeline import train_dataset  # noqa: E402
from tfrobust.errors import UserError  # noqa: E402
from tfrobust.training.run import build_run  # noqa: E402

npz = sys.argv[1]
report = {}
# Synchronised BatchNorm (--sync-batch-norm): the mirrored step then computes the one-device step.
base = dict(
    dataset=f"npz:{npz}",
    model="wrn-10-1",
    batch_size=32,
    epochs=2,
    val_size=64,
    eval_every=0,
    attack_steps=3,
    warmup_epochs=1,
    eps=0.1,
    ema_decay=0.9,
    sync_batch_norm=True,
    aug_repeats=1,
)
splits = load_dataset(base["dataset"], val_size=64, seed=0)
states = {}
for strategy in ("one-device", "mirrored"):
    config = make_config(None, dict(base, strategy=strategy)).resolved()
    run = build_run(config, tempfile.mkdtemp(), splits=splits)
    report[f"replicas_{strategy}"] = run.strategy.num_replicas_in_sync
    data = train_dataset(
        splits.train, num_classes=10, batch_size=32, seed=0, first_epoch=0, steps_per_epoch=3, augment=None
    )
    history = run.trainer.fit(data, epochs=1, steps_per_epoch=3, verbose=0, callbacks=[run.averaging])
    states[strategy] = {
        "weights": [np.asarray(w.numpy()) for w in run.averaging.network.weights],
        "averages": [np.asarray(v.numpy()) for v in run.averaging.averages],
        "loss": history.history["loss"][-1],
    }
a, b = states["one-device"], states["mirrored"]
report["max_weight_diff"] = max(float(np.abs(x - y).max()) for x, y in zip(a["weights"], b["weights"]))
report["max_average_diff"] = max(float(np.abs(x - y).max()) for x, y in zip(a["averages"], b["averages"]))
report["loss"] = [a["loss"], b["loss"]]
try:
    build_run(
        make_config(None, dict(base, strategy="mirrored", batch_size=33)).resolved(), tempfile.mkdtemp(), splits=splits
    )
    report["indivisible_batch_error"] = None
except UserError as error:
    report["indivisible_batch_error"] = str(error)
print("REPORT " + json.dumps(report))
