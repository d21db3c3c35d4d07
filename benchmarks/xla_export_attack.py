"""Export the XLA programs of `tfrobust eval --jit-compile on` (each stage's attack, the verdicts' forward pass)
for `xla_run_attack.py`, which runs the whole cascade without TensorFlow.

The input is a bundle of `aa_reference.py --write-bundle`: the model's weights in the reference's layout, its
architecture, the images and labels. The reference AutoAttack runs from the same file where TensorFlow is not
installed (`aa_reference.py --bundle`), so both sides attack one model and one set of images on one GPU.

For each stage the program is what `Evaluator(jit_compile=True)` compiles (`engine.Evaluator._functions`):
`attack(logits_fn, images, labels, seed)` of `cascades.STAGES[stage](norm, eps)` with `fixed_shape=True`,
at exactly `--batch-size` rows (at most the bundle's images, as `tfrobust eval` would batch them), traced by `tf.function(jit_compile=True)` and lowered to HLO
(`experimental_get_compiler_ir(...)(stage="hlo_serialized")`). Parameters: images [B, H, W, C] float32,
one-hot labels [B, K] float32, the stateless seed [2] int64, then every tensor the program captures (the
network's variables) in TensorFlow's capture order; one output, the candidates [B, H, W, C]. The forward
pass takes `engine.VERIFY_ROWS` rows (`fixed_layout_logits`) and returns float32 logits.

Files: PREFIX.json (the contract above), PREFIX.STAGE.hlo.pb per stage, PREFIX.predict.hlo.pb, PREFIX.npz
(the captured values, the images and labels; with `--values`, TensorFlow's candidates for the first batch of
each stage, from the XLA program and from the plain graph, for `xla_run_attack.py --check`).

    python benchmarks/aa_reference.py --run RUN --data D.npz --n-examples 200 --eps 2 --write-bundle b.npz --out x
    python benchmarks/xla_export_attack.py --bundle b.npz --eps 2 --attack aa --batch-size 250 --out xla/aa_wrn10
    python benchmarks/xla_run_attack.py xla/aa_wrn10 --json results/xla_aa.json     # JAX + NumPy only

`--iterations N` replaces each stage's iteration count (APGD's and FAB's `n_iter`, Square's `n_queries`):
for quick checks only, the numbers of a real evaluation need the stages as they are. Runtime: about 1 s
of lowering per stage for a WRN-10-1 on 2 CPUs, 10 s for the four stages of `aa` with TensorFlow's
start-up (nothing is compiled for a device here; `--values` also runs each stage once in TensorFlow).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfrobust  # noqa: E402,F401  (before TensorFlow's first op: tfrobust sets oneDNN on)
from tfrobust.errors import UserError  # noqa: E402
from tfrobust.evaluation.cascades import STAGES  # noqa: E402
from tfrobust.evaluation.engine import VERIFY_ROWS, keras_logits_fn  # noqa: E402
from tfrobust.evaluation.versions import resolve_attack  # noqa: E402
from tfrobust.importer import StateDict, build_imported_network  # noqa: E402
from tfrobust.numerics import full_float32  # noqa: E402

FORMAT = "tfrobust-xla-attack-1"


def network_from_bundle(path: str):
    """(Keras network, images [N, H, W, C] float32 in [0, 1], labels [N] int64) from a bundle.

    The network is tfrobust's architecture filled with the bundle's reference-layout weights by the importer
    (`tfrobust import`'s code path); the dataset name only fixes the input shape and number of classes."""
    with np.load(path, allow_pickle=False) as data:
        arch = json.loads(str(data["arch"]))
        tensors = {k[2:]: np.asarray(data[k], np.float32) for k in data.files if k.startswith("w/")}
        images, labels = np.asarray(data["image"], np.float32), np.asarray(data["label"], np.int64)
    dataset = {(32, 32, 3, 10): "cifar10", (32, 32, 3, 100): "cifar100"}.get((*images.shape[1:], arch["num_classes"]))
    if dataset is None:
        raise SystemExit(f"{path}: images {images.shape[1:]} with {arch['num_classes']} classes are not CIFAR's")
    tensors["mean"], tensors["std"] = np.asarray(arch["mean"], np.float32), np.asarray(arch["std"], np.float32)
    state = StateDict(tensors=tensors, nested_under=None, prefix_stripped=False)
    with warnings.catch_warnings():  # the bundle's statistics are the model's own, not a dataset's
        warnings.filterwarnings("ignore", message=".*normalisation")
        network, _ = build_imported_network(
            state,
            arch=f"wrn-{arch['depth']}-{arch['width']}",
            dataset=dataset,
            activation=arch["activation"],
            path=path,
        )
    return network, images, labels


def stage_attack(stage: str, norm: str, eps: float, iterations: int | None = None):
    """The stage's attack as `Evaluator(jit_compile=True)` configures it (optionally fewer iterations)."""
    attack = dataclasses.replace(STAGES[stage](norm, eps), fixed_shape=True)
    if iterations is not None:
        field = "n_queries" if hasattr(attack, "n_queries") else "n_iter"
        attack = dataclasses.replace(attack, **{field: iterations})
    return attack


def _bound(attack, logits_fn):
    """`(images, labels, seed) -> candidates`, as `Evaluator._functions` binds a stage to the model."""
    return lambda images, labels, seed: attack(logits_fn, images, labels, seed)


def _lower(function, args) -> tuple[bytes, list, float]:
    """(HLO, captured tensors in parameter order after `args`, seconds) of a jit-compiled tf.function."""
    start = time.perf_counter()
    concrete = function.get_concrete_function(*args)
    hlo = function.experimental_get_compiler_ir(*args)(stage="hlo_serialized")
    return hlo, list(concrete.captured_inputs), time.perf_counter() - start


def _captured_values(captured, network) -> list[np.ndarray]:
    """The values of captured tensors: a variable handle's variable of `network`, a constant as it is."""
    variables = {id(v.value.handle): v.value for v in network.weights}  # Keras variable -> tf.Variable
    values = []
    for tensor in captured:
        if tensor.dtype == tf.resource:
            if id(tensor) not in variables:
                raise RuntimeError(f"the program captures a variable that is not the network's: {tensor!r}")
            values.append(variables[id(tensor)].numpy())
        else:
            values.append(tensor.numpy())
    return values


def export(
    out: str,
    bundle: str,
    *,
    norm: str,
    eps: float,
    stages: tuple[str, ...],
    batch_size: int,
    iterations: int | None = None,
    values: bool = False,
    seed: int = 0,
) -> dict:
    """Writes the programs, PREFIX.json and PREFIX.npz (module docstring); returns the spec."""
    network, images, labels = network_from_bundle(bundle)
    # `tfrobust eval` attacks batches of the data set's first batch's size: at most the number of images.
    batch_size = min(batch_size, len(images))
    logits_fn = keras_logits_fn(network)
    num_classes = int(network.output_shape[-1])
    shape = tuple(images.shape[1:])
    x = tf.constant(images[:batch_size])
    y = tf.one_hot(labels[:batch_size], num_classes)
    seed_tensor = tf.constant([seed, 0], tf.int64)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    arrays: dict[str, np.ndarray] = {"images": images, "labels": labels}
    programs = {}
    with full_float32():
        predict = tf.function(
            logits_fn, input_signature=[tf.TensorSpec([VERIFY_ROWS, *shape], tf.float32)], jit_compile=True
        )
        hlo, captured, seconds = _lower(predict, (tf.zeros([VERIFY_ROWS, *shape]),))
        programs["predict"] = _write_program(out, "predict", hlo, _captured_values(captured, network), arrays, seconds)
        for stage in stages:
            attack = stage_attack(stage, norm, eps, iterations)
            function = tf.function(_bound(attack, logits_fn), jit_compile=True)
            hlo, captured, seconds = _lower(function, (x, y, seed_tensor))
            programs[stage] = _write_program(out, stage, hlo, _captured_values(captured, network), arrays, seconds)
            if values:
                arrays[f"tf_xla_{stage}"] = function(x, y, seed_tensor).numpy()
                arrays[f"tf_{stage}"] = tf.function(function.python_function)(x, y, seed_tensor).numpy()
            print(f"{stage}: lowered in {seconds:.1f} s", flush=True)
    spec = {
        "format": FORMAT,
        "bundle": os.path.basename(bundle),
        "norm": norm,
        "eps": eps,
        "stages": list(stages),
        "batch_size": batch_size,
        "verify_rows": VERIFY_ROWS,
        "iterations": iterations,
        "image_shape": list(shape),
        "num_classes": num_classes,
        "values_seed": seed,
        "programs": programs,
        "tensorflow": tf.__version__,
    }
    np.savez(out + ".npz", **arrays)
    with open(out + ".json", "w") as handle:
        json.dump(spec, handle, indent=1)
    return spec


def _write_program(out: str, name: str, hlo: bytes, captured: list, arrays: dict, seconds: float) -> dict:
    """Writes PREFIX.NAME.hlo.pb; the captured values go into `arrays` under NAME/k."""
    with open(f"{out}.{name}.hlo.pb", "wb") as handle:
        handle.write(hlo)
    for k, value in enumerate(captured):
        arrays[f"{name}/{k:04d}"] = value
    return {"hlo": f"{os.path.basename(out)}.{name}.hlo.pb", "captured": len(captured), "lowering_seconds": seconds}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="an `aa_reference.py --write-bundle` npz")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--eps", type=float, required=True, help="Linf: in 1/255 units (8 means 8/255); L2: as is")
    p.add_argument("--attack", default="aa", help="a cascade (aa) or stages separated by commas (apgd-ce,apgd-t)")
    p.add_argument("--batch-size", type=int, default=250, help="at most the bundle's number of images")
    p.add_argument("--iterations", type=int, default=None, help="replace each stage's iterations (quick checks)")
    p.add_argument("--values", action="store_true", help="also save TensorFlow's candidates of the first batch")
    p.add_argument("--out", required=True, help="path prefix: PREFIX.json, PREFIX.*.hlo.pb, PREFIX.npz")
    args = p.parse_args(argv)
    try:
        stages = resolve_attack(args.attack)
    except UserError as error:
        raise SystemExit(str(error)) from None
    eps = args.eps / 255.0 if args.norm == "linf" else args.eps
    if os.path.exists(args.out + ".json"):
        raise SystemExit(f"{args.out}.json exists")
    spec = export(
        args.out,
        args.bundle,
        norm=args.norm,
        eps=eps,
        stages=stages,
        batch_size=args.batch_size,
        iterations=args.iterations,
        values=args.values,
    )
    print(f"{args.out}: {', '.join(spec['stages'])} at batch {spec['batch_size']}, {args.norm} eps {eps:.5g}")


if __name__ == "__main__":
    sys.exit(main())
