"""Per-iteration cost of tfrobust's attacks against torchattacks', in one process, interleaved.

What it does: on the images of an `aa_reference.py --write-bundle` file that the model classifies
correctly (at most --n), at a radius too small to break any of them (so both sides do the full work),
times alternately in the same process — the only fair way on a VM whose speed drifts — (0) the model's
forward pass alone and (1) its forward+backward (input gradient), in TF (the SavedModel) and in PyTorch
(the bundle's copy), (2) one 100-iteration APGD-T run towards one target, (3) one 100-iteration FAB-T
run; median of 3 each.

    PYTHONPATH=pydeps python benchmarks/attack_step_profile.py \\
        --model exp/saved_models/c10-wrn-10-1-standard/2 --bundle std101.npz

`--norm l1 --eps E` (raw L1 radius, small enough that nothing breaks) times the L1 attacks of AutoAttack's
L1 standard version instead, against the reference itself (pyautoattack 0.2.0, which torchattacks lacks
for L1): (2) one APGD-CE run of 100 iterations with the `use_largereps` schedule (tfrobust's `APGD` called
as the cascade calls it; the reference's `APGDAttack.perturb`, 1 restart), (3) Square-L1, `--queries`
queries; and (4) the L1 projection alone on the images' random perturbations of L1 norm 3·eps (tfrobust's
`l1_box_projection`; the reference's `L1_projection`).

    PYTHONPATH=pydeps python benchmarks/attack_step_profile.py --model M --bundle B --norm l1 --eps 0.05

Measured 2026-12-01 on 2 vCPUs of an AMD EPYC (Zen4) with the projection's extra halving and its XLA
program (WRN-10-1, 128 images, L1 eps 0.05, nothing broken), median of 3: projection x10 0.059 s against
0.184 s (3.13); APGD-CE L1 100 iterations 8.71 s against 11.37 s (1.31); Square-L1 300 queries 11.05 s
against 13.56 s (1.23). Before them, measured 2026-12-01 on 2 vCPUs of an Intel Xeon (AVX512-BF16, AMX)
(WRN-10-1, 128 images, L1 eps 0.05, nothing broken), median of 3: projection x10 0.258 s against 0.205 s (0.79); APGD-CE L1 100 iterations
12.89 s against 13.16 s (1.02); Square-L1 300 queries 26.75 s against 17.55 s (0.66).

Measured 2026-11-27 on 2 vCPUs of an AMD EPYC (Zen3) (WRN-10-1, 86 images, Linf 0.25/255), median of 3:
| | tfrobust | torchattacks | ratio |
|---|---|---|---|
| forward x10 | 0.55 s | 0.96 s | 1.76 |
| forward + input gradient x10 | 1.24 s | 1.56 s | 1.26 |
| APGD-T, one target, 100 iterations | 12.08 s | 16.07 s | 1.33 |
| FAB-T, one target, 100 iterations | 21.93 s | 27.78 s | 1.27 |
An earlier version of this script imported TensorFlow before tfrobust, so TF ran without its oneDNN
kernels (TF turns them on by default only on CPUs with AVX512-VNNI/BF16/AMX; `import tfrobust` turns them
on, as `tfrobust eval` runs): forward + gradient 1.73 s against PyTorch's 1.14 s, APGD-T 18.35 s against
12.84 s. The same pass in TF-only processes, oneDNN off/on alternately: 185-223 ms against 113-131 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def correct_images(args):
    """(the SavedModel, the bundle's PyTorch model, the first `args.n` images both classify correctly, their
    labels int32, their TF logits, the number of classes)."""
    import tensorflow as tf
    from aa_reference import read_bundle

    from tfrobust.export import load_model

    model = load_model(args.model)  # keep it: its variables live as long as the object
    tm, images, labels, num_classes = read_bundle(args.bundle, "cpu")
    logits = np.asarray(model.logits(tf.constant(images)))
    keep = np.flatnonzero(logits.argmax(-1) == labels)[: args.n]
    return model, tm, images[keep], labels[keep].astype(np.int32), logits[keep], num_classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="tfrobust SavedModel (the bundle's model).")
    parser.add_argument("--bundle", required=True, help="aa_reference.py --write-bundle file of the same model.")
    parser.add_argument("--n", type=int, default=86)
    parser.add_argument(
        "--eps", type=float, default=0.25, help="Linf: radius in 1/255 units; L1: raw radius (small: nothing breaks)."
    )
    parser.add_argument("--norm", choices=["linf", "l1"], default="linf")
    parser.add_argument("--queries", type=int, default=300, help="Square-L1 queries (--norm l1).")
    args = parser.parse_args()
    if args.norm == "l1":
        return main_l1(args)

    # tfrobust first: importing it sets TF_ENABLE_ONEDNN_OPTS=1 (unless set), as for `tfrobust eval`; imported
    # after TensorFlow it is too late and, on CPUs without AVX512-VNNI, TF runs its slower Eigen kernels.
    import tensorflow as tf
    import torch
    import torchattacks

    import tfrobust  # noqa: F401
    from tfrobust.attacks.apgd import APGD
    from tfrobust.attacks.fab import FABTargeted

    model, tm, x, y, logits, num_classes = correct_images(args)
    fn = model.logits
    masked = logits.copy()
    masked[np.arange(len(y)), y] = -np.inf
    target = masked.argmax(-1).astype(np.int32)  # the first APGD-T / FAB-T target
    eps = args.eps / 255
    img = tf.TensorSpec([None, *x.shape[1:]])
    lab = tf.TensorSpec([None], tf.int32)
    sd = tf.TensorSpec([2], tf.int64)

    @tf.function(input_signature=[img])
    def forward_backward(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            total = tf.reduce_sum(fn(v))
        return tape.gradient(total, v)

    forward = tf.function(fn, input_signature=[img])
    apgd, fab = APGD("linf", eps, "dlr-targeted"), FABTargeted("linf", eps)
    apgd_run = tf.function(lambda v, t, g, s: apgd.single_run(fn, v, t, g, s)[0], input_signature=[img, lab, lab, sd])
    fab_run = tf.function(
        lambda v, t, g, s: fab.single_run(fn, v, t, g, s, stop_at=eps)[0], input_signature=[img, lab, lab, sd]
    )
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
    yt = torch.tensor(y).long()
    ref_apgd = torchattacks.APGDT(tm, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=num_classes, seed=0)
    ref_fab = torchattacks.FAB(
        tm, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=num_classes, seed=0
    )
    ref_apgd.n_target_classes = ref_fab.n_target_classes = 1
    xs, ys, ts, seed = tf.constant(x), tf.constant(y), tf.constant(target), tf.constant([0, 1], tf.int64)

    def tf_fb():
        for _ in range(10):
            out = forward_backward(xs)
        out.numpy()

    def tf_f():
        for _ in range(10):
            out = forward(xs)
        out.numpy()

    def torch_f():
        with torch.no_grad():
            for _ in range(10):
                tm(xt)

    def torch_fb():
        for _ in range(10):
            v = xt.clone().requires_grad_(True)
            torch.autograd.grad(tm(v).sum(), v)

    cases = [
        ("forward x10", tf_f, torch_f),
        ("forward+backward x10", tf_fb, torch_fb),
        ("APGD-T, 1 target x100", lambda: apgd_run(xs, ys, ts, seed).numpy(), lambda: ref_apgd(xt, yt)),
        ("FAB-T, 1 target x100", lambda: fab_run(xs, ys, ts, seed).numpy(), lambda: ref_fab(xt, yt)),
    ]
    from tfrobust.evaluation import onednn_enabled

    print(
        f"{len(x)} images, Linf eps {args.eps:g}/255, TF {tf.__version__} (oneDNN {onednn_enabled()}), "
        f"torch {torch.__version__}"
    )
    interleaved(cases, "tfrobust", "torchattacks")


def interleaved(cases, ours_name: str, reference_name: str) -> None:
    """Each case's two callables alternately, after one warm-up call each: the median of 3 of each."""
    for name, ours, reference in cases:
        ours(), reference()  # warm-up (tracing, allocations)
        a, b = [], []
        for _ in range(3):
            began = time.perf_counter()
            ours()
            a.append(time.perf_counter() - began)
            began = time.perf_counter()
            reference()
            b.append(time.perf_counter() - began)
        print(
            f"{name:28s} {ours_name} {np.median(a):7.3f} s   {reference_name} {np.median(b):7.3f} s   "
            f"speed ratio {np.median(b) / np.median(a):.2f}",
            flush=True,
        )


def main_l1(args) -> None:
    """The L1 cases (`--norm l1`) against the reference itself (pyautoattack)."""
    import tensorflow as tf
    import torch
    from pyautoattack.autopgd_base import APGDAttack, L1_projection
    from pyautoattack.square import SquareAttack

    import tfrobust  # noqa: F401
    from tfrobust.attacks.apgd import APGD
    from tfrobust.attacks.projection import l1_box_projection
    from tfrobust.attacks.square import Square
    from tfrobust.evaluation import onednn_enabled

    model, tm, x, y, _, num_classes = correct_images(args)
    fn = model.logits
    eps = float(args.eps)
    img = tf.TensorSpec([None, *x.shape[1:]])
    lab = tf.TensorSpec([None], tf.int32)
    sd = tf.TensorSpec([2], tf.int64)
    apgd = APGD("l1", eps, "ce", n_iter=100, n_restarts=1, use_largereps=True)
    square = Square("l1", eps, n_queries=args.queries)
    apgd_run = tf.function(lambda v, t, s: apgd(fn, v, t, s), input_signature=[img, lab, sd])
    square_run = tf.function(lambda v, t, s: square(fn, v, t, s), input_signature=[img, lab, sd])
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
    yt = torch.tensor(y).long()
    ref_apgd = APGDAttack(tm, norm="L1", eps=eps, n_iter=100, n_restarts=1, seed=0, device="cpu", use_largereps=True)
    ref_apgd.loss = "ce"
    ref_square = SquareAttack(tm, norm="L1", eps=eps, n_queries=args.queries, seed=0, device="cpu", resc_schedule=False)
    xs, ys, seed = tf.constant(x), tf.constant(y), tf.constant([0, 1], tf.int64)

    # The projection alone: random perturbations of L1 norm 3·eps (the first largereps radius) onto eps.
    delta = np.random.default_rng(0).laplace(size=x.shape).astype(np.float32)
    delta *= 3 * eps / np.abs(delta).reshape(len(x), -1).sum(1)[:, None, None, None]
    project = tf.function(lambda d, v: l1_box_projection(d, v, eps), input_signature=[img, img])
    ds, dt = tf.constant(delta), torch.tensor(delta).permute(0, 3, 1, 2).contiguous()

    def tf_projections():
        for _ in range(10):
            out = project(ds, xs)
        out.numpy()

    def torch_projections():
        for _ in range(10):
            L1_projection(xt, dt, eps)

    print(
        f"{len(x)} images, L1 eps {eps:g}, TF {tf.__version__} (oneDNN {onednn_enabled()}), "
        f"torch {torch.__version__}, pyautoattack 0.2.0"
    )
    interleaved(
        [
            ("L1 projection x10", tf_projections, torch_projections),
            (
                "APGD-CE L1, largereps x100",
                lambda: apgd_run(xs, ys, seed).numpy(),
                lambda: ref_apgd.perturb(xt, yt),
            ),
            (
                f"Square-L1, {args.queries} queries",
                lambda: square_run(xs, ys, seed).numpy(),
                lambda: ref_square.perturb(xt, yt),
            ),
        ],
        "tfrobust",
        "reference",
    )
    # Full work on both sides only if nothing breaks (a broken point leaves tfrobust's run early).
    for name, adv in (("APGD-CE L1", apgd_run(xs, ys, seed)), ("Square-L1", square_run(xs, ys, seed))):
        broken = int(np.sum(np.asarray(fn(adv)).argmax(-1) != y))
        print(f"{name}: {broken} of {len(y)} images broken at eps {eps:g}", flush=True)


if __name__ == "__main__":
    main()
