"""`tfrobust eval` with XLA on and off on the same model and images: seconds per stage, and whether both
runs break the same points (docs/xla.md, "Evaluation under XLA").

Runs `tfrobust eval --jit-compile off`, then `--jit-compile on`, each in a fresh process, and records the wall
time (start-up, tracing and XLA compilation included), each stage's seconds and robust accuracy from the
reports, whether the per-example verdicts (`--save-examples`) are the same, and how far apart the
adversarial examples are.

    python benchmarks/eval_xla_cpu.py --model exp/saved_models/c10-wrn-10-1-standard/1 \\
        --data exp/c10_test.npz --n-examples 200 --batch-size 250 --attack apgd-ce,apgd-t \\
        --eps 0.00784313725490196 --out benchmarks/results/eval_xla_cpu_wrn-10-1.json

(`exp/` as in benchmarks/README.md, "AutoAttack against a PyTorch AutoAttack".)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from tfrobust.benchmark import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="SavedModel (a tfrobust export) or .keras file.")
    parser.add_argument("--data", required=True, help="npz with `image`/`label`.")
    parser.add_argument("--n-examples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--attack", default="apgd-ce,apgd-t")
    parser.add_argument("--eps", type=float, default=None, help="Radius in [0, 1] units [the model's].")
    parser.add_argument("--out", default=None, help="JSON results (must not exist).")
    args = parser.parse_args()
    if args.out and os.path.exists(args.out):
        raise SystemExit(f"{args.out} exists")

    work = tempfile.mkdtemp(prefix="eval_xla_")
    runs = {}
    for mode in ("off", "on"):
        report = os.path.join(work, f"report-{mode}.json")
        examples = os.path.join(work, f"examples-{mode}.npz")
        command = [sys.executable, "-m", "tfrobust.cli", "eval", "--model", args.model, "--dataset", f"npz:{args.data}"]
        command += ["--split", "all", "--n-examples", str(args.n_examples), "--batch-size", str(args.batch_size)]
        command += ["--attack", args.attack, "--report", report, "--save-examples", examples, "--jit-compile", mode]
        if args.eps is not None:
            command += ["--eps", repr(args.eps)]
        began = time.time()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        wall = time.time() - began
        with open(report) as handle:
            data = json.load(handle)
        with np.load(examples) as saved:
            robust, adversarial = saved["robust"], saved["adversarial"]
        runs[mode] = {
            "wall_seconds": round(wall, 1),
            "clean_accuracy": data["clean_accuracy"],
            "stages": [{k: s[k] for k in ("attack", "robust_accuracy", "seconds")} for s in data["stages"]],
            "jit_compile": data["jit_compile"],
            "robust": robust,
            "adversarial": adversarial,
        }
    same = bool((runs["on"].pop("robust") == runs["off"].pop("robust")).all())
    difference = float(np.abs(runs["on"].pop("adversarial") - runs["off"].pop("adversarial")).max())
    result = {
        "model": args.model,
        "data": args.data,
        "n_examples": args.n_examples,
        "batch_size": args.batch_size,
        "attack": args.attack,
        "eps": args.eps,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "runs": runs,
        "same_robust_points": same,
        "max_adversarial_difference": difference,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "x") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
