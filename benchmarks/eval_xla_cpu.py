"""Seconds of `tfrobust eval --attack apgd-ce` on a small model, XLA on and off (docs/xla.md, "Evaluation
under XLA").

Exports a WRN-10-1 with random weights (CIFAR-shaped 32x32x3 images, 10 classes) and an npz of random
images labelled with the model's own predictions (every point is attacked), then runs the command once
per setting in a fresh process and records its wall time (start-up, tracing and XLA compilation
included), the report's attack seconds and robust accuracy, whether the two runs broke the same points
and how far apart their adversarial examples are.

    python benchmarks/eval_xla_cpu.py --n 128 --batch-size 64 --out benchmarks/results/eval_xla_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="wrn-10-1")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import keras

    from tfrobust.export import export_network
    from tfrobust.models.registry import build_model

    keras.utils.set_random_seed(0)
    work = tempfile.mkdtemp(prefix="eval_xla_")
    network = build_model(
        args.model, input_shape=(32, 32, 3), num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    )
    images = np.random.default_rng(0).integers(0, 256, size=(args.n, 32, 32, 3)).astype(np.uint8)
    labels = network.predict(images.astype(np.float32) / 255.0, verbose=0).argmax(-1).astype(np.int64)
    npz = os.path.join(work, "data.npz")
    np.savez(npz, image=images, label=labels)
    metadata = {"dataset": {"name": f"npz:{npz}"}, "norm": "linf", "eps": 8 / 255, "training_config": {}}
    model_dir = export_network(network, root=os.path.join(work, "saved_models"), name="m", metadata=metadata)

    runs = {}
    for mode in ("off", "on"):
        report = os.path.join(work, f"report-{mode}.json")
        examples = os.path.join(work, f"examples-{mode}.npz")
        command = [sys.executable, "-m", "tfrobust.cli", "eval", "--model", model_dir, "--attack", "apgd-ce"]
        command += ["--batch-size", str(args.batch_size), "--report", report, "--save-examples", examples]
        command += ["--jit-compile", mode]
        began = time.time()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.time() - began
        with open(report) as handle:
            data = json.load(handle)
        runs[mode] = {
            "wall_seconds": round(wall, 1),
            "attack_seconds": data["stages"][0]["seconds"],
            "robust_accuracy": data["robust_accuracy"],
            "jit_compile": data["jit_compile"],
            "robust": np.load(examples)["robust"],
            "adversarial": np.load(examples)["adversarial"],
        }
    same = bool((runs["on"].pop("robust") == runs["off"].pop("robust")).all())
    adversarial_difference = float(np.abs(runs["on"].pop("adversarial") - runs["off"].pop("adversarial")).max())
    result = {
        "model": args.model,
        "n": args.n,
        "batch_size": args.batch_size,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "runs": runs,
        "same_robust_points": same,
        "max_adversarial_difference": adversarial_difference,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
