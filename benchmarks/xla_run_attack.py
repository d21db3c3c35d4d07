"""Run `tfrobust eval --jit-compile on`'s cascade from the programs of `xla_export_attack.py`, without TensorFlow.

JAX's XLA client compiles each exported program for `jax.devices()[0]` (`xla_run.compile_step`) and this
script replays `engine.Evaluator`'s loop around them in NumPy, as `tfrobust eval` runs it in one pool:

- clean verdicts from the forward program, `VERIFY_ROWS` rows per call, the last call padded with zeros
  (`fixed_layout_logits`); a point is misclassified when another class's logit is strictly larger;
- stage s attacks the points still robust, in order, `batch_size` at a time, the last batch padded with zero
  images of class 0; batch k gets the seed [seed, s * 1,000,000 + k] (`Evaluator._run_pool`, pool 0);
- a candidate breaks its point when it lies in the eps ball (relative and absolute slack 1e-6) and in
  [0, 1] and is misclassified by the forward program (`engine.verify`).

Reports clean and robust accuracy after each stage, the seconds of each stage (attack and verdicts, each
call waited for) and the compile times. XLA compiles float32 convolutions and dots at full precision here
(`--matmul-precision highest`, the default), as `tfrobust eval` runs TensorFlow with TensorFloat-32 off
and the reference's GPU side runs with it off.

- `--check` (needs `xla_export_attack.py --values`): each stage's first batch against TensorFlow's
  candidates (its XLA program and its plain graph); exits non-zero past `--tolerance` (absolute, pixels).

    python benchmarks/xla_run_attack.py xla/aa_wrn10 --json results/xla_aa.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xla_run import _jax, compile_step  # noqa: E402

TOLERANCE = 1e-6  # engine.TOLERANCE
STAGE_SEED_STRIDE = 1_000_000  # engine.Evaluator._run_pool: (pool * 100 + stage) * 1,000,000 + batch


class Program:
    """A compiled program whose trailing parameters (the captured network variables) are bound once."""

    def __init__(self, hlo: bytes, captured: list[np.ndarray], matmul_precision: str):
        jax = _jax()
        self.device = jax.devices()[0]
        self.executable, self.compile_seconds = compile_step(hlo, matmul_precision)
        self.captured = [jax.device_put(v, self.device) for v in captured]

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        jax = _jax()
        params = [jax.device_put(np.asarray(v), self.device) for v in inputs] + self.captured
        outputs = self.executable.execute_sharded(params).disassemble_into_single_device_arrays()
        return np.asarray(outputs[0][0])  # waits for the result


def load(prefix: str, matmul_precision: str) -> tuple[dict, dict[str, Program], np.lib.npyio.NpzFile]:
    if not os.path.isfile(prefix + ".json"):
        raise SystemExit(f"{prefix}.json not found: give the prefix xla_export_attack.py --out wrote")
    with open(prefix + ".json") as handle:
        spec = json.load(handle)
    if spec.get("format") != "tfrobust-xla-attack-1":
        raise SystemExit(f"{prefix}.json is not an xla_export_attack.py export")
    arrays = np.load(prefix + ".npz", allow_pickle=False)
    folder = os.path.dirname(prefix) or "."
    programs = {}
    for name, entry in spec["programs"].items():
        with open(os.path.join(folder, entry["hlo"]), "rb") as handle:
            hlo = handle.read()
        captured = [arrays[f"{name}/{k:04d}"] for k in range(entry["captured"])]
        programs[name] = Program(hlo, captured, matmul_precision)
    return spec, programs, arrays


def pad_rows(rows: np.ndarray, size: int, onehot: bool = False) -> np.ndarray:
    padded = np.zeros([size, *rows.shape[1:]], np.float32)
    padded[: len(rows)] = rows
    if onehot:
        padded[len(rows) :, 0] = 1.0
    return padded


def logits(predict: Program, images: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate(
        [
            predict(pad_rows(images[i : i + rows], rows))[: len(images[i : i + rows])]
            for i in range(0, len(images), rows)
        ]
    )


def misclassified(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    true = np.take_along_axis(scores, labels[:, None], axis=1)[:, 0]
    others = np.where(np.arange(scores.shape[1])[None, :] == labels[:, None], -np.inf, scores)
    return others.max(axis=1) > true


def norms(delta: np.ndarray, norm: str) -> np.ndarray:
    flat = delta.reshape(delta.shape[0], -1).astype(np.float64)
    return np.abs(flat).max(axis=1) if norm == "linf" else np.sqrt((flat**2).sum(axis=1))


def evaluate(spec: dict, programs: dict[str, Program], images, labels, seed: int = 0) -> dict:
    """The cascade of `spec["stages"]` on `images` (module docstring): accuracy and seconds per stage."""
    rows, batch, norm, eps = spec["verify_rows"], spec["batch_size"], spec["norm"], spec["eps"]
    onehot = np.eye(spec["num_classes"], dtype=np.float32)[labels]
    start = time.perf_counter()
    robust = ~misclassified(logits(programs["predict"], images, rows), labels)
    clean_seconds = time.perf_counter() - start
    result = {"n_examples": len(images), "clean_accuracy": float(robust.mean()), "clean_seconds": clean_seconds}
    stages = []
    for s, name in enumerate(spec["stages"]):
        todo = np.flatnonzero(robust)
        start = time.perf_counter()
        for k, first in enumerate(range(0, len(todo), batch)):
            index = todo[first : first + batch]
            seed_k = np.array([seed, s * STAGE_SEED_STRIDE + k], np.int64)
            candidate = programs[name](pad_rows(images[index], batch), pad_rows(onehot[index], batch, True), seed_k)
            candidate = candidate[: len(index)]
            inside = norms(candidate - images[index], norm) <= eps * (1 + TOLERANCE) + TOLERANCE
            flat = candidate.reshape(len(index), -1)
            in_box = (flat.min(axis=1) >= 0.0) & (flat.max(axis=1) <= 1.0)
            broken = inside & in_box & misclassified(logits(programs["predict"], candidate, rows), labels[index])
            robust[index[broken]] = False
        seconds = time.perf_counter() - start
        stages.append(
            {"stage": name, "attacked": len(todo), "robust_accuracy": float(robust.mean()), "seconds": seconds}
        )
        print(f"{name}: {len(todo)} attacked, robust {100 * robust.mean():.2f}%, {seconds:.2f} s", flush=True)
    result["stages"] = stages
    result["attack_seconds"] = float(sum(s["seconds"] for s in stages))
    result["robust"] = robust.tolist()
    return result


def check(spec: dict, programs: dict[str, Program], arrays, tolerance: float) -> dict:
    """Each stage's first batch (the export's inputs, seed [values_seed, 0]) against TensorFlow's candidates."""
    batch, images, labels = spec["batch_size"], arrays["images"], arrays["labels"]
    x = images[:batch]
    y = np.eye(spec["num_classes"], dtype=np.float32)[labels[:batch]]
    seed = np.array([spec["values_seed"], 0], np.int64)
    report = {}
    for name in spec["stages"]:
        candidate = programs[name](x, y, seed)
        report[name] = {
            reference: float(np.abs(candidate - arrays[f"{reference}_{name}"]).max()) for reference in ("tf_xla", "tf")
        }
    worst = max(max(r.values()) for r in report.values())
    return {"max_abs": report, "worst": worst, "tolerance": tolerance, "passed": worst <= tolerance}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prefix", help="what xla_export_attack.py wrote: PREFIX.json, PREFIX.*.hlo.pb, PREFIX.npz")
    p.add_argument("--check", action="store_true", help="compare each stage's first batch with TensorFlow's")
    p.add_argument("--tolerance", type=float, default=1e-5, help="largest difference --check accepts (pixels)")
    p.add_argument("--n-examples", type=int, default=None, help="the first N images of the bundle (all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--matmul-precision", default="highest", choices=["default", "high", "highest"])
    p.add_argument("--json", default=None, metavar="OUT")
    args = p.parse_args(argv)

    jax = _jax()
    spec, programs, arrays = load(args.prefix, args.matmul_precision)
    device = jax.devices()[0]
    result = {
        "program": os.path.basename(args.prefix),
        "device": f"{device.platform}: {getattr(device, 'device_kind', '')}",
        "jax": jax.__version__,
        "host": platform.machine(),
        "norm": spec["norm"],
        "eps": spec["eps"],
        "batch_size": spec["batch_size"],
        "iterations": spec["iterations"],
        "matmul_precision": args.matmul_precision,
        "compile_seconds": {name: program.compile_seconds for name, program in programs.items()},
    }
    print(
        f"compiled on {result['device']}: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["compile_seconds"].items())
    )
    if args.check:
        result["check"] = check(spec, programs, arrays, args.tolerance)
        print(json.dumps(result["check"], indent=1))
    else:
        images, labels = arrays["images"][: args.n_examples], arrays["labels"][: args.n_examples]
        result.update(evaluate(spec, programs, images, labels, args.seed))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    if args.check and not result["check"]["passed"]:
        raise SystemExit(f"the programs differ from TensorFlow's by {result['check']['worst']:.3g}")
    return result


if __name__ == "__main__":
    main()
