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
