"""What training and `cnnserve quantize` agree on about image sources, without torch: which files are images, what
a class folder is, and the seeded stratified split, so a quantiser calibrating on a folder takes the same training
side as the run that trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnserve.contracts.imaging import IMAGE_SUFFIXES, is_image_file

DIGITS = "digits"
"""The source name of scikit-learn's bundled digits (offline), for training and calibration alike."""
VAL_FRACTION = 0.2
"""The validation share of every split training makes (and the quantiser's held-out share)."""


class DatasetError(ValueError):
    """A dataset that cannot be loaded: missing folder, no classes, a class without images, unreadable file."""


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def class_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """`root/<class>/<image>`: (class name, its images) per visible subfolder, classes by name; [] when none."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = []
    for name in classes:
        files = image_files(root / name)
        if not files:
            raise DatasetError(f"class folder {root / name} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        found.append((name, files))
    return found


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded shuffle puts round(val_fraction * n) items (at least one when n >= 2) in validation."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(round(val_fraction * len(members)), 1), len(members) - 1) if len(members) >= 2 else 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
