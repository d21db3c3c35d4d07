"""Per-iteration cost of tfrobust's attacks against torchattacks', in one process, interleaved.

What it does: on the images of an `aa_reference.py --write-bundle` file that the model classifies
correctly (at most --n), at a radius too small to break any of them (so both sides do the full work),
times alternately in the same process — the only fair way on a VM whose speed drifts — (0) the model's
forward pass alone and (1) its forward+backward (input gradient), in TF (the SavedModel) and in PyTorch
(the bundle's copy), (2) one 100-iteration APGD-T run towards one target, (3) one 100-iteration FAB-T
run; median of 3 each.

    PYTHONPATH=pydeps python benchmarks/attack_step_profile.py \\
        --model exp/saved_models/c10-wrn-10-1-standard/2 --bundle std101.npz

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="tfrobust SavedModel (the bundle's model).")
    parser.add_argument("--bundle", required=True, help="aa_reference.py --write-bundle file of the same model.")
    parser.add_argument("--n", type=int, default=86)
    parser.add_argument("--eps", type=float, default=0.25, help="Linf radius in 1/255 units (small: nothing breaks).")
    args = parser.parse_args()

    # tfrobust first: importing it sets TF_ENABLE_ONEDNN_OPTS=1 (unless set), as for `tfrobust eval`; imported
    # after TensorFlow it is too late and, on CPUs without AVX512-VNNI, TF runs its slower Eigen kernels.
    import tensorflow as tf
    import torch
    import torchattacks
    from aa_reference import read_bundle

    import tfrobust  # noqa: F401
    from tfrobust.attacks.apgd import APGD
    from tfrobust.attacks.fab import FABTargeted
    from tfrobust.export import load_model

    model = load_model(args.model)  # keep it: its variables live as long as the object
    fn = model.logits
    tm, images, labels, num_classes = read_bundle(args.bundle, "cpu")
    logits = np.asarray(fn(tf.constant(images)))
    keep = np.flatnonzero(logits.argmax(-1) == labels)[: args.n]
    x, y = images[keep], labels[keep].astype(np.int32)
    masked = logits[keep].copy()
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
            f"{name:24s} tfrobust {np.median(a):7.2f} s   torchattacks {np.median(b):7.2f} s   "
            f"speed ratio {np.median(b) / np.median(a):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
