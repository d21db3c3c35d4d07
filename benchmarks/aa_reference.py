"""tfrobust's AutoAttack against the reference AutoAttack (PyTorch) on the same model and images: accuracy per stage and time.

What it does: takes a model trained by `tfrobust train` (its run directory), evaluates its exported SavedModel
with `tfrobust.evaluate` (`--attack aa`, `aa-plus` or `aa-rand` for `--version standard`, `plus`, `rand`;
the report is `tfrobust eval`'s), and the same weights in PyTorch with the reference:

- `--reference autoattack` (default): the reference itself, Croce & Hein's `pyautoattack` 0.2.0 (their PyPI
  package of github.com/fra31/auto-attack), `AutoAttack(model, norm=..., eps=..., version=..., seed=...)`
  and its `run_standard_evaluation`, untouched: every version (standard, plus, rand) and norm (Linf, L2,
  L1). The accuracy after each stage and its time are read from the reference's own log lines; its final
  adversarial examples are checked to lie inside the ball and [0, 1].
- `--reference torchattacks`: torchattacks 3.5.1's ports of the reference attacks, configured as the
  reference's `version="standard"` at Linf/L2 (`reference_attacks`, every setting passed explicitly):
  APGD-CE 1 restart x 100 iterations, rho 0.75; APGD-T min(9, classes - 1) targets x 1 x 100; FAB-T
  min(9, classes - 1) targets x 1 x 100, alpha_max 0.1, eta 1.05, beta 0.9; Square 5000 queries, p_init
  0.8, margin loss, `resc_schedule=False` (torchattacks' defaults differ: 10 steps, n_classes - 1 targets,
  rescaled Square). Its own `AutoAttack` class builds APGD, APGD-T and FAB with 10 iterations, hence not used.

`--noise SIGMA` makes the model randomised on both sides (Gaussian input noise N(0, SIGMA^2), a fresh draw per
call), the case the `rand` version is for. Both cascades attack only the points still robust, per stage,
starting from the clean image. On a GPU the PyTorch side runs in full float32 (TF32 off for cuDNN and matrix
products), as `tfrobust eval` runs TensorFlow (`tfrobust.numerics`).

The PyTorch model is the published architecture (`tests/torch_reference.py`, the one `tfrobust import` is
tested against) loaded with `tfrobust.importer.reference_state_dict(network)`; the script checks that its
logits match the SavedModel's on every evaluated image before attacking. (tf2onnx + onnx2torch is not
usable: onnx2torch imports torchvision, and no torchvision wheel here runs with torch 2.13.0 CPU.)

    pip install --no-deps --target pydeps pyautoattack==0.2.0 torchattacks==3.5.1   # deps would replace torch
    PYTHONPATH=pydeps python benchmarks/aa_reference.py --run exp/runs/std101 \\
        --data exp/c10_test.npz --n-examples 200 --eps 2 --version plus --out plus.json
    PYTHONPATH=pydeps python benchmarks/aa_reference.py ... --norm l1 --eps 2 --out l1.json
    PYTHONPATH=pydeps python benchmarks/aa_reference.py ... --version rand --noise 0.03 --out rand.json

Where TensorFlow is not installed (a GPU machine with PyTorch only), run the reference side alone from a bundle:

    python benchmarks/aa_reference.py --run RUN --data D.npz --eps 8 --write-bundle bundle.npz --out unused.json
    python benchmarks/aa_reference.py --bundle bundle.npz --eps 8 --out ref.json   # torch + the reference only

Measured results are in benchmarks/README.md ("AutoAttack against a PyTorch AutoAttack") and in the JSON
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


def torch_noisy(model, sigma: float):
    """`model` behind Gaussian input noise of standard deviation `sigma` (a fresh draw per call)."""
    import torch

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x + sigma * torch.randn_like(x))

    return Noisy().eval()


def tf_noisy(logits, sigma: float, seed: int):
    """The TensorFlow side of `torch_noisy`: `logits` behind Gaussian input noise (a fresh draw per call).

    The draws come from one `tf.random.Generator`, whose state every `tf.function` shares, as PyTorch's
    global generator is shared: an op-seeded `tf.random.normal` under `tf.random.set_seed` would start the
    same stream in each of the evaluation's functions (`tfrobust.evaluation.check_random_streams`)."""
    import tensorflow as tf

    generator = tf.random.Generator.from_seed(seed)

    def noisy(x):
        return logits(x + sigma * generator.normal(tf.shape(x)))

    return noisy


class _StageLog:
    """Collects the reference's own per-attack log lines ("robust accuracy after APGD-CE: 27.50% (total time
    12.3 s)") from its `auto-attack` logger: the per-stage accuracy and the cumulative attack time its
    `run_standard_evaluation` reports, without re-implementing its loop."""

    PATTERN = r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)% \(total time ([0-9.]+) s\)"

    def __init__(self):
        import logging

        self.lines: list[str] = []
        self.handler = logging.Handler(level=logging.DEBUG)
        self.handler.emit = lambda record: self.lines.append(record.getMessage())
        self.logger = logging.getLogger("auto-attack")

    def __enter__(self):
        import logging

        self.level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    def stages(self) -> list[dict]:
        import re

        found, previous = [], 0.0
        for line in self.lines:
            match = re.fullmatch(self.PATTERN, line)
            if match:
                total = float(match.group(3))
                found.append(
                    {
                        "attack": match.group(1).lower(),
                        "robust_accuracy": float(match.group(2)) / 100,
                        "seconds": round(total - previous, 2),
                    }
                )
                previous = total
        return found


def autoattack_cascade(
    model, x: np.ndarray, y: np.ndarray, norm: str, eps: float, version: str, batch: int, seed: int
) -> dict:
    """The reference AutoAttack itself (pyautoattack 0.2.0, Croce & Hein's package of github.com/fra31/auto-
    attack): `AutoAttack(model, norm=..., eps=..., version=..., seed=...)` and its `run_standard_evaluation`,
    untouched. Per-stage accuracy and time come from its own log lines (`_StageLog`); the final adversarial
    examples are checked here (inside the ball and [0, 1]) and the reference's own verdicts (`y_adv`) used,
    as it decides them (for a randomised model, on one call)."""
    import torch
    from pyautoattack import AutoAttack

    numerics = full_float32_torch()
    device = _device(model)
    torch.manual_seed(seed)
    adversary = AutoAttack(
        model, norm={"linf": "Linf", "l2": "L2", "l1": "L1"}[norm], eps=eps, version=version, seed=seed, device=device
    )
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous().to(device)
    yt = torch.tensor(y).to(device)
    began = time.time()
    with _StageLog() as log:
        x_adv, y_adv = adversary.run_standard_evaluation(xt, yt, batch_size=batch)
    wall = time.time() - began
    clean = [line for line in log.lines if line.startswith("initial accuracy: ")]
    adv = x_adv.detach().permute(0, 2, 3, 1).cpu().numpy()
    delta = (adv - x).reshape(len(x), -1).astype(np.float64)
    size = {"linf": np.abs(delta).max(1), "l2": np.sqrt((delta**2).sum(1)), "l1": np.abs(delta).sum(1)}[norm]
    flat = adv.reshape(len(x), -1)
    inside = (size <= eps * (1 + 1e-6) + 1e-6) & (flat.min(1) >= 0) & (flat.max(1) <= 1)
    broken = y_adv.cpu().numpy() != y
    stages = log.stages()
    return {
        "implementation": "pyautoattack 0.2.0 (fra31/auto-attack)",
        "version": version,
        "attacks_to_run": list(adversary.attacks_to_run),
        "clean_accuracy": float(clean[0].split(": ")[1].rstrip("%")) / 100 if clean else float("nan"),
        "stages": stages,
        "robust_accuracy": stages[-1]["robust_accuracy"] if stages else float("nan"),
        "seconds": round(sum(s["seconds"] for s in stages), 2),
        "wall_seconds": round(wall, 2),
        "broken_outside_threat_model": int((broken & ~inside).sum()),
        "max_perturbation": float(size.max()),
        "log": log.lines,
        "numerics": numerics,
    }


VERSIONS = {"standard": "aa", "plus": "aa-plus", "rand": "aa-rand"}  # reference version -> tfrobust --attack


def eps_value(eps_units: float, norm: str) -> float:
    """`--eps` in 1/255 units for Linf, as it is for L2 and L1."""
    return eps_units / 255.0 if norm == "linf" else eps_units


def reference_side(args, model, x, y, eps: float, num_classes: int) -> dict:
    """The reference cascade for `args.version` / `args.norm`, by `args.reference`."""
    if args.noise:
        model = torch_noisy(model, args.noise)
    if args.reference == "torchattacks":
        return torch_cascade(model, x, y, args.norm, eps, args.batch_size, args.seed, num_classes)
    return autoattack_cascade(model, x, y, args.norm, eps, args.version, args.batch_size, args.seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="Run directory of `tfrobust train` (its summary names the export).")
    parser.add_argument("--data", help="npz with `image`/`label` of held-out images.")
    parser.add_argument("--n-examples", type=int, default=500)
    parser.add_argument(
        "--eps", type=float, nargs="+", default=[1.0, 2.0], help="Radii in 1/255 units (linf) or raw (l2, l1)."
    )
    parser.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    parser.add_argument(
        "--version",
        default="standard",
        choices=sorted(VERSIONS),
        help="AutoAttack version: tfrobust runs --attack aa / aa-plus / aa-rand, the reference version=... .",
    )
    parser.add_argument(
        "--reference",
        default="autoattack",
        choices=["autoattack", "torchattacks"],
        help="autoattack: the reference package itself (pyautoattack, every version and norm); torchattacks: "
        "its ports, the standard version at Linf/L2 only.",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="Attack a randomised model: the network behind Gaussian input noise N(0, SIGMA^2), a fresh draw per "
        "call, on both sides (for --version rand).",
    )
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
    if args.reference == "torchattacks" and (args.version != "standard" or args.norm == "l1"):
        raise SystemExit("--reference torchattacks runs the standard version at linf/l2 only")
    if args.bundle:
        return main_bundle(args)
    if not args.run or not args.data:
        raise SystemExit("--run and --data are required (unless --bundle)")

    # tfrobust first: importing it sets TF_ENABLE_ONEDNN_OPTS=1 (unless set), as for `tfrobust eval`; imported
    # after TensorFlow it is too late and, on CPUs without AVX512-VNNI, TF runs its slower Eigen kernels.
    import tensorflow as tf
    import torch

    import tfrobust
    from tfrobust.benchmark import cpu_name
    from tfrobust.evaluation import onednn_enabled
    from tfrobust.export import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    with open(os.path.join(args.run, "summary.json")) as handle:
        export_path = json.load(handle)["export"]
    config, info, network = trained_network(args.run)
    reference = torch_model(config, info, network)
    with np.load(args.data, allow_pickle=False) as data:
        x = data["image"][: args.n_examples].astype(np.float32) / 255.0
        y = data["label"][: args.n_examples].astype(np.int64)
    saved_model = load_model(export_path)
    saved = np.concatenate([np.asarray(saved_model.logits(tf.constant(x[i : i + 250]))) for i in range(0, len(x), 250)])
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
        "run": args.run,
        "model": export_path,
        "data": args.data,
        "n_examples": len(x),
        "norm": args.norm,
        "version": args.version,
        "tfrobust_attack": VERSIONS[args.version],
        "reference": args.reference,
        "noise_sigma": args.noise,
        "seed": args.seed,
        "max_logit_gap": gap,
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "versions": {"tensorflow": tf.__version__, "torch": torch.__version__, "onednn": onednn_enabled()},
        "eps": {},
    }
    for eps_units in args.eps:
        eps = eps_value(eps_units, args.norm)
        entry = {}
        if args.only in ("both", "tf"):
            tag = f"{VERSIONS[args.version]}-{args.norm}-{eps_units:g}-{time.strftime('%H%M%S')}"
            began = time.time()
            evaluation = tfrobust.evaluate(
                tf_noisy(saved_model.logits, args.noise, args.seed) if args.noise else export_path,
                x,
                y,
                attack=VERSIONS[args.version],
                norm=args.norm,
                eps=eps,
                batch_size=args.batch_size,
                seed=args.seed,
                report=os.path.join(out_dir, f"tfrobust-{tag}.json"),
            )
            entry["tfrobust"] = {**evaluation.report, "wall_seconds": round(time.time() - began, 2)}
        if args.only in ("both", "torch"):
            entry["reference"] = reference_side(args, reference, x, y, eps, info.num_classes)
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
        "version": args.version,
        "reference": args.reference,
        "noise_sigma": args.noise,
        "seed": args.seed,
        "machine": machine,
        "versions": {"torch": torch.__version__},
        "eps": {},
    }
    for eps_units in args.eps:
        entry = {"reference": reference_side(args, model, x, y, eps_value(eps_units, args.norm), num_classes)}
        results["eps"][f"{eps_units:g}"] = entry
        print(format_comparison(eps_units, args.norm, entry), flush=True)
    with open(args.out, "x") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    print(f"wrote {args.out} ({machine})")


def format_comparison(eps_units: float, norm: str, entry: dict) -> str:
    """Markdown rows: stage, tfrobust accuracy and seconds, reference accuracy and seconds (stages in order;
    both sides run the same version, so row i is the same attack on both)."""
    unit = "/255" if norm == "linf" else ""
    lines = [
        f"\n{norm} eps {eps_units:g}{unit}",
        "| stage | tfrobust | s | reference | s |",
        "|---|---|---|---|---|",
    ]
    tf_side, ref_side = entry.get("tfrobust"), entry.get("reference")
    rows = max(len(side["stages"]) for side in (tf_side, ref_side) if side)

    def cell(side, index):
        if side is None or (index is not None and index >= len(side["stages"])):
            return "-", "-", ""
        if index is None:
            return f"{100 * side['clean_accuracy']:.1f}%", "", ""
        stage = side["stages"][index]
        return f"{100 * stage['robust_accuracy']:.1f}%", f"{stage['seconds']:.0f}", stage["attack"]

    for index in [None, *range(rows)]:
        a, b = cell(tf_side, index), cell(ref_side, index)
        name = "clean" if index is None else (a[2] or b[2])
        if index is not None and a[2] and b[2] and a[2].split("@")[0] != b[2]:  # "apgd-ce@plus" is "apgd-ce"
            name = f"{a[2]} / {b[2]}"
        lines.append(f"| {name} | {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
    if tf_side and ref_side:
        lines.append(f"| total time | | {tf_side['seconds']:.0f} | | {ref_side['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
