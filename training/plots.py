"""PNG artefacts of a run (matplotlib, Agg backend): training curves, confusion matrix, sample grids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np


def plot_curves(
    history: Mapping[str, Sequence[float]], path: Path, title: str, families: Sequence[str] = ("loss", "accuracy")
) -> None:
    """One panel per metric family: keys ending in 'loss' share one, 'accuracy' another (or `families`)."""
    families = [f for f in families if any(k.endswith(f) for k in history)]
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 3.5), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for key, values in history.items():
            if key.endswith(family):
                ax.plot(range(1, len(values) + 1), values, marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(family)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """Rows: true class; columns: predicted class; counts written in each cell."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            colour = "white" if matrix[i, j] > threshold else "black"
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=colour, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_grid(images: np.ndarray, rows: int, path: Path, zoom: int = 4) -> None:
    """images: [N, C, H, W] in [0, 1], row-major in `rows` rows, each pixel drawn zoom x zoom.

    plt.imsave skips figure layout: ~5 ms a grid instead of ~150 ms, which matters once per epoch.
    """
    n, c, h, w = images.shape
    cols = -(-n // rows)
    canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.float32)  # 1-pixel white gutters
    for k in range(n):
        r, q = divmod(k, cols)
        top, left = 1 + r * (h + 1), 1 + q * (w + 1)
        canvas[top : top + h, left : left + w] = images[k].transpose(1, 2, 0)
    canvas = np.clip(canvas.repeat(zoom, axis=0).repeat(zoom, axis=1), 0.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, canvas[..., 0] if c == 1 else canvas, cmap="gray", vmin=0.0, vmax=1.0)


# one colour per mask class (background black), cycled for folders with more classes
_PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
                    dtype=np.float32) / 255.0  # fmt: skip


def save_segmentation_grid(
    images: np.ndarray, masks: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rows: int, path: Path,
    zoom: int = 3,
) -> None:  # fmt: skip
    """Scenes [N, 1, H, W] in [0, 1] beside their predicted masks [N, H, W] tinted by class, with the predicted
    boxes [N, K, 4] (x1/y1 exclusive; class 0 rows are padding) outlined in their class's colour on both."""
    n, _, h, w = images.shape
    tiles = np.zeros((n, 3, h, 2 * w + 1), dtype=np.float32)
    tiles[:, :, :, w] = 1.0  # a white line between scene and mask
    tiles[:, :, :, :w] = images[:, :1]
    tiles[:, :, :, w + 1 :] = _PALETTE[masks % len(_PALETTE)].transpose(0, 3, 1, 2)
    for i in range(n):
        for (x0, y0, x1, y1), c in zip(boxes[i].round().astype(int), classes[i], strict=True):
            if c == 0:
                continue
            colour = _PALETTE[c % len(_PALETTE)][:, None]
            x0, y0 = max(x0, 0), max(y0, 0)
            x1, y1 = min(max(x1 - 1, x0), w - 1), min(max(y1 - 1, y0), h - 1)  # the last pixel inside
            for left in (0, w + 1):
                tiles[i, :, y0 : y1 + 1, left + x0] = tiles[i, :, y0 : y1 + 1, left + x1] = colour
                tiles[i, :, y0, left + x0 : left + x1 + 1] = tiles[i, :, y1, left + x0 : left + x1 + 1] = colour
    save_grid(tiles, rows, path, zoom)
