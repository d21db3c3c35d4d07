"""Seconds of `tfrobust eval --attack apgd-ce` on a small model, XLA on and off (docs/xla.md, "Evaluation
under XLA").

Exports a small CNN with random weights (two convolutions, 16 and 32 channels; CIFAR-shaped 32x32x3 images,
10 classes) and an npz of random images labelled with the model's own predictions (every point is
attacked), then runs the command once per setting in a fresh process and records its wall time (start-up, tracing and XLA compilation
included), the report's attack seconds and robust accuracy, whether the two runs broke the same points
and how far apart their adversarial examples are.

    python benchmarks/eval_xla_cpu.py --n 128 --batch-size 64 --out benchmarks/results/eval_xla_cpu_cnn.json
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
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import keras

    from tfrobust.export import export_network

    keras.utils.set_random_seed(0)
    work = tempfile.mkdtemp(prefix="eval_xla_")
    # A small CNN with Keras's default (random) initialisation: its predictions spread over the classes.
    network = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
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
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
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
        "model": "cnn-16-32",
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
