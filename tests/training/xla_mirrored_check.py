"""Run by tests/training/test_xla.py in a fresh process (two logical CPU devices must exist before TensorFlow
initialises, and one process holds one mirrored step): three mirrored training steps with
`--jit-compile` given as argv[2]; the weights and weight averages go to the npz argv[3]."""

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
from tfrobust.training.run import build_run, training_stream  # noqa: E402

npz, jit, out = sys.argv[1:4]
config = make_config(
    None,
    dict(
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
        strategy="mirrored",
        jit_compile=jit,
    ),
).resolved()
splits = load_dataset(config.dataset, val_size=64, seed=0)
run = build_run(config, tempfile.mkdtemp(), splits=splits)
data, _ = training_stream(config, run.splits, None, replicas=2, first_epoch=0, steps_per_epoch=3)
history = run.trainer.fit(data, epochs=1, steps_per_epoch=3, verbose=0, callbacks=[run.averaging])
arrays = {f"w{i}": np.asarray(w.numpy()) for i, w in enumerate(run.averaging.network.weights)}
arrays.update({f"a{i}": np.asarray(v.numpy()) for i, v in enumerate(run.averaging.averages)})
np.savez(out, **arrays)
print(
    "REPORT "
    + json.dumps(
        {
            "replicas": run.strategy.num_replicas_in_sync,
            "keras_jit": bool(run.trainer.jit_compile),
            "xla_per_replica": run.trainer.xla_per_replica,
            "loss": history.history["loss"][-1],
        }
    )
)
