"""Export tfrobust's XLA-compiled TRADES train step as an HLO program that runs without TensorFlow.

XLA is the common ground between TensorFlow and JAX: the step `tfrobust train` runs (`AdversarialTrainer.
train_step`: clean pass with frozen BatchNorm statistics, the 10-step Adam attack on KL(clean || adv),
the adversarial pass that updates the statistics, TRADES loss + coupled weight decay, the optimizer
update, the metric trackers), traced with `jit_compile=True`, is lowered by TensorFlow's tf2xla bridge to
an HLO module (`experimental_get_compiler_ir(...)(stage="hlo_serialized")`). `xla_run.py` compiles that
module with the XLA client in JAX on whatever device JAX sees (an NVIDIA GPU, or the CPU in tests) and
times it. Only the compiled program travels: the runner draws random weights of the recorded shapes
where it runs, or, with `--values`, takes TensorFlow's own inputs and checks the outputs of one step
against TensorFlow's.

Program contract (the JSON beside the `.hlo.pb`): parameters are the images, the one-hot labels, then
every variable the step reads (network weights, BatchNorm moving statistics, optimizer state and
iteration counter, metric accumulators) in the order TensorFlow captures them; the outputs start with
the step's metrics (loss, ce, clean_accuracy, kl, adv_accuracy) followed by the new value of every
variable, in the parameter order (the step returns them explicitly, so the runner needs no knowledge of
tf2xla's resource-update layout; the trailing resource-update outputs are ignored).

    python benchmarks/xla_export.py --model wrn-28-10 --batch-size 512 --precision mixed_bfloat16 --out xla/wrn28_bf16
    python benchmarks/xla_export.py --model wrn-10-1 --batch-size 8 --values --out xla/wrn10_check
    python benchmarks/xla_run.py xla/wrn28_bf16 --steps 10        # on the GPU machine: JAX + numpy only

The export needs no accelerator: the HLO is device-independent before XLA's optimisation passes, which
run where the program is compiled. Runtime: seconds for WRN-10-1, about a minute for WRN-70-16 (2 CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfrobust  # noqa: E402,F401  (before TensorFlow: tfrobust sets oneDNN on)
from tfrobust.attacks.pgd import trades_attack  # noqa: E402
from tfrobust.config import DEFAULT_EPS  # noqa: E402
from tfrobust.models.registry import build_model  # noqa: E402
from tfrobust.training.optimizers import TraceSGD  # noqa: E402
from tfrobust.training.trainer import AdversarialTrainer  # noqa: E402

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
METRICS = ("loss", "ce", "clean_accuracy", "kl", "adv_accuracy")


def build_step(
    model: str,
    batch_size: int,
    precision: str,
    attack_steps: int = 10,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    norm: str = "linf",
):
    """The trainer, a jit-compiled function `step(images, labels) -> (metrics, new variable values)`,
    and a synthetic batch. The trainer is built as `tfrobust train` builds it (TRADES, Linf 8/255 or L2
    128/255, SGD Nesterov 0.9 at the paper's peak learning rate for the batch)."""
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    network = build_model(
        model, input_shape=(image_size, image_size, 3), num_classes=num_classes, mean=CIFAR10_MEAN, std=CIFAR10_STD
    )
    trainer = AdversarialTrainer(
        network, loss="trades", attack=trades_attack(norm, DEFAULT_EPS[norm], num_steps=attack_steps), seed=seed
    )
    trainer.compile(optimizer=TraceSGD(max(0.1 * batch_size / 256, 0.1), momentum=0.9, nesterov=True))
    trainer.optimizer.build(network.trainable_variables)
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(size=(batch_size, image_size, image_size, 3)), tf.float32)
    labels = tf.one_hot(rng.integers(0, num_classes, batch_size), num_classes)
    variables = _unique(
        _tf_variable(v)
        for v in list(trainer.variables)
        + list(trainer.optimizer.variables)
        + [v for m in trainer.metrics for v in m.variables]
    )

    def step(x, y):
        metrics = trainer.train_step((x, y))
        return [metrics[name] for name in METRICS], [tf.identity(v) for v in variables]

    return trainer, tf.function(step, jit_compile=True), (images, labels), variables


def _tf_variable(variable) -> tf.Variable:
    """The `tf.Variable` behind a Keras variable (TensorFlow backend), or the variable itself."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _unique(variables) -> list:
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def export(
    out: str,
    model: str,
    batch_size: int,
    precision: str,
    attack_steps: int = 10,
    image_size: int = 32,
    values: bool = False,
    norm: str = "linf",
    pre_steps: int = 2,
) -> dict:
    """Writes `out.hlo.pb` and `out.json` (and, with `values`, `out.npz`: every parameter's value and
    the outputs of one TensorFlow step, non-XLA and XLA, for the runner's check). Returns the spec.

    The checked step starts after `pre_steps` TensorFlow steps: from the initial weights the logits layer
    is zero, so every gradient but the logits layer's would be zero and the check would test little.
    """
    trainer, step, (images, labels), variables = build_step(
        model, batch_size, precision, attack_steps, image_size, norm=norm
    )
    if values:
        for _ in range(pre_steps):
            trainer.train_step((images, labels))
    start = time.perf_counter()
    concrete = step.get_concrete_function(images, labels)
    hlo = step.experimental_get_compiler_ir(images, labels)(stage="hlo_serialized")
    lower_s = time.perf_counter() - start
    by_handle = {id(v.handle): v for v in variables}
    params = [_spec("images", images, "input"), _spec("labels", labels, "input")]
    captured = []
    for tensor in concrete.captured_inputs:
        variable = by_handle.get(id(tensor))
        if variable is None:
            raise RuntimeError(f"the step captures a tensor that is not one of the trainer's variables: {tensor!r}")
        params.append(_spec(variable.name, variable, "variable"))
        captured.append(variable)
    spec = {
        "format": "tfrobust-xla-step-1",
        "model": model,
        "batch_size": batch_size,
        "precision": precision,
        "attack_steps": attack_steps,
        "norm": norm,
        "image_size": image_size,
        "num_classes": int(labels.shape[-1]),
        "params": params,
        "metric_outputs": list(METRICS),
        "variable_outputs": [v.name for v in variables],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "lowering_seconds": lower_s,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".hlo.pb", "wb") as handle:
        handle.write(hlo)
    if values:
        inputs = [images.numpy(), labels.numpy()] + [v.numpy() for v in captured]
        arrays = {f"param_{i:04d}": value for i, value in enumerate(inputs)}
        initial = [v.numpy() for v in variables]
        metrics_xla, new_xla = step(images, labels)
        for v, value in zip(variables, initial):
            v.assign(value)
        plain = tf.function(step.python_function)
        metrics_tf, new_tf = plain(images, labels)
        for v, value in zip(variables, initial):
            v.assign(value)
        for prefix, metrics, new in (("tf_xla", metrics_xla, new_xla), ("tf", metrics_tf, new_tf)):
            for name, value in zip(METRICS, metrics):
                arrays[f"{prefix}_metric_{name}"] = value.numpy()
            for i, value in enumerate(new):
                arrays[f"{prefix}_var_{i:04d}"] = value.numpy()
        np.savez(out + ".npz", **arrays)
        spec["values"] = os.path.basename(out) + ".npz"
    with open(out + ".json", "w") as handle:
        json.dump(spec, handle, indent=1)
    return spec


def _spec(name: str, value, kind: str) -> dict:
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    entry = {"name": name, "kind": kind, "shape": list(array.shape), "dtype": str(array.dtype)}
    if kind == "variable":
        # What the runner draws where it runs: a normal of this mean and spread (constant when the spread
        # is 0: BatchNorm scales, counters, the learning rate, zero-initialised logits).
        entry["mean"] = float(array.astype(np.float64).mean()) if array.size else 0.0
        entry["std"] = float(array.astype(np.float64).std()) if array.size else 0.0
    return entry


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="wrn-28-10")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--precision", default="mixed_bfloat16", choices=["float32", "mixed_bfloat16"])
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument(
        "--norm",
        default="linf",
        choices=["linf", "l2"],
        help="the attack's threat model (l2's normalised-gradient steps are smooth in the gradient: "
        "the tight cross-device check; Linf's Adam steps take the sign of rounding-level gradients)",
    )
    p.add_argument("--values", action="store_true", help="also save inputs and TensorFlow's outputs (a check)")
    p.add_argument("--out", required=True, help="path prefix: writes PREFIX.hlo.pb, PREFIX.json (and PREFIX.npz)")
    args = p.parse_args(argv)
    spec = export(
        args.out,
        args.model,
        args.batch_size,
        args.precision,
        args.attack_steps,
        args.image_size,
        args.values,
        args.norm,
    )
    print(
        f"{args.out}.hlo.pb: {args.model} batch {args.batch_size} {args.precision}, "
        f"{len(spec['params'])} parameters, lowered in {spec['lowering_seconds']:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
