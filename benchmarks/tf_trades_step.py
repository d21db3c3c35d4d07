"""tfrobust's TRADES train-step throughput: images/s and model-FLOP utilisation (MFU).

Times `AdversarialTrainer.train_step` (the step `tfrobust train` runs: clean pass with frozen BatchNorm
statistics, 10-step Adam attack on KL(clean || adv), adversarial pass updating the statistics, TRADES loss
+ coupled weight decay, SGD Nesterov) on synthetic CIFAR-shaped data, traced once with `tf.function` as
`fit` does. The PyTorch equivalent is `torch_trades_step.py`; both count FLOPs with `flops.py`.

MFU = useful FLOP/s / peak FLOP/s with TRADES-10 = 27 forward-equivalents per image (an attack step is
a forward plus an input-gradient backward, 2F; see flops.py), against two peaks: the nominal one of
`flops.cpu_peak_flops` and the measured fp32 matmul rate of this machine (`--measure-peak`), which is
the honest ceiling when the nominal clock is unknown under a hypervisor.

    python benchmarks/tf_trades_step.py --model wrn-16-4 --batch-size 128 --json tf.json
    python benchmarks/tf_trades_step.py --model wrn-16-4 --batch-size 128 --precision mixed_bfloat16
    python benchmarks/tf_trades_step.py --model wrn-16-4 --batch-size 128 --swish-gradient unfused  # tf.nn.silu
    python benchmarks/tf_trades_step.py --model wrn-28-10 --batch-size 512 --precision mixed_bfloat16 --jit-compile  # GPU

Numbers measured with it are in benchmarks/README.md and docs/xla.md, with the hardware they came from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as tfrobust sets it (tfrobust/__init__.py)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flops  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrobust.attacks.pgd import trades_attack  # noqa: E402
from tfrobust.benchmark import cpu_name  # noqa: E402
from tfrobust.models import swish as swish_module  # noqa: E402
from tfrobust.models.registry import build_model  # noqa: E402
from tfrobust.training.optimizers import TraceSGD  # noqa: E402
from tfrobust.training.trainer import AdversarialTrainer  # noqa: E402

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def measure_matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large fp32 matmul: what this machine's BLAS actually sustains."""
    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul().numpy()
    return 2.0 * size**3 * repeats / (time.perf_counter() - start)


def measure_conv_peak(model: str, batch_size: int, image_size: int, attack_steps: int = 10, repeats: int = 10) -> dict:
    """FLOP/s of the network's 3x3 convolutions alone (stride 1, its three widths at their resolutions,
    float32, as oneDNN runs them): the forward pass, the input gradient and the filter gradient.

    Returns {"per_stage_gflops": forward rates, "conv_peak_gflops": the best forward rate,
    "per_stage_input_gradient_gflops", "per_stage_filter_gradient_gflops", "conv_ceiling_gflops"}. The
    ceiling is the rate of a step that did nothing but its convolutions, each kind at its measured speed:
    the step's forward-equivalents per image (`flops.trades_forward_equivalents`, "input"; 27 for
    TRADES-10) are 1 + `attack_steps` + 2 forward passes (the target, the attack steps, the two training
    passes), `attack_steps` + 2 input gradients and 2 filter gradients, each spread evenly over the three
    widths (a wide ResNet's stages have equal convolution FLOPs: half the side, twice the channels)."""
    _, width = flops.parse_wrn(model)
    rates = {"forward": [], "input": [], "filter": []}
    for stage, channels in enumerate((16 * width, 32 * width, 64 * width)):
        side = image_size // 2**stage
        x = tf.random.uniform((batch_size, side, side, channels))
        w = tf.random.uniform((3, 3, channels, channels))
        dy = tf.random.uniform((batch_size, side, side, channels))
        kernels = {
            "forward": tf.function(lambda x, w, dy: tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME"))),
            "input": tf.function(
                lambda x, w, dy: tf.reduce_sum(
                    tf.compat.v1.nn.conv2d_backprop_input(tf.shape(x), w, dy, [1, 1, 1, 1], "SAME")
                )
            ),
            "filter": tf.function(
                lambda x, w, dy: tf.reduce_sum(
                    tf.compat.v1.nn.conv2d_backprop_filter(x, tf.shape(w), dy, [1, 1, 1, 1], "SAME")
                )
            ),
        }
        for kind, kernel in kernels.items():
            kernel(x, w, dy)
            start = time.perf_counter()
            for _ in range(repeats):
                kernel(x, w, dy).numpy()
            seconds = (time.perf_counter() - start) / repeats
            rates[kind].append(2 * batch_size * side * side * 9 * channels * channels / seconds / 1e9)
    counts = {"forward": 1 + attack_steps + 2, "input": attack_steps + 2, "filter": 2}
    assert sum(counts.values()) == flops.trades_forward_equivalents(attack_steps, attack_backward="input")
    seconds_per_flop = sum(n * sum(1 / r for r in rates[kind]) / 3 for kind, n in counts.items())
    return {
        "per_stage_gflops": [round(r, 1) for r in rates["forward"]],
        "conv_peak_gflops": max(rates["forward"]),
        "per_stage_input_gradient_gflops": [round(r, 1) for r in rates["input"]],
        "per_stage_filter_gradient_gflops": [round(r, 1) for r in rates["filter"]],
        "conv_ceiling_gflops": sum(counts.values()) / seconds_per_flop,
    }


def op_time_by_type(logdir: str, top: int = 25) -> dict:
    """Kernel time per TensorFlow op type in the newest trace under `logdir` (its `*.xplane.pb`).

    Sums the duration of every TF op event of the host plane ("name:Type" events on the executor's
    threads), so with inter-op parallelism the total can exceed the wall time; the shares are of that
    total. An XLA-compiled cluster inside the graph (the fused Swish gradient, `tfrobust.models.swish`)
    runs as an XLA CPU executable, not as TF ops: its runs count as `XLA_CLUSTER`. Returns {"total_ms",
    "by_type": [[type, ms, share], ...] (largest first, the first `top`)}.
    """
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    traces = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not traces:
        raise SystemExit(f"--profile {logdir}: TensorFlow's profiler wrote no trace there")
    path = max(traces, key=os.path.getmtime)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as handle:
        space.ParseFromString(handle.read())
    totals: dict[str, float] = {}
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if name == "CpuExecutable::ExecuteAsyncOnStream":
                    totals["XLA_CLUSTER"] = totals.get("XLA_CLUSTER", 0.0) + event.duration_ps / 1e9
                    continue
                if ":" not in name or "::" in name or ": " in name:
                    continue  # TF op events are "op_name:OpType"; runtime scopes are "A::B" or "A: B"
                op_type = name.rsplit(":", 1)[1]
                totals[op_type] = totals.get(op_type, 0.0) + event.duration_ps / 1e9
    total = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return {"total_ms": total, "by_type": [[k, round(v, 2), round(v / total, 4)] for k, v in ranked]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="wrn-16-4")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--attack-steps", type=int, default=10)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing, first allocations)")
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    p.add_argument("--jit-compile", action="store_true", help="XLA (slower on CPU; the lever on GPU)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--measure-peak", action="store_true", help="also time a 2048^3 fp32 matmul")
    p.add_argument(
        "--measure-conv-peak",
        action="store_true",
        help="also time the network's 3x3 convolutions alone (forward, input and filter gradients)",
    )
    p.add_argument(
        "--swish-gradient",
        default="fused",
        choices=["fused", "unfused"],
        help="fused: the models' own Swish (one XLA kernel for its gradient, tfrobust.models.swish); unfused: "
        "tf.nn.silu's six-kernel gradient everywhere, for the comparison",
    )
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="after timing, trace 2 more steps with TensorFlow's profiler into DIR and add the op time by op type",
    )
    args = p.parse_args(argv)

    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(0)
    if args.swish_gradient == "unfused":
        swish_module.FUSED_MIN_ELEMENTS = 2**62  # no tensor is that large: tf.nn.silu throughout
    network = build_model(
        args.model,
        input_shape=(args.image_size, args.image_size, 3),
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )
    trainer = AdversarialTrainer(
        network, loss="trades", attack=trades_attack("linf", 8 / 255, num_steps=args.attack_steps), seed=0
    )
    trainer.compile(optimizer=TraceSGD(0.1, momentum=0.9, nesterov=True))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(args.batch_size, args.image_size, args.image_size, 3)), tf.float32)
    y = tf.one_hot(rng.integers(0, 10, args.batch_size), 10)
    step = tf.function(trainer.train_step, jit_compile=args.jit_compile)
    for _ in range(args.warmup):
        float(step((x, y))["loss"])
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        float(step((x, y))["loss"])  # reading the loss waits for the step to finish
        times.append(time.perf_counter() - start)
    seconds = float(np.mean(times))

    depth, width = flops.parse_wrn(args.model)
    forward = flops.wrn_forward_flops(depth, width, image_size=args.image_size)
    per_image = flops.trades_step_flops(forward, args.attack_steps, attack_backward="input")
    nominal = flops.cpu_peak_flops()
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    result = {
        "framework": f"tensorflow {tf.__version__}, keras {keras.__version__}",
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "device": "GPU" if "GPU" in devices else "CPU",
        "cpu": cpu_name(),
        "model": args.model,
        "batch_size": args.batch_size,
        "attack_steps": args.attack_steps,
        "precision": args.precision,
        "jit_compile": args.jit_compile,
        "swish_gradient": args.swish_gradient,
        "seconds_per_step": seconds,
        "seconds_per_step_median": float(np.median(times)),
        "images_per_second": args.batch_size / seconds,
        "flops_per_image_27F": per_image,
        "achieved_gflops": per_image * args.batch_size / seconds / 1e9,
        "nominal_peak_gflops": nominal / 1e9,
        "mfu_vs_nominal_peak": per_image * args.batch_size / seconds / nominal,
    }
    if args.measure_peak:
        peak = measure_matmul_peak()
        result["matmul_peak_gflops"] = peak / 1e9
        result["mfu_vs_matmul_peak"] = per_image * args.batch_size / seconds / peak
    if args.measure_conv_peak:
        result.update(measure_conv_peak(args.model, args.batch_size, args.image_size, args.attack_steps))
        result["fraction_of_conv_peak"] = result["achieved_gflops"] / result["conv_peak_gflops"]
        result["fraction_of_conv_ceiling"] = result["achieved_gflops"] / result["conv_ceiling_gflops"]
    if args.profile:
        tf.profiler.experimental.start(args.profile)
        for _ in range(2):
            float(step((x, y))["loss"])
        tf.profiler.experimental.stop()
        result["profile"] = op_time_by_type(args.profile)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
