"""`tfrobust generate`: fit a generator on a dataset's training split and stream N samples to shards.

Shard i is sampled with its own generator `np.random.default_rng([seed, i])`, so the output is the same
whether it was written in one go or resumed after an interruption (finished shards are skipped), and
memory stays at one shard whatever N.
"""

from __future__ import annotations

import collections
import os
import time
from typing import Any

import numpy as np

from tfrobust.errors import UserError
from tfrobust.generators.registry import make_generator
from tfrobust.generators.writer import OutputDir, shard_counts


def generate(
    generator: str,
    dataset: str,
    n: int,
    output: str,
    *,
    shard_size: int = 100_000,
    seed: int = 0,
    val_size: int = 1024,
    data_dir: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Writes `n` generated, labelled images of `dataset`'s shape to `output`/shard-*.npz; returns the summary.

    The generator sees only the training split left after holding out the `val_size` validation images
    (chosen by `seed`, as `tfrobust train` does with the same --val-size and --seed), so the images a
    run uses for model selection never shape the generated data.
    """
    import keras  # lazy: only for the progress bar

    from tfrobust.data.datasets import load_dataset

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"--n must be a positive number of images, got {n!r}")
    model = make_generator(generator)
    counts = shard_counts(int(n), shard_size)
    params = {
        "generator": generator,
        "dataset": dataset,
        "n": int(n),
        "shard_size": int(shard_size),
        "seed": int(seed),
        "val_size": int(val_size),
        "dataset_file_size": os.path.getsize(dataset[4:])
        if dataset.startswith("npz:") and os.path.isfile(dataset[4:])
        else None,
    }
    splits = load_dataset(dataset, val_size=val_size, seed=seed, data_dir=data_dir)
    out = OutputDir(output, command="generate", params=params, overwrite=overwrite)
    if out.complete:
        return out.read_summary()
    start = time.time()
    model.fit(splits.train, splits.info)
    fit_seconds = time.time() - start
    bar = keras.utils.Progbar(int(n), unit_name="image") if progress else None
    per_class: collections.Counter = collections.Counter()
    done = 0
    for index, count in enumerate(counts):
        if not out.has_shard(index):
            images, labels = model.sample(count, np.random.default_rng([seed, index]))
            out.write_shard(index, images, labels)
        else:
            with np.load(out.shard_path(index)) as shard:
                labels = shard["label"]
        per_class.update(int(c) for c in labels)
        done += count
        if bar is not None:
            bar.update(done)
    summary = {
        "command": "generate",
        "dataset": splits.info.name,
        "images": int(n),
        "shards": len(counts),
        "image_shape": list(splits.info.image_shape),
        "per_class": {str(c): int(per_class.get(c, 0)) for c in range(splits.info.num_classes)},
        "seed": int(seed),
        "fit_seconds": round(fit_seconds, 2),
        "seconds": round(time.time() - start, 2),
        "output": output,
        **model.describe(),
    }
    out.finish(summary)
    return summary
