"""`tfrobust benchmark`: what a training run costs on this hardware, measured before the run.

Builds the run `tfrobust train` would build for the same options (model, batch, precision, strategy,
XLA, augmentations, attack, optimizer: `training.run.build_run`), feeds it batches through the same
pipeline (`training.run.training_stream`) and Keras `fit`, and times the steps after warm-up. The
images are synthetic, of the dataset's shape (CIFAR, SVHN: nothing is downloaded) or the dataset itself
where it is on disk (digits, npz:PATH). Reported:

- images/s and seconds per step (median of the timed steps; each step is waited for);
- model FLOP utilisation: the network's forward FLOPs, counted by TensorFlow's profiler on its graph,
  times the step's forward-equivalents per image (TRADES-K: 1 + 2K + 6, the attack's backward pass to the
  input only; `docs/xla.md`), over the device's peak: a datasheet value for known accelerators in the
  step's compute precision (`PEAK_TFLOPS`), else a matmul measured here;
- peak memory (the GPU allocator's peak, or the process's peak resident memory on CPUs);
- the projected time of the whole run: its optimizer steps (`epochs` of the full training set, as
  `tfrobust train` counts them) times the median step; model selection's PGD-40 passes are not included.

With `eval_attack` (`--eval-attack aa`), also what `tfrobust eval --attack aa` costs on this hardware
(`attack_cost`): the seconds of one batch of each stage, after a warm-up batch, when every point of the
batch survives the stage, which is a stage's whole budget (APGD's iterations over every target and restart,
FAB's, Square's queries). Broken points leave a stage early, so with a real model each stage costs at
most this, and the projection to 10,000 images (a CIFAR test set) is an upper bound.

    tfrobust benchmark --preset cifar10-wrn-28-10-cutmix --precision mixed_bfloat16
    tfrobust benchmark --model wrn-16-4 --batch-size 128 --steps 5 --json bench.json
    tfrobust benchmark --model wrn-28-10 --eval-attack aa --eval-batch-size 512
"""

from __future__ import annotations

import dataclasses
import platform
import resource
import tempfile
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tfrobust.config import TrainConfig
from tfrobust.errors import UserError

if TYPE_CHECKING:
    from tfrobust.data.datasets import DatasetInfo

# Dense peak TFLOP/s by device name (vendor datasheets), for the compute precision of a step: bf16 under
# mixed_bfloat16, and for float32 the TensorFloat-32 rate where TensorFlow uses it for float32
# convolutions by default (Ampere and later), the plain float32 rate before. Unlisted devices and
# precisions (mixed_float16 everywhere): a matmul measured on the device in the compute dtype.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"mixed_bfloat16": 989.4, "float32": 494.7},
    "H100 PCIe": {"mixed_bfloat16": 756.0, "float32": 378.0},
    "H100": {"mixed_bfloat16": 989.4, "float32": 494.7},
    "A100": {"mixed_bfloat16": 312.0, "float32": 156.0},
    "L4": {"mixed_bfloat16": 121.0, "float32": 60.0},
    "V100": {"float32": 15.7},  # no bfloat16 units
    "T4": {"float32": 8.1},
    "TPU v4": {"mixed_bfloat16": 275.0},
    "TPU v5 lite": {"mixed_bfloat16": 197.0},
    "TPU v5p": {"mixed_bfloat16": 459.0},
}


def forward_equivalents(loss: str, attack_steps: int) -> int:
    """Forward passes per image of one training step (a backward pass costs two).

    TRADES-K: clean forward 1, K attack steps of a forward and a backward to the input (3 each, of which
    the backward's weight half is not computed: 2), adversarial forward 1, the backward through both
    logit sets 4: 1 + 2K + 6 - 1 = 2K + 7, 27 for K = 10 (`benchmarks/flops.py`, "input" convention).
    PGD-AT-K: 2K + 1 + 2 (no clean pass). Standard: 3.
    """
    if loss == "standard":
        return 3
    if loss == "pgd-at":
        return 2 * attack_steps + 3
    return 2 * attack_steps + 7


def forward_flops(network, image_shape: tuple[int, ...]) -> int:
    """FLOPs of one inference forward pass of `network` on one image, counted by TensorFlow's profiler."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(lambda x: network(x, training=False), autograph=False).get_concrete_function(
        tf.TensorSpec([1, *image_shape], tf.float32)
    )
    from tensorflow.python.util import deprecation

    with deprecation.silence():  # the profiler is a TF1 API; its notice is not for the user
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        graph = convert_variables_to_constants_v2(concrete).graph
        return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def device_peak(precision: str) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for the first accelerator, or the CPU's measured matmul rate."""
    import tensorflow as tf

    for kind in ("GPU", "TPU"):
        devices = tf.config.list_physical_devices(kind)
        if devices:
            name = tf.config.experimental.get_device_details(devices[0]).get("device_name", "") or kind
            for key, peaks in PEAK_TFLOPS.items():  # the more specific names come first
                if key in name and precision in peaks:
                    return peaks[precision] * 1e12, f"{name}: datasheet dense {precision} peak"
            return measured_matmul_peak(precision), f"{name}: measured matmul"
    return measured_matmul_peak(precision), f"{cpu_name()}: measured 2048^3 matmul"


# /proc/cpuinfo fields that tell CPU generations apart, and how `cpu_name` labels them.
_CPUINFO_NUMBERS = (("cpu family", "family"), ("model", "model"), ("stepping", "stepping"))


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name as `lscpu` shows it, with family, model and stepping where /proc/cpuinfo gives
    them ("AMD EPYC (family 26, model 2, stepping 1)"): a virtual machine's model name alone ("AMD EPYC",
    "Intel(R) Xeon(R) Processor") does not tell one CPU generation from another, and speeds differ
    between them. The architecture where there is no `cpuinfo` file.

    Example::

        print(cpu_name())  # "Intel(R) Xeon(R) Processor (family 6, model 207, stepping 2)"
    """
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor's block describes them all
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    numbers = [f"{label} {fields[key]}" for key, label in _CPUINFO_NUMBERS if fields.get(key)]
    return f"{name} ({', '.join(numbers)})" if numbers else name


def measured_matmul_peak(precision: str, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a square matmul in the step's compute dtype on the default device."""
    import tensorflow as tf

    dtype = {"mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}.get(precision, tf.float32)
    a = tf.cast(tf.random.uniform((size, size)), dtype)
    b = tf.cast(tf.random.uniform((size, size)), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    float(matmul())
    start = time.perf_counter()
    for _ in range(repeats):
        float(matmul())
    return 2.0 * size**3 * repeats / (time.perf_counter() - start)


def peak_memory_gib() -> tuple[float, str]:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30, "GPU:0 allocator peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak resident memory"


# The radius at which `attack_cost` attacks: far below any pixel step (1/255), so no point of a network with
# random logits breaks and every stage runs its whole budget; the work of a stage does not depend on it.
SURVIVING_EPS = 1e-6
# The evaluation set `attack_cost` projects to: a CIFAR test set.
PROJECTED_EVAL_IMAGES = 10_000


def benchmark(
    config: TrainConfig,
    *,
    steps: int = 5,
    warmup: int = 2,
    eval_attack: str | None = None,
    eval_batch_size: int = 256,
    progress=print,
) -> dict[str, Any]:
    """Times `config`'s training step, and with `eval_attack` one batch of each of its stages (see the
    module docstring); returns the JSON-able result."""
    import keras
    import tensorflow as tf

    from tfrobust.data.datasets import load_dataset, synthetic_splits
    from tfrobust.training.run import build_run, training_stream
    from tfrobust.training.schedules import steps_after_epochs

    if steps < 1 or warmup < 0:
        raise UserError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    if eval_attack is not None:
        from tfrobust.evaluation.versions import resolve_attack

        resolve_attack(eval_attack)  # a bad name is refused before minutes of timing
        if eval_batch_size < 1:
            raise UserError(f"--eval-batch-size must be >= 1, got {eval_batch_size}")
    config = dataclasses.replace(config, eval_every=0, extra_data=()).validate().resolved()
    n_images = config.batch_size * 2
    if config.dataset.startswith("npz:") or config.dataset == "digits":
        splits = load_dataset(config.dataset, val_size=0, seed=config.seed, data_dir=config.data_dir)
        source, epoch_examples = f"{config.dataset} (on disk)", len(splits.train)
    else:
        splits, epoch_examples = synthetic_splits(config.dataset, n_images, seed=config.seed)
        source = f"synthetic images of {config.dataset}'s shape"
    run = build_run(config, tempfile.mkdtemp(prefix="tfrobust-benchmark-"), splits=splits)
    replicas = run.strategy.num_replicas_in_sync
    data, _ = training_stream(
        config, run.splits, None, replicas=replicas, first_epoch=0, steps_per_epoch=run.data_pass_steps
    )

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step
            times.append(time.perf_counter() - self.start)
            progress(
                f"step {len(times)}/{warmup + steps}: {times[-1]:.3f} s"
                + ("  (warm-up)" if len(times) <= warmup else "")
            )

    run.trainer.fit(data, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Timer()])
    timed = np.asarray(times[warmup:])
    seconds = float(np.median(timed))
    images_per_second = config.batch_size / seconds
    info = run.splits.info
    forward = forward_flops(run.trainer.network, info.image_shape)
    per_image = forward * forward_equivalents(config.loss, config.attack_steps)
    peak, peak_source = device_peak(config.precision)
    memory, memory_source = peak_memory_gib()
    total_steps = steps_after_epochs(config.epochs, epoch_examples, config.batch_size)
    result = {
        "config": {
            k: getattr(config, k)
            for k in (
                "model",
                "loss",
                "attack_steps",
                "batch_size",
                "precision",
                "strategy",
                "jit_compile",
                "aug",
                "aug_repeats",
                "epochs",
            )
        },
        "data": source,
        "replicas": replicas,
        "xla": bool(run.trainer.jit_compile or run.trainer.xla_per_replica),
        "devices": [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "TPU")] or ["CPU"],
        "cpu": cpu_name(),
        "tensorflow": tf.__version__,
        "warmup_steps": warmup,
        "step_seconds": [round(t, 5) for t in timed.tolist()],
        "seconds_per_step": seconds,
        "images_per_second": images_per_second,
        "forward_flops_per_image": forward,
        "forward_equivalents_per_image": forward_equivalents(config.loss, config.attack_steps),
        "achieved_tflops": per_image * images_per_second / 1e12,
        "peak_tflops": peak / 1e12,
        "peak_source": peak_source,
        "mfu": per_image * images_per_second / peak,
        "peak_memory_gib": memory,
        "memory_source": memory_source,
        "run_steps": total_steps,
        "projected_run_hours": total_steps * seconds / 3600,
    }
    if eval_attack is not None:
        result["eval"] = attack_cost(config, info, eval_attack, batch_size=eval_batch_size, progress=progress)
    return result


def attack_cost(
    config: TrainConfig, info: DatasetInfo, attack: str, *, batch_size: int = 256, progress=print
) -> dict[str, Any]:
    """Seconds per batch of each stage of `tfrobust eval --attack ATTACK` on `config`'s network, when every
    point survives the stage (the module docstring), and the projection to `PROJECTED_EVAL_IMAGES` images.

    The network is evaluated as `tfrobust eval` evaluates an export: float32, inference mode, TensorFloat-32
    off, XLA as `--jit-compile auto` resolves it. Its weights are the initial ones with a random logits
    layer (the initial one is zero, and every class would tie); the labels are its own predictions, so
    every point starts correct, and the radius is `SURVIVING_EPS` at `config.norm`.

    Example::

        cost = attack_cost(make_config(None, {"model": "wrn-10-1", "dataset": "digits"}).resolved(),
                           load_dataset("digits").info, "apgd-ce", batch_size=64)
        cost["seconds_per_batch"]["apgd-ce"]
    """
    import tensorflow as tf

    from tfrobust.evaluation import Evaluator, resolve_jit_compile
    from tfrobust.evaluation.engine import keras_logits_fn
    from tfrobust.evaluation.versions import resolve_attack
    from tfrobust.training.run import float32_network

    stages = resolve_attack(attack)
    network = float32_network(config, info)  # as an evaluated export
    rng = np.random.default_rng(config.seed)
    head = network.get_layer("logits")
    head.kernel.assign(rng.normal(0.0, 1.0 / np.sqrt(head.kernel.shape[0]), head.kernel.shape).astype(np.float32))
    images = rng.uniform(0.0, 1.0, (batch_size, *info.image_shape)).astype(np.float32)
    logits_fn = keras_logits_fn(network)
    labels = np.asarray(logits_fn(tf.constant(images))).argmax(axis=-1)
    data = tf.data.Dataset.from_tensors((images, np.eye(info.num_classes, dtype=np.float32)[labels]))
    jit = resolve_jit_compile("auto")
    evaluator = Evaluator(stages, norm=config.norm, eps=SURVIVING_EPS, jit_compile=jit)
    progress(f"eval {attack}: a warm-up batch of {batch_size} (tracing{', XLA compilation' if jit else ''})")
    evaluator.run(logits_fn, data)
    progress(f"eval {attack}: the timed batch")
    timed = evaluator.run(logits_fn, data, seed=1)
    per_batch = dict(zip(stages, (float(s) for s in timed.stage_seconds)))
    batches = -(-PROJECTED_EVAL_IMAGES // batch_size)
    return {
        "attack": attack,
        "stages": list(stages),
        "batch_size": batch_size,
        "norm": config.norm,
        "jit_compile": jit,
        "seconds_per_batch": per_batch,
        "images_per_second": {stage: batch_size / s for stage, s in per_batch.items()},
        "points_attacked": int(timed.clean_correct.sum()),
        "points_broken": int(timed.clean_correct.sum() - timed.robust.sum()),
        "projected_images": PROJECTED_EVAL_IMAGES,
        "projected_seconds_at_most": batches * sum(per_batch.values()),
    }


def table(result: dict[str, Any]) -> str:
    """The readable summary printed by `tfrobust benchmark`."""
    c = result["config"]
    rows = [
        (
            "step",
            f"{c['model']} {c['loss']}-{c['attack_steps']}, batch {c['batch_size']}, {c['precision']}, "
            f"XLA {'on' if result['xla'] else 'off'}, {result['replicas']} replica(s), aug {c['aug']}",
        ),
        ("data", result["data"]),
        ("images/s", f"{result['images_per_second']:.1f}"),
        ("seconds/step", f"{result['seconds_per_step']:.3f} (median of {len(result['step_seconds'])})"),
        (
            "MFU",
            f"{100 * result['mfu']:.1f}% of {result['peak_tflops']:.3g} TFLOP/s ({result['peak_source']}); "
            f"{result['achieved_tflops']:.2f} TFLOP/s at {result['forward_equivalents_per_image']} forwards "
            f"of {result['forward_flops_per_image'] / 1e9:.3g} GFLOP per image",
        ),
        ("peak memory", f"{result['peak_memory_gib']:.2f} GiB ({result['memory_source']})"),
        (
            "whole run",
            f"{result['run_steps']} steps ({c['epochs']} epochs): {result['projected_run_hours']:.1f} h "
            "on this hardware, model selection not included",
        ),
    ]
    if "eval" in result:
        e = result["eval"]
        stages = ", ".join(f"{stage} {s:.2f} s" for stage, s in e["seconds_per_batch"].items())
        rows += [
            (
                f"eval {e['attack']}",
                f"per batch of {e['batch_size']} ({e['norm']}, XLA {'on' if e['jit_compile'] else 'off'}): {stages}",
            ),
            (
                "eval, projected",
                f"at most {e['projected_seconds_at_most'] / 60:.1f} min for {e['projected_images']:,} images "
                "(every point surviving every stage)"
                + (f"; {e['points_broken']} point(s) broke, so not a bound" if e["points_broken"] else ""),
            ),
        ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
