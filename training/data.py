"""Labelled image datasets every kind may train on: scikit-learn's bundled digits and any `root/<class>/<image>`
folder, as [0, 1] tensors with a fixed stratified train/validation split (image_sources.py's, torch-free)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from cnnserve.contracts.imaging import read_image
from cnnserve.training.image_sources import DIGITS, VAL_FRACTION, DatasetError, class_folders, stratified_split

logger = logging.getLogger(__name__)

__all__ = ["DIGITS", "DatasetError", "stratified_split"]  # defined torch-free in image_sources.py


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # [N, C, H, W] float32 in [0, 1]
    labels: torch.Tensor  # [N] int64 class indices

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DataSplit:
    name: str  # "digits" or the folder's name
    classes: tuple[str, ...]  # index -> class name
    train: ImageSet
    val: ImageSet
    train_index: np.ndarray  # positions of the training items in the source's original order
    val_index: np.ndarray  # positions of the validation items

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


def load_dataset(
    source: str, image_size: int = 16, channels: int = 1, val_fraction: float = VAL_FRACTION, seed: int = 0
) -> DataSplit:
    """`source` is "digits" or a folder `root/<class>/<image>`; the split depends only on `seed`."""
    if source == DIGITS:
        if channels != 1:
            raise DatasetError(f"digits are grey: channels must be 1, got {channels}")
        images, labels, classes, name = *load_digits(image_size), DIGITS
    else:
        root = Path(source)
        images, labels, classes = load_image_folder(root, image_size, channels)
        name = root.resolve().name
    train_index, val_index = stratified_split(labels.numpy(), val_fraction, seed)
    logger.info(
        "dataset=%s items=%d classes=%d train=%d val=%d size=%d channels=%d",
        name, len(labels), len(classes), len(train_index), len(val_index), image_size, channels,
    )  # fmt: skip
    return DataSplit(
        name=name,
        classes=classes,
        train=ImageSet(images[train_index], labels[train_index]),
        val=ImageSet(images[val_index], labels[val_index]),
        train_index=train_index,
        val_index=val_index,
    )


def load_digits(image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """The 1,797 real 8x8 digits (values 0..16) scaled to [0, 1] and resized bilinearly to image_size."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # [N, 1, 8, 8]
    if image_size != 8:
        x = functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.clamp(0.0, 1.0)  # [N, 1, S, S]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return x.contiguous(), y, tuple(str(c) for c in range(10))


def load_image_folder(root: Path, image_size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Every image under root/<class>/, resized to image_size x image_size, in `channels` (1: L, 3: RGB)."""
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    found = class_folders(root)
    if not found:
        raise DatasetError(f"dataset folder {root} has no class folders (expected {root}/<class>/<image>)")
    classes = tuple(name for name, _ in found)
    mode = "L" if channels == 1 else "RGB"
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    for index, (_, files) in enumerate(found):
        for path in files:
            arrays.append(_read_image(path, image_size, mode))
            labels.append(index)
    x = torch.from_numpy(np.stack(arrays)).float().div_(255.0)  # [N, S, S] or [N, S, S, 3]
    x = x[:, None] if channels == 1 else x.permute(0, 3, 1, 2)  # [N, C, S, S]
    return x.contiguous(), torch.tensor(labels, dtype=torch.int64), classes


def _read_image(path: Path, image_size: int, mode: str) -> np.ndarray:
    try:
        shown = read_image(path, mode)  # the same orientation and bit depth the server and SDK use
        return np.asarray(shown.resize((image_size, image_size), Image.Resampling.BILINEAR))
    except OSError as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err
