"""`tfrobust pseudolabel`: label generated images with a (non-robust) classifier and keep the best per class.

Rebuffi, Gowal et al. 2021, App. D (after Carmon et al. 2019): "We sample from each generative model 5M
images [...] we score each image using a pretrained WRN-28-10 [...] trained non-robustly on the CIFAR-10
train set [95.68%]. For each class, we select the top-100K scoring images and build a dataset of 1M
image-label pairs." Here the label of an image is the classifier's arg-max class and its score the
soft-max probability of that class; the top K scores of each predicted class are kept (ties broken by
the lower index, so the result is deterministic).

Three resumable phases, state under OUTPUT/.work (see `tfrobust.generators.writer`):
  1. scoring, block by block (`block_size` images; one small file of classes and scores per block);
  2. selection: the blocks' scores are merged into a bounded top-K per class, so memory is O(K x classes)
     indices and scores, never images;
  3. writing: the kept images, in input order, as uncompressed npz shards (`image`, `label`, `score`).
An interrupted run continues where it stopped when called again with the same arguments.
"""

from __future__ import annotations

import os
import time
import zipfile
from typing import Any

import numpy as np

from tfrobust.errors import UserError
from tfrobust.fileio import save_npz_atomic
from tfrobust.generators.writer import OutputDir, shard_counts
from tfrobust.integrity import check_zip_archive


def pseudolabel(
    classifier: str,
    inputs: list[str] | tuple[str, ...],
    output: str,
    *,
    top_k: int | None = None,
    batch_size: int = 512,
    shard_size: int = 100_000,
    block_size: int = 50_000,
    overwrite: bool = False,
    progress: bool = True,
    trust_model: bool = False,
) -> dict[str, Any]:
    """Labels the images of `inputs` with `classifier`, keeps the top `top_k` per class (all if None).

    `classifier` is anything `tfrobust.export.load_model` loads (a `tfrobust train --loss standard`
    export, another SavedModel, a .keras file) mapping [0, 1] images to logits; it is inspected before
    anything in it runs (`tfrobust.inspection`) unless `trust_model` (only for a model you trust). Returns
    the summary (also written to OUTPUT/summary.json; its "trust_model" records the choice).
    """
    import keras
    import tensorflow as tf

    from tfrobust.data.extra import open_extra_data
    from tfrobust.export import load_model

    for name, value, low in (
        ("--top-k-per-class", top_k, 1),
        ("--batch-size", batch_size, 1),
        ("--shard-size", shard_size, 1),
        ("block size", block_size, 1),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low):
            raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    data = open_extra_data(list(inputs), require_labels=False)
    # Every image is read, memory-mapped (which checks nothing): an npz input's CRCs are checked first.
    for shard in data.shards:
        if zipfile.is_zipfile(shard.path):
            check_zip_archive(shard.path, "an npz file")
    model = load_model(classifier, trust_model=trust_model)
    expected = model.metadata.get("input_shape")
    if expected and tuple(int(d) for d in expected) != tuple(data.image_shape):
        raise UserError(
            f"the classifier takes {'x'.join(map(str, expected))} images but the input images are "
            f"{'x'.join(map(str, data.image_shape))}"
        )
    shards = [s.path for s in data.shards]
    params = {
        "classifier": os.path.abspath(classifier),
        "inputs": [os.path.abspath(p) for p in shards],
        "input_sizes": [os.path.getsize(p) for p in shards],
        "top_k": top_k,
        "batch_size": int(batch_size),
        "shard_size": int(shard_size),
        "block_size": int(block_size),
    }
    out = OutputDir(output, command="pseudolabel", params=params, overwrite=overwrite)
    if out.complete:
        return out.read_summary()
    start = time.time()
    n = len(data)
    num_blocks = -(-n // block_size)
    bar = keras.utils.Progbar(n, unit_name="image") if progress else None

    # 1. Scoring.
    def logits_of(images: np.ndarray) -> np.ndarray:
        x = tf.constant(images.astype(np.float32) / np.float32(255.0))
        try:
            out = model.logits(x)
            values = np.asarray(out.numpy() if hasattr(out, "numpy") else out, dtype=np.float64)
        except (tf.errors.OpError, ValueError, TypeError) as error:
            raise UserError(
                f"the classifier fails on the input images ({'x'.join(map(str, data.image_shape))}): "
                f"{type(error).__name__}: {str(error)[:200]}"
            ) from None
        if values.ndim != 2 or values.shape[0] != images.shape[0] or values.shape[1] < 2:
            raise UserError(f"the classifier returns shape {values.shape}; expected logits [N, classes >= 2]")
        return values

    done = 0
    for block in range(num_blocks):
        block_path = out.work_path(f"scores-{block:05d}.npz")
        lo, hi = block * block_size, min((block + 1) * block_size, n)
        if not os.path.isfile(block_path):
            classes, scores, agree = [], [], 0
            for first in range(lo, hi, batch_size):
                index = np.arange(first, min(first + batch_size, hi), dtype=np.int64)
                images, given = data.gather(index)
                logits = logits_of(images)
                probabilities = _softmax(logits)
                predicted = probabilities.argmax(axis=1)
                classes.append(predicted.astype(np.int32))
                scores.append(probabilities[np.arange(index.shape[0]), predicted].astype(np.float32))
                if given is not None:
                    agree += int(np.sum(given == predicted))
                if bar is not None:
                    bar.update(done + int(index[-1]) + 1 - lo)
            save_npz_atomic(
                block_path,
                dict(
                    cls=np.concatenate(classes),
                    score=np.concatenate(scores),
                    agree=np.int64(agree),
                    num_classes=np.int64(logits.shape[1]),
                ),
            )
        done += hi - lo
        if bar is not None:
            bar.update(done)

    # 2. Selection: a bounded top-K per predicted class, merged block by block.
    selection_path = out.work_path("selection.npz")
    if not os.path.isfile(selection_path):
        num_classes = None
        kept_index: dict[int, np.ndarray] = {}
        kept_score: dict[int, np.ndarray] = {}
        candidates = None
        agree = 0
        for block in range(num_blocks):
            with np.load(out.work_path(f"scores-{block:05d}.npz")) as scored:
                cls, score = scored["cls"], scored["score"]
                agree += int(scored["agree"])
                num_classes = int(scored["num_classes"]) if num_classes is None else num_classes
            if candidates is None:
                candidates = np.zeros(num_classes, np.int64)
                kept_index = {c: np.empty(0, np.int64) for c in range(num_classes)}
                kept_score = {c: np.empty(0, np.float32) for c in range(num_classes)}
            candidates += np.bincount(cls, minlength=num_classes)
            base = block * block_size
            for c in np.unique(cls):
                rows = np.flatnonzero(cls == c)
                index = np.concatenate([kept_index[c], base + rows])
                value = np.concatenate([kept_score[c], score[rows]])
                if top_k is not None and index.shape[0] > top_k:
                    # Highest score first, lower index first among equal scores.
                    order = np.lexsort((index, -value))[:top_k]
                    index, value = index[order], value[order]
                kept_index[c], kept_score[c] = index, value
        assert num_classes is not None and candidates is not None
        all_index = np.concatenate([kept_index[c] for c in range(num_classes)])
        all_label = np.concatenate([np.full(kept_index[c].shape[0], c, np.int64) for c in range(num_classes)])
        all_score = np.concatenate([kept_score[c] for c in range(num_classes)])
        order = np.argsort(all_index, kind="stable")  # input order: sequential reads when writing
        save_npz_atomic(
            selection_path,
            dict(
                index=all_index[order],
                label=all_label[order],
                score=all_score[order],
                candidates=candidates,
                agree=np.int64(agree),
            ),
        )
    with np.load(selection_path) as selected:
        sel_index, sel_label, sel_score = selected["index"], selected["label"], selected["score"]
        candidates, agree = selected["candidates"], int(selected["agree"])

    # 3. Writing the kept images.
    position = 0
    for shard, count in enumerate(shard_counts(sel_index.shape[0], shard_size)):
        part = slice(position, position + count)
        if not out.has_shard(shard):
            images, _ = data.gather(sel_index[part])
            out.write_shard(shard, images, sel_label[part], score=sel_score[part])
        position += count

    num_classes = int(candidates.shape[0])
    per_class = {}
    for c in range(num_classes):
        scores = sel_score[sel_label == c]
        per_class[str(c)] = {
            "candidates": int(candidates[c]),
            "kept": int(scores.shape[0]),
            "threshold": float(scores.min()) if scores.size else None,
            "max_score": float(scores.max()) if scores.size else None,
            "mean_score": round(float(scores.mean()), 6) if scores.size else None,
        }
    summary = {
        "command": "pseudolabel",
        "classifier": classifier,
        "inputs": list(shards),
        "scored": int(n),
        "kept": int(sel_index.shape[0]),
        "top_k_per_class": top_k,
        "trust_model": bool(trust_model),
        "num_classes": num_classes,
        "per_class": per_class,
        "agreement_with_input_labels": round(agree / n, 6) if data.labelled else None,
        "shards": len(shard_counts(sel_index.shape[0], shard_size)) if sel_index.shape[0] else 0,
        "seconds": round(time.time() - start, 2),
        "output": output,
    }
    short = [c for c, row in per_class.items() if top_k is not None and row["kept"] < top_k]
    if short:
        summary["warning"] = (
            f"classes {', '.join(short)} have fewer than {top_k} candidates: they keep all of theirs "
            "(sample more images for a balanced set)"
        )
    out.finish(summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A readable table of a pseudolabel summary: per class, candidates, kept and score thresholds."""
    lines = [f"{'class':>5}  {'candidates':>10}  {'kept':>8}  {'threshold':>9}  {'mean':>6}"]
    for c, row in summary["per_class"].items():
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:.4f}"
        mean = "-" if row["mean_score"] is None else f"{row['mean_score']:.4f}"
        lines.append(f"{c:>5}  {row['candidates']:>10}  {row['kept']:>8}  {threshold:>9}  {mean:>6}")
    lines.append(
        f"kept {summary['kept']} of {summary['scored']} images"
        + (f" (top {summary['top_k_per_class']} per class)" if summary["top_k_per_class"] else "")
    )
    if summary.get("agreement_with_input_labels") is not None:
        lines.append(
            f"classifier agrees with the input labels on {100 * summary['agreement_with_input_labels']:.2f}% of the images"
        )
    if summary.get("warning"):
        lines.append(f"warning: {summary['warning']}")
    return "\n".join(lines)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)
