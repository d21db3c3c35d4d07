"""tfrobust's AutoAttack against a PyTorch AutoAttack on the same model and images: accuracy per stage and time.

What it does: takes a model trained by `tfrobust train` (its run directory), evaluates the exported
SavedModel with `tfrobust.evaluation.run_eval(attack="aa")` (APGD-CE, APGD-T, FAB-T, Square, as
`tfrobust eval --attack aa`), and the same weights in PyTorch with torchattacks 3.5.1's ports of the
reference attacks (Croce & Hein 2020, github.com/fra31/auto-attack), configured exactly as the reference's
`AutoAttack(version="standard")` (`autoattack/autoattack.py`, `__init__` and `set_version`, the same for
Linf and L2), every setting passed explicitly (`reference_attacks`):

- APGD-CE: 1 restart x 100 iterations, loss "ce", eot_iter 1, rho 0.75 (torchattacks' default steps: 10);
- APGD-T: 9 target classes x 1 restart x 100 iterations, eot_iter 1, rho 0.75 (torchattacks takes
  n_classes - 1 targets: 99 on CIFAR-100; the script sets n_target_classes = min(9, classes - 1));
- FAB-T: 9 target classes x 1 restart x 100 iterations, alpha_max 0.1, eta 1.05, beta 0.9 (the reference
  class's defaults; torchattacks' steps default 10, targets n_classes - 1 as above);
- Square: 5000 queries, 1 restart, p_init 0.8, loss "margin", resc_schedule False (torchattacks'
  default is True, the reference class's default too, but AutoAttack builds Square with False: p halves
  after iterations 10, 50, 200, 500, 1000, 2000, 4000 of a 5000-query run, unrescaled).

Both cascades attack only the points still robust, per stage, starting from the clean image, and count
only verified successes (inside the ball and [0, 1], misclassified). On a GPU the PyTorch side runs in
full float32: TF32 is off for cuDNN convolutions (`torch.backends.cudnn.allow_tf32`, True by default) and
matrix products, as tfrobust's evaluation turns it off in TensorFlow (`tfrobust.numerics`).

Why not torchattacks' own `AutoAttack` class: in 3.5.1 it builds APGD, APGD-T and FAB with their default
10 iterations instead of 100 (a weaker attack than the reference). Why not tf2onnx + onnx2torch for the
conversion: onnx2torch imports torchvision, and no torchvision wheel here runs with torch 2.13.0 CPU
(0.29 pulls torch 2.14 + CUDA; 0.28 fails to register its ops). The PyTorch model is instead the
published architecture (`tests/torch_reference.py`, the one `tfrobust import` is tested against) loaded
with `tfrobust.importer.reference_state_dict(network)`; the script checks that its logits match the
SavedModel's on every evaluated image before attacking.

    pip install --no-deps --target pydeps torchattacks==3.5.1   # its deps would replace torch
    PYTHONPATH=pydeps python benchmarks/aa_reference.py --run exp/runs/std \\
        --data exp/c10_test.npz --n-examples 500 --eps 1 2 --out benchmarks/results/aa_reference_std.json

Where TensorFlow is not installed (a GPU machine with PyTorch only), run the reference side alone from a bundle:

    python benchmarks/aa_reference.py --run RUN --data D.npz --eps 8 --write-bundle bundle.npz --out unused.json
    python benchmarks/aa_reference.py --bundle bundle.npz --eps 8 --out ref.json   # torch + torchattacks only

Measured results are in the README ("Evaluation: comparison with a PyTorch AutoAttack") and in the JSON
written by --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")


def trained_network(run_dir: str):
    """The run's exported (selected, averaged) weights as a Keras network, rebuilt as `tfrobust export` does."""
    from tfrobust.training import callbacks as cb
    from tfrobust.training.checkpoint import CHECKPOINT_NAME
    from tfrobust.training.run import BEST_NAME, build_run, read_run_config

    config = dataclasses.replace(read_run_config(run_dir), strategy="one-device")
    run = build_run(config, run_dir)
    cb.restore(os.path.join(run_dir, CHECKPOINT_NAME), run.trainer, run.averaging, run.selection)
    averaged = run.averaging.sync_averaged_network()
    best = os.path.join(run_dir, BEST_NAME)
    if os.path.exists(best):
        cb.load_best_weights(best, averaged)
    return config, run.splits.info, averaged


def torch_model(config, info, network):
    import torch
    from torch_reference import RefWideResNet

    from tfrobust.importer import reference_state_dict

    depth, width = (int(v) for v in config.model.split("-")[1:])
    model = RefWideResNet(depth, width, info.num_classes, info.mean, info.std, config.activation)
    state = {k: torch.tensor(v) for k, v in reference_state_dict(network, config.model).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _device(model):
    return next(model.parameters()).device


def torch_logits(model, x_nhwc: np.ndarray, batch: int = 250) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate(
            [
                model(torch.tensor(x_nhwc[i : i + batch]).permute(0, 3, 1, 2).to(_device(model))).cpu().numpy()
                for i in range(0, len(x_nhwc), batch)
            ]
        )


def write_bundle(path: str, config, info, network, x: np.ndarray, y: np.ndarray) -> None:
    """The PyTorch side's whole input in one npz (weights in the reference layout, architecture, images,
    labels), so that the reference can run where TensorFlow is not installed (a GPU machine)."""
    from tfrobust.importer import reference_state_dict

    depth, width = (int(v) for v in config.model.split("-")[1:])
    arch = {
        "depth": depth,
        "width": width,
        "num_classes": info.num_classes,
        "mean": list(info.mean),
        "std": list(info.std),
        "activation": config.activation,
    }
    weights = {f"w/{k}": v for k, v in reference_state_dict(network, config.model).items()}
    np.savez(path, image=x, label=y, arch=np.array(json.dumps(arch)), **weights)


def read_bundle(path: str, device: str):
    """(model on `device`, images, labels, number of classes) from `write_bundle`'s npz; needs torch only."""
    import torch
    from torch_reference import RefWideResNet

    with np.load(path, allow_pickle=False) as data:
        arch = json.loads(str(data["arch"]))
        state = {k[2:]: torch.tensor(data[k]) for k in data.files if k.startswith("w/")}
        x, y = data["image"], data["label"]
    model = RefWideResNet(
        arch["depth"], arch["width"], arch["num_classes"], arch["mean"], arch["std"], arch["activation"]
    )
    model.load_state_dict(state, strict=False)
    model = model.eval().to(device)
    model.mean, model.std = model.mean.to(device), model.std.to(device)  # plain tensors, not buffers
    return model, x, y, arch["num_classes"]


def reference_attacks(model, norm: str, eps: float, seed: int, num_classes: int) -> dict:
    """The four attacks of AutoAttack's standard version, as torchattacks 3.5.1 objects with every setting
    of the reference (`autoattack.py`, version "standard") given explicitly (see the module docstring)."""
    import torchattacks

    name = {"linf": "Linf", "l2": "L2"}[norm]
    targets = min(9, num_classes - 1)
    apgd_t = torchattacks.APGDT(
        model, norm=name, eps=eps, steps=100, n_restarts=1, seed=seed, eot_iter=1, rho=0.75, n_classes=num_classes
    )
    apgd_t.n_target_classes = targets
    fab_t = torchattacks.FAB(
        model,
        norm=name,
        eps=eps,
        steps=100,
        n_restarts=1,
        alpha_max=0.1,
        eta=1.05,
        beta=0.9,
        seed=seed,
        multi_targeted=True,
        n_classes=num_classes,
    )
    fab_t.n_target_classes = targets
    return {
        "apgd-ce": torchattacks.APGD(
            model, norm=name, eps=eps, steps=100, n_restarts=1, seed=seed, loss="ce", eot_iter=1, rho=0.75
        ),
        "apgd-t": apgd_t,
        "fab-t": fab_t,
        "square": torchattacks.Square(
            model,
            norm=name,
            eps=eps,
            n_queries=5000,
            n_restarts=1,
            p_init=0.8,
            loss="margin",
            resc_schedule=False,
            seed=seed,
        ),
    }


def full_float32_torch() -> dict:
    """TF32 off in PyTorch (cuDNN convolutions default to it on Ampere+ GPUs); returns the settings."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return {
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def torch_cascade(
    model, x: np.ndarray, y: np.ndarray, norm: str, eps: float, batch: int, seed: int, num_classes: int
) -> dict:
    """The reference AutoAttack standard cascade with torchattacks' attacks (see the module docstring)."""
    import torch

    numerics = full_float32_torch()
    attacks = reference_attacks(model, norm, eps, seed, num_classes)
    robust = torch_logits(model, x).argmax(-1) == y
    result = {"clean_accuracy": float(robust.mean()), "stages": [], "numerics": numerics}
    for stage in STAGES:
        began = time.time()
        todo = np.flatnonzero(robust)
        for start in range(0, len(todo), batch):
            idx = todo[start : start + batch]
            xt = torch.tensor(x[idx]).permute(0, 3, 1, 2).contiguous().to(_device(model))
            adv = attacks[stage](xt, torch.tensor(y[idx]).to(_device(model))).detach().permute(0, 2, 3, 1).cpu().numpy()
            delta = (adv - x[idx]).reshape(len(idx), -1)
            size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta.astype(np.float64) ** 2).sum(1))
            inside = (
                (size <= eps * (1 + 1e-6) + 1e-6)
                & (adv.reshape(len(idx), -1).min(1) >= 0)
                & (adv.reshape(len(idx), -1).max(1) <= 1)
            )
            broken = inside & (torch_logits(model, adv).argmax(-1) != y[idx])
            robust[idx[broken]] = False
        result["stages"].append(
            {"attack": stage, "robust_accuracy": float(robust.mean()), "seconds": round(time.time() - began, 2)}
        )
    result["robust_accuracy"] = float(robust.mean())
    result["seconds"] = round(sum(s["seconds"] for s in result["stages"]), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="Run directory of `tfrobust train` (its summary names the export).")
    parser.add_argument("--data", help="npz with `image`/`label` of held-out images.")
    parser.add_argument("--n-examples", type=int, default=500)
    parser.add_argument(
        "--eps", type=float, nargs="+", default=[1.0, 2.0], help="Radii in 1/255 units (linf) or raw (l2)."
    )
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"])
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["both", "tf", "torch"], default="both")
    parser.add_argument("--out", required=True, help="JSON results (must not exist).")
    parser.add_argument(
        "--write-bundle",
        metavar="NPZ",
        help="Only write the PyTorch side's input (weights, images, labels) to NPZ and stop.",
    )
    parser.add_argument(
        "--bundle",
        metavar="NPZ",
        help="Run only the reference, from a --write-bundle file (no TensorFlow needed; uses CUDA when available).",
    )
    args = parser.parse_args()
    if os.path.exists(args.out):
        raise SystemExit(f"{args.out} exists")
    if args.bundle:
        return main_bundle(args)
    if not args.run or not args.data:
        raise SystemExit("--run and --data are required (unless --bundle)")

    # tfrobust first: importing it sets TF_ENABLE_ONEDNN_OPTS=1 (unless set), as for `tfrobust eval`; imported
    # after TensorFlow it is too late and, on CPUs without AVX512-VNNI, TF runs its slower Eigen kernels.
    import tensorflow as tf
    import torch

    import tfrobust  # noqa: F401
    from tfrobust.evaluation import EvalSettings, onednn_enabled, run_eval
    from tfrobust.export import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    with open(os.path.join(args.run, "summary.json")) as handle:
        export_path = json.load(handle)["export"]
    config, info, network = trained_network(args.run)
    reference = torch_model(config, info, network)
    with np.load(args.data, allow_pickle=False) as data:
        x = data["image"][: args.n_examples].astype(np.float32) / 255.0
        y = data["label"][: args.n_examples].astype(np.int64)
    saved = np.concatenate(
        [np.asarray(load_model(export_path).logits(tf.constant(x[i : i + 250]))) for i in range(0, len(x), 250)]
    )
    ref = torch_logits(reference, x)
    gap = float(np.abs(saved - ref).max())
    agree = float((saved.argmax(-1) == ref.argmax(-1)).mean())
    print(f"SavedModel vs PyTorch copy on {len(x)} images: max |logit diff| {gap:.2e}, same class {100 * agree:.2f}%")
    if gap > 1e-3 or agree < 1:
        raise SystemExit("the PyTorch copy does not compute the SavedModel's function")

    if args.write_bundle:
        write_bundle(args.write_bundle, config, info, network, x, y)
        print(f"wrote {args.write_bundle}")
        return

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    results = {
        "run": os.path.abspath(args.run),
        "model": export_path,
        "data": args.data,
        "n_examples": len(x),
        "norm": args.norm,
        "seed": args.seed,
        "max_logit_gap": gap,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"tensorflow": tf.__version__, "torch": torch.__version__, "onednn": onednn_enabled()},
        "eps": {},
    }
    for eps_units in args.eps:
        eps = eps_units / 255.0 if args.norm == "linf" else eps_units
        entry = {}
        if args.only in ("both", "tf"):
            report = os.path.join(out_dir, f"tfrobust-aa-{args.norm}-{eps_units:g}-{time.strftime('%H%M%S')}.json")
            entry["tfrobust"] = run_eval(
                EvalSettings(
                    model_path=export_path,
                    attack="aa",
                    dataset=f"npz:{args.data}",
                    split="train",
                    val_size=0,
                    norm=args.norm,
                    eps=eps,
                    n_examples=len(x),
                    batch_size=args.batch_size,
                    seed=args.seed,
                    report=report,
                )
            )["report"]
        if args.only in ("both", "torch"):
            entry["reference"] = torch_cascade(
                reference, x, y, args.norm, eps, args.batch_size, args.seed, info.num_classes
            )
        results["eps"][f"{eps_units:g}"] = entry
        print(format_comparison(eps_units, args.norm, entry), flush=True)
    with open(args.out, "x") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    print(f"wrote {args.out}")


def main_bundle(args) -> None:
    """The reference cascade alone on a bundle (`--bundle`), for each eps; JSON as `main`'s "reference"."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, x, y, num_classes = read_bundle(args.bundle, device)
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()}, {os.cpu_count()} CPUs"
    results = {
        "bundle": args.bundle,
        "n_examples": len(x),
        "norm": args.norm,
        "seed": args.seed,
        "machine": machine,
        "versions": {"torch": torch.__version__},
        "eps": {},
    }
    for eps_units in args.eps:
        eps = eps_units / 255.0 if args.norm == "linf" else eps_units
        entry = {"reference": torch_cascade(model, x, y, args.norm, eps, args.batch_size, args.seed, num_classes)}
        results["eps"][f"{eps_units:g}"] = entry
        print(format_comparison(eps_units, args.norm, entry), flush=True)
    with open(args.out, "x") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    print(f"wrote {args.out} ({machine})")


def format_comparison(eps_units: float, norm: str, entry: dict) -> str:
    """Markdown rows: stage, tfrobust accuracy and seconds, reference accuracy and seconds."""
    unit = "/255" if norm == "linf" else ""
    lines = [
        f"\n{norm} eps {eps_units:g}{unit}",
        "| stage | tfrobust | s | reference (torchattacks) | s |",
        "|---|---|---|---|---|",
    ]
    tf_side, ref_side = entry.get("tfrobust"), entry.get("reference")

    def cell(side, index):
        if side is None:
            return "-", "-"
        if index is None:
            return f"{100 * side['clean_accuracy']:.1f}%", ""
        stage = side["stages"][index]
        return f"{100 * stage['robust_accuracy']:.1f}%", f"{stage['seconds']:.0f}"

    for index, name in [(None, "clean")] + list(enumerate(STAGES)):
        a, b = cell(tf_side, index), cell(ref_side, index)
        lines.append(f"| {name} | {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
    if tf_side and ref_side:
        lines.append(f"| total time | | {tf_side['seconds']:.0f} | | {ref_side['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
