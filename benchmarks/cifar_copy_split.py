"""Splits the CIFAR-10 training copy (`shared/data/cifar10_train.npz` beside the checkout, JPEG-decoded) into train/test npz.

The copy has no test split and is sorted by class, so experiments need a seeded shuffle and a held-out
part. Both outputs are in the paper's npz layout (`image` uint8 NHWC, `label` int64), so they go straight
into `tfrobust train --dataset npz:...` and `tfrobust eval --dataset npz:... --split train --val-size 0`.
Both are written in the seeded random order, so that the first N images (`--n-examples N`) are a uniform
sample of the classes. (Until 2026-11-27 the script wrote them sorted back by class: the first 500 held-out
images were all airplanes. Same seed, same 5,000 held-out images; only their order changed.)

    python benchmarks/cifar_copy_split.py --out exp                  # c10_train.npz (45000), c10_test.npz (5000)

Numbers measured on these files are "CIFAR-10 train, JPEG copy" numbers: not comparable to the CIFAR-10
test set's.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=os.path.join("..", "shared", "data", "cifar10_train.npz"))
    parser.add_argument("--out", required=True, help="Folder for c10_train.npz and c10_test.npz.")
    parser.add_argument("--test-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with np.load(args.source, allow_pickle=False) as data:
        images, labels = data["image"], data["label"].astype(np.int64)
    order = np.random.default_rng(args.seed).permutation(len(labels))
    test, train = order[: args.test_size], order[args.test_size :]
    os.makedirs(args.out, exist_ok=True)
    # Not re-sorted: the copy is sorted by class, and a prefix of the files must be a uniform sample.
    for name, idx in (("c10_train.npz", train), ("c10_test.npz", test)):
        path = os.path.join(args.out, name)
        if os.path.exists(path):
            raise SystemExit(f"{path} exists: remove it first")
        np.savez(path, image=images[idx], label=labels[idx])
        print(f"{path}: {len(idx)} images, per class {np.bincount(labels[idx], minlength=10).tolist()}")


if __name__ == "__main__":
    main()
