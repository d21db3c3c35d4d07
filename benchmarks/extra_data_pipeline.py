"""Input throughput of the generated-data pipeline (`tfrobust.data.mixing`) and its peak memory.

Builds (once, then reuses) a generated set of `--n-generated` random 32x32x3 uint8 images with labels as
uncompressed npz shards of 100K images (the layout `tfrobust generate`/`pseudolabel`/`pack` write; 1M
images = 3.07 GB) under `--dir`, mixes it with `--n-real` original CIFAR-sized images held in memory at
`--ratio` original images per batch, and times batches/s of the tf.data pipeline alone (no model) for
each batch size and augmentation chain, after a warm-up. Also times the original-only pipeline
(`pipeline.train_dataset`) with the same augmentation, for comparison. Peak memory is the process's
VmHWM (peak resident set, memory-mapped file pages included) and RssAnon (anonymous memory: what is
really allocated) after each configuration.

    python benchmarks/extra_data_pipeline.py --n-generated 1000000 --steps 40
    python benchmarks/extra_data_pipeline.py --n-generated 200000 --steps 30   # the run reported below

Measured (2 vCPU AMD EPYC, KVM, no GPU, TF 2.21 CPU; the CPU was shared with other jobs, load average
2.5-4.7; 1M generated images, 3.07 GB, in the page cache since they had just been written), images/s
mixed / original only: no augmentation 18,481 / 159,376 (batch 512) and 20,156 / 76,577 (1024);
padcrop+cutmix 10,701 / 18,958 (512) and 16,553 / 18,944 (1024); peak RSS 1.5 GB for the whole process,
anonymous memory under 1 GB. Full table: benchmarks/README.md, "Generated-data input pipeline".
For comparison: one TRADES-10 step of WRN-16-4 consumes about 5-7 images/s on this machine, and
WRN-28-10 on an H100 is of the order of 1-2K images/s: the pipeline stays 10x above that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SHARD = 100_000


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def build_generated_set(directory: str, n: int, seed: int = 0) -> None:
    """Random uint8 images + labels as npz shards (written once; reused when `directory` already has them)."""
    from tfrobust.generators.writer import OutputDir, shard_counts

    out = OutputDir(directory, command="benchmark-random", params={"n": n, "shard": SHARD, "seed": seed})
    if out.complete:
        return
    start = time.time()
    for index, count in enumerate(shard_counts(n, SHARD)):
        if out.has_shard(index):
            continue
        rng = np.random.default_rng([seed, index])
        out.write_shard(
            index, rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count, dtype=np.int64)
        )
    out.finish({"images": n, "seconds_to_write": round(time.time() - start, 1)})
    print(f"wrote {n} images to {directory} in {time.time() - start:.1f} s", flush=True)


def time_dataset(ds, steps: int, warmup: int, batch_size: int) -> float:
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-generated", type=int, default=1_000_000)
    parser.add_argument("--n-real", type=int, default=50_000)
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tfrobust-bench-extra"))
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--augs", nargs="+", default=["none", "padcrop+cutmix"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()

    directory = os.path.join(args.dir, f"random-{args.n_generated}")
    build_generated_set(directory, args.n_generated)

    import tensorflow as tf

    from tfrobust.augment.registry import build_augmentation, parse_aug
    from tfrobust.data.datasets import Split
    from tfrobust.data.extra import open_extra_data
    from tfrobust.data.mixing import mixed_train_dataset
    from tfrobust.data.pipeline import train_dataset

    rng = np.random.default_rng(1)
    real = Split(
        images=rng.integers(0, 256, (args.n_real, 32, 32, 3), dtype=np.uint8),
        labels=rng.integers(0, 10, args.n_real).astype(np.int64),
    )
    extra = open_extra_data([directory], num_classes=10)
    print(
        f"generated: {len(extra)} images in {len(extra.shards)} shards; original: {len(real)} in memory; "
        f"{os.cpu_count()} CPUs; TF {tf.__version__}",
        flush=True,
    )
    results = []
    for aug in args.augs:
        names = parse_aug(aug)
        layer = build_augmentation(names, image_shape=(32, 32, 3), allow_flip=True) if names else None
        augment = (lambda batch, seed, layer=layer: layer(batch, training=True, seed=seed)) if layer else None
        for batch_size in args.batch_sizes:
            steps_per_epoch = len(real) // batch_size
            for source in ("mixed", "original only"):
                if source == "mixed":
                    ds = mixed_train_dataset(
                        real,
                        extra,
                        num_classes=10,
                        batch_size=batch_size,
                        real_ratio=args.ratio,
                        label_smoothing=0.1,
                        seed=0,
                        first_epoch=0,
                        steps_per_epoch=steps_per_epoch,
                        augment=augment,
                    )
                else:
                    ds = train_dataset(
                        real,
                        num_classes=10,
                        batch_size=batch_size,
                        seed=0,
                        first_epoch=0,
                        steps_per_epoch=steps_per_epoch,
                        augment=augment,
                    )
                rate = time_dataset(ds, args.steps, args.warmup, batch_size)
                row = {
                    "source": source,
                    "aug": aug,
                    "batch_size": batch_size,
                    "images_per_second": round(rate),
                    "peak_rss_mb": round(proc_status_kb("VmHWM") / 1024),
                    "rss_anon_mb": round(proc_status_kb("RssAnon") / 1024),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
                del ds
    print()
    print("| source | aug | batch | images/s | peak RSS (MB) | anon RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['source']} | {r['aug']} | {r['batch_size']} | {r['images_per_second']:,} | "
            f"{r['peak_rss_mb']:,} | {r['rss_anon_mb']:,} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
