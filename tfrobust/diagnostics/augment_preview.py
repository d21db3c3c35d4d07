"""`tfrobust augment-preview`: a PNG grid of original and augmented images with their (soft) labels.

Row 1 shows the originals, each further row one augmented draw of the same images (different seeds), with
the label weights above every image (e.g. "cat .62 / dog .38" after CutMix), so a user can see what an
augmentation chain does before training with it.
"""

from __future__ import annotations

import os

import numpy as np

from tfrobust.errors import UserError


def _label_text(label: np.ndarray, class_names: tuple[str, ...]) -> str:
    order = np.argsort(-label)
    parts = [f"{class_names[i]} {label[i]:.2f}" for i in order[:2] if label[i] > 0.005]
    return "\n".join(parts)


def preview_grid(
    *,
    aug: str,
    dataset: str,
    out: str,
    num_images: int = 8,
    draws: int = 2,
    seed: int = 0,
    data_dir: str | None = None,
    overwrite: bool = False,
) -> str:
    """Writes the grid to `out` (PNG) and returns the path; never overwrites without `overwrite`."""
    if os.path.exists(out) and not overwrite:
        raise UserError(f"{out} exists: choose another --out or pass --overwrite")
    if not out.lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {out}")
    if not 1 <= num_images <= 64 or not 1 <= draws <= 8:
        raise UserError("--n must be in 1..64 and --draws in 1..8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    from tfrobust.augment.registry import build_augmentation, format_aug, parse_aug
    from tfrobust.data.datasets import load_split

    names = parse_aug(aug)
    info, split = load_split(dataset, "train", val_size=0, data_dir=data_dir)
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(split), size=min(num_images, len(split)), replace=False))
    images = tf.constant(split.images[index], tf.float32) / 255.0
    labels = tf.one_hot(split.labels[index], info.num_classes)
    layer = build_augmentation(names, image_shape=info.image_shape, allow_flip=info.allow_flip)
    rows = [("original", images.numpy(), labels.numpy())]
    for draw in range(draws):
        out_batch = layer({"images": images, "labels": labels}, training=True, seed=tf.constant([seed, draw], tf.int64))
        rows.append((f"{format_aug(names)} #{draw + 1}", out_batch["images"].numpy(), out_batch["labels"].numpy()))

    cols = len(index)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 2.0 * len(rows)), squeeze=False)
    for r, (title, pictures, soft) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            picture = np.clip(pictures[c], 0.0, 1.0)
            ax.imshow(
                picture[..., 0] if picture.shape[-1] == 1 else picture,
                cmap="gray" if picture.shape[-1] == 1 else None,
                vmin=0.0,
                vmax=1.0,
                interpolation="nearest",
            )
            ax.set_title(_label_text(soft[c], info.class_names), fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(title, fontsize=8)
    fig.suptitle(f"{info.name}: {format_aug(names)} (seed {seed})", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
