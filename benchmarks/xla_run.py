"""Run an exported tfrobust step (`xla_export.py`) through JAX's XLA client: check it, time it. No TensorFlow.

The `.hlo.pb` written by `xla_export.py` is TensorFlow's HLO of the jit-compiled TRADES train step. Here it
is converted to StableHLO (`hlo_to_stablehlo` of the XLA client bundled with jaxlib), compiled for
`jax.devices()[0]` and executed with the variables as parameters and their new values as outputs, so
the loop feeds each step's variables to the next as `fit` would (the optimizer's iteration counter, and
with it the attack's per-step seed, advance).

- `--check` (needs the `.npz` of `xla_export.py --values`): one step from TensorFlow's own inputs;
  prints the largest differences to TensorFlow's outputs (its XLA step and its plain graph step) per
  group of variables, and exits non-zero when they exceed `--tolerance` (relative to each group's scale).
- timing (default): random weights of the recorded shapes (a normal of each variable's recorded mean
  and spread), synthetic images and labels; `--warmup` untimed steps, then `--steps` timed ones, each
  waited for. Reports images/s, seconds per step, XLA's memory plan, and model-FLOP utilisation with the
  FLOPs of `flops.py` (TRADES-10 as 27 forward-equivalents per image, the attack's backward to the input
  only, and 37 counting full backwards as the PyTorch benchmark's default does) against a matmul peak
  measured here in the step's compute dtype (`--peak-size`), the same ceiling as `torch_trades_step.py`.
- `--matmul-precision highest` rewrites every convolution and dot to full float32 precision (XLA's
  default lets GPUs use TensorFloat-32 for float32 programs).

    python benchmarks/xla_run.py xla/wrn10_check --check
    python benchmarks/xla_run.py xla/wrn28_bf16 --steps 10 --json results/xla_h200_wrn-28-10_bf16.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flops  # noqa: E402  (benchmarks/flops.py: pure Python)

GROUPS = ("weights", "optimizer", "batch_norm_statistics", "metrics")


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)  # the optimizer's iteration counter is int64
    return jax


def load(prefix: str) -> tuple[dict, bytes]:
    with open(prefix + ".json") as handle:
        spec = json.load(handle)
    with open(prefix + ".hlo.pb", "rb") as handle:
        return spec, handle.read()


def compile_step(hlo: bytes, matmul_precision: str = "default"):
    """HLO proto -> StableHLO -> an executable on jax.devices()[0]; returns (executable, seconds)."""
    jax = _jax()
    from jax._src import compiler
    from jax._src.interpreters import mlir as jax_mlir
    from jax._src.lib import xla_client
    from jaxlib.mlir import ir

    device = jax.devices()[0]
    stablehlo = xla_client._xla.mlir.hlo_to_stablehlo(hlo)
    options = compiler.get_compile_options(num_replicas=1, num_partitions=1)
    start = time.perf_counter()
    with jax_mlir.make_ir_context():
        text = str(ir.Module.parse(stablehlo))
        # tf2xla returns variable values through HLO copies, which the converter keeps as `mhlo.copy`;
        # some jaxlib versions refuse that op when legalising. A same-shape reshape is the same identity
        # in StableHLO, and XLA removes it.
        text = re.sub(r"mhlo\.copy (%[\w#]+) : (tensor<[^>]*>)", r"stablehlo.reshape \1 : (\2) -> \2", text)
        if "mhlo.copy" in text:
            raise RuntimeError("an mhlo.copy of an unexpected form is left in the program")
        if matmul_precision != "default":
            text = text.replace("#stablehlo<precision DEFAULT>", f"#stablehlo<precision {matmul_precision.upper()}>")
            text = text.replace(
                "precision = [DEFAULT, DEFAULT]",
                f"precision = [{matmul_precision.upper()}, {matmul_precision.upper()}]",
            )
        module = ir.Module.parse(text)
        executable = compiler.backend_compile_and_load(
            device.client, module, xla_client.DeviceList((device,)), options, []
        )
    return executable, time.perf_counter() - start


def group_of(name: str) -> str:
    if name.startswith(("loss", "ce", "clean_accuracy", "kl", "adv_accuracy")) or "/total" in name or "/count" in name:
        return "metrics"
    if "moving_" in name:
        return "batch_norm_statistics"
    if (
        name.startswith(("sgd", "adam", "optimizer"))
        or "/iteration" in name
        or "momentum" in name
        or "learning_rate" in name
    ):
        return "optimizer"
    return "weights"


class Step:
    """The compiled step: `run(params) -> (metrics, new variable values, in parameter order)`."""

    def __init__(self, spec: dict, executable):
        self.spec = spec
        self.executable = executable
        names = [p["name"] for p in spec["params"]]
        self.variable_params = [i for i, p in enumerate(spec["params"]) if p["kind"] == "variable"]
        # Outputs: metrics, then every variable in `variable_outputs` order; map them back to parameters.
        out_index = {name: i for i, name in enumerate(spec["variable_outputs"])}
        n_metrics = len(spec["metric_outputs"])
        self.output_for_param = {i: n_metrics + out_index[names[i]] for i in self.variable_params}

    def run(self, params: list):
        outputs = self.executable.execute_sharded(params).disassemble_into_single_device_arrays()
        outputs = [o[0] for o in outputs]
        metrics = outputs[: len(self.spec["metric_outputs"])]
        new_params = list(params)
        for i, j in self.output_for_param.items():
            new_params[i] = outputs[j]
        return metrics, new_params


def random_params(spec: dict, seed: int = 0) -> list:
    jax = _jax()
    device = jax.devices()[0]
    rng = np.random.default_rng(seed)
    out = []
    for p in spec["params"]:
        shape, dtype = tuple(p["shape"]), np.dtype(p["dtype"])
        if p["name"] == "images":
            value = rng.uniform(size=shape).astype(dtype)
        elif p["name"] == "labels":
            value = np.eye(shape[-1], dtype=dtype)[rng.integers(0, shape[-1], shape[0])]
        elif np.issubdtype(dtype, np.integer):
            value = np.full(shape, round(p["mean"]), dtype)
        elif p["std"] == 0.0:
            value = np.full(shape, p["mean"], dtype)
        else:
            value = (p["mean"] + p["std"] * rng.standard_normal(shape)).astype(dtype)
        out.append(jax.device_put(value, device))
    return out


def check(prefix: str, spec: dict, step: Step, tolerance: float) -> dict:
    """One step from TensorFlow's inputs; the largest differences to TensorFlow's outputs per group."""
    jax = _jax()
    device = jax.devices()[0]
    values = np.load(os.path.join(os.path.dirname(prefix) or ".", spec["values"]))
    params = [jax.device_put(values[f"param_{i:04d}"], device) for i in range(len(spec["params"]))]
    metrics, new = step.run(params)
    report: dict = {}
    worst = 0.0
    for reference in ("tf_xla", "tf"):
        rows = {g: {"max_abs": 0.0, "scale": 0.0} for g in GROUPS}
        for name, value in zip(spec["metric_outputs"], metrics):
            expected = values[f"{reference}_metric_{name}"]
            rows["metrics"]["max_abs"] = max(
                rows["metrics"]["max_abs"], float(np.max(np.abs(np.asarray(value) - expected)))
            )
            rows["metrics"]["scale"] = max(rows["metrics"]["scale"], float(np.max(np.abs(expected))))
        for k, name in enumerate(spec["variable_outputs"]):
            i = [p["name"] for p in spec["params"]].index(name)
            expected = values[f"{reference}_var_{k:04d}"]
            got = np.asarray(new[i])
            g = group_of(name)
            rows[g]["max_abs"] = max(
                rows[g]["max_abs"], float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
            )
            rows[g]["scale"] = max(rows[g]["scale"], float(np.max(np.abs(expected))) if got.size else 0.0)
        for row in rows.values():
            row["relative"] = row["max_abs"] / max(row["scale"], 1e-12)
            worst = max(worst, row["relative"])
        report[f"vs_{reference}"] = rows
    report["worst_relative"] = worst
    report["passed"] = worst <= tolerance
    report["tolerance"] = tolerance
    return report


def measure_matmul_peak(dtype: str, size: int, repeats: int = 10) -> float:
    jax = _jax()
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype=dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype=dtype)
    matmul = jax.jit(lambda a, b: a @ b)
    for _ in range(3):
        matmul(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = matmul(a, b)
    out.block_until_ready()
    return 2.0 * size**3 * repeats / (time.perf_counter() - start)


def time_step(spec: dict, step: Step, steps: int, warmup: int, seed: int = 0) -> dict:
    params = random_params(spec, seed)
    losses = []
    for _ in range(warmup):
        metrics, params = step.run(params)
        metrics[0].block_until_ready()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        metrics, params = step.run(params)
        losses.append(float(np.asarray(metrics[0])))  # reading the loss waits for the step
        times.append(time.perf_counter() - start)
    seconds = float(np.mean(times))
    return {
        "seconds_per_step": seconds,
        "seconds_per_step_median": float(np.median(times)),
        "step_times_s": times,
        "images_per_second": spec["batch_size"] / seconds,
        "losses": losses,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prefix", help="what xla_export.py wrote: PREFIX.hlo.pb, PREFIX.json (and PREFIX.npz)")
    p.add_argument("--check", action="store_true", help="compare one step with TensorFlow's (needs PREFIX.npz)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest relative difference --check accepts")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--matmul-precision", default="default", choices=["default", "high", "highest"])
    p.add_argument("--peak-size", type=int, default=8192, help="side of the matmul that measures the peak (0: skip)")
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)

    jax = _jax()
    spec, hlo = load(args.prefix)
    executable, compile_s = compile_step(hlo, args.matmul_precision)
    step = Step(spec, executable)
    device = jax.devices()[0]
    result = {
        "program": os.path.basename(args.prefix),
        "model": spec["model"],
        "batch_size": spec["batch_size"],
        "precision": spec["precision"],
        "attack_steps": spec["attack_steps"],
        "exported_by": f"tensorflow {spec['tensorflow']}, keras {spec['keras']}",
        "run_by": f"jax {jax.__version__}",
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "host": platform.machine(),
        "matmul_precision": args.matmul_precision,
        "compile_seconds": compile_s,
    }
    stats = executable.get_compiled_memory_stats()
    result["xla_memory_gib"] = {
        k: getattr(stats, f"{k}_size_in_bytes") / 2**30 for k in ("argument", "output", "temp", "generated_code")
    }
    if args.check:
        result["check"] = check(args.prefix, spec, step, args.tolerance)
    else:
        result.update(time_step(spec, step, args.steps, args.warmup))
        depth, width = flops.parse_wrn(spec["model"])
        forward = flops.wrn_forward_flops(depth, width, image_size=spec["image_size"])
        per_image = {
            c: flops.trades_step_flops(forward, spec["attack_steps"], attack_backward=c) for c in ("input", "full")
        }
        achieved = {c: f * spec["batch_size"] / result["seconds_per_step"] for c, f in per_image.items()}
        result["forward_flops_per_image"] = forward
        result["achieved_tflops"] = {c: a / 1e12 for c, a in achieved.items()}
        if args.peak_size:
            dtype = "bfloat16" if spec["precision"] == "mixed_bfloat16" else "float32"
            peak = measure_matmul_peak(dtype, args.peak_size)
            result["peak_source"] = f"measured {args.peak_size}^3 {dtype} matmul (jax, default precision)"
            result["peak_tflops"] = peak / 1e12
            result["mfu"] = {c: a / peak for c, a in achieved.items()}
        try:
            result["device_peak_memory_gib"] = device.memory_stats()["peak_bytes_in_use"] / 2**30
        except Exception:  # CPU devices keep no memory statistics
            pass
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    if args.check and not result["check"]["passed"]:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
