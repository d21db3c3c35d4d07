"""Run by tests/training/test_precision.py in a fresh process: two logical CPU devices must exist before
TensorFlow initialises. A mixed_float16 TRADES trainer under MirroredStrategy takes a finite step, then a
step whose second replica has an infinite gradient; prints a JSON report of both."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: support
from support import tiny_conv_bn_network  # noqa: E402

from tfrobust.training.faults import NONFINITE_KEY  # noqa: E402
from tfrobust.training.optimizers import TraceSGD  # noqa: E402
from tfrobust.training.trainer import AdversarialTrainer  # noqa: E402


class SecondReplicaOverflows(AdversarialTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.poison = tf.Variable(False, trainable=False)

    def loss_and_gradients(self, images, labels):
        out = super().loss_and_gradients(images, labels)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        hit = tf.logical_and(self.poison, tf.equal(replica, 1))
        first = out["gradients"][0]
        out["gradients"] = [tf.where(hit, tf.fill(tf.shape(first), np.inf), first), *out["gradients"][1:]]
        return out


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
keras.mixed_precision.set_global_policy("mixed_float16")
with strategy.scope():
    network = tiny_conv_bn_network()
    trainer = SecondReplicaOverflows(network, eps=0.1, attack_steps=2, seed=1)
    trainer.compile(optimizer=TraceSGD(0.1, momentum=0.9))
    trainer.optimizer.build(network.trainable_variables)
keras.mixed_precision.set_global_policy("float32")

rng = np.random.default_rng(0)
images = rng.uniform(size=(8, 6, 6, 1)).astype(np.float32)
labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
data = tf.data.Dataset.from_tensors((images, labels)).repeat()
report = {"replicas": strategy.num_replicas_in_sync}
recorded = {}


class Record(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        recorded["nonfinite"] = float(np.sum(logs.get(NONFINITE_KEY, np.nan)))


for name, poison in (("finite_step", False), ("overflow_step", True)):
    trainer.poison.assign(poison)
    before = [np.array(w.numpy()) for w in network.trainable_weights]
    trainer.fit(data, epochs=1, steps_per_epoch=1, verbose=0, callbacks=[Record()])
    after = [np.array(w.numpy()) for w in network.trainable_weights]
    report[name] = {
        "nonfinite": recorded["nonfinite"],
        "scale": float(trainer.optimizer.dynamic_scale.numpy()),
        "iterations": int(trainer.optimizer.iterations.numpy()),
        "weights_moved": any(not np.array_equal(a, b) for a, b in zip(before, after)),
    }
    report[name + "_weights_finite"] = all(np.isfinite(w).all() for w in after)
print("REPORT " + json.dumps(report))
