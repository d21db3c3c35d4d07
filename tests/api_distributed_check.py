"""Run by tests/test_api.py in a fresh process (two logical CPU devices must exist before TensorFlow
initialises): `AdversarialTrainer` on a user model with plain keras BatchNormalization under
MirroredStrategy, per replica and synchronised. Prints a JSON report: each replica's adversarial rows and
its copy of the first BatchNorm's moving statistics after one step."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfrobust  # noqa: E402

MOMENTUM = 0.5
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
rng = np.random.default_rng(0)
# Two halves (one per replica) that differ in distribution.
X = np.concatenate([rng.uniform(0.1, 0.4, (4, 8, 8, 3)), rng.uniform(0.5, 0.9, (4, 8, 8, 3))]).astype(np.float32)
Y = rng.integers(0, 5, 8)


def make_model(synchronized: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(momentum=MOMENTUM, synchronized=synchronized, name="bn_input")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.BatchNormalization(momentum=MOMENTUM, synchronized=synchronized)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x))


report = {}
for synchronized in (False, True):
    key = "sync" if synchronized else "per_replica"
    with strategy.scope():
        model = make_model(synchronized)
        trainer = tfrobust.AdversarialTrainer(model, eps=0.1, attack_steps=2)
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    report[f"{key}_attack_unrolled"] = bool(trainer.attack.unroll)
    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((X, Y)))

    @tf.function
    def step(batch, trainer=trainer):
        return strategy.run(
            lambda x, y: trainer.loss_and_gradients(*trainer.prepare_batch((x, y)))["adv_images"], args=batch
        )

    adv = strategy.experimental_local_results(step(next(iter(data))))
    report[f"{key}_adv"] = [a.numpy().tolist() for a in adv]
    bn = model.get_layer("bn_input")
    report[f"{key}_mean"] = [v.numpy().tolist() for v in strategy.experimental_local_results(bn.moving_mean.value)]
    report[f"{key}_var"] = [v.numpy().tolist() for v in strategy.experimental_local_results(bn.moving_variance.value)]
    averaging = tfrobust.callbacks.WeightAveraging(decay=0.5)  # created in fit, under the model's strategy
    history = trainer.fit(tf.data.Dataset.from_tensors((X, Y)).repeat(2), epochs=1, verbose=0, callbacks=[averaging])
    report.setdefault("fit_loss", []).append(history.history["loss"][-1])
    report.setdefault("averaging_updates", []).append(int(averaging.num_updates.numpy()))
    report.setdefault("averages_mirrored", []).append(
        len(strategy.experimental_local_results(averaging.averages[0].value)) == 2
    )
print("REPORT " + json.dumps(report))
