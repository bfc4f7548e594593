"""A user's segmentation folder: PATH/images/*.png, PATH/masks/*.png (same names; a class index per pixel) and
PATH/classes.txt (one class name a line, line 0 the background), as `Scenes` whose boxes are the connected
components of each class. Images are padded bottom/right with 0 (background) up to the stride, as the server pads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnserve.contracts.imaging import read_image
from cnnserve.training.data import DatasetError
from cnnserve.training.segmenter.scenes import Scenes

logger = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"


@dataclass(frozen=True)
class MaskFolder:
    name: str  # the folder's name
    classes: tuple[str, ...]  # index -> class name; 0 is the background
    scenes: Scenes  # every image, padded to one size (a multiple of the stride)
    files: tuple[str, ...]  # the file name of each scene


def load_mask_folder(root: Path, stride: int, channels: int = 1) -> MaskFolder:
    images_dir, masks_dir, classes_file = root / "images", root / "masks", root / CLASSES_FILE
    for needed in (images_dir, masks_dir, classes_file):
        if not needed.exists():
            expected = f"{root}/images/*.png, {root}/masks/*.png, {root}/{CLASSES_FILE}"
            raise DatasetError(f"segmentation folder {root}: {needed.name} is missing (expected {expected})")
    classes = tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
    if len(classes) < 2:
        raise DatasetError(f"{classes_file}: needs the background (line 0) and at least one class, got {classes}")
    image_files = sorted(p.name for p in images_dir.glob("*.png"))
    mask_files = sorted(p.name for p in masks_dir.glob("*.png"))
    if not image_files:
        raise DatasetError(f"{images_dir} holds no .png images")
    if image_files != mask_files:
        unmatched = sorted(set(image_files) ^ set(mask_files))
        raise DatasetError(f"{root}: images/ and masks/ must hold the same file names; unmatched: {unmatched[:5]}")
    mode = "L" if channels == 1 else "RGB"
    images, masks = [], []
    for name in image_files:
        image = _read(images_dir / name, mode)
        mask = _read(masks_dir / name, None)
        if mask.ndim != 2:
            raise DatasetError(f"mask {masks_dir / name}: needs one class index per pixel (mode L or P)")
        if mask.shape != image.shape[:2]:
            raise DatasetError(f"{name}: image is {image.shape[1]}x{image.shape[0]} but its mask "
                               f"{mask.shape[1]}x{mask.shape[0]}")  # fmt: skip
        if int(mask.max()) >= len(classes):
            raise DatasetError(f"mask {masks_dir / name}: class index {int(mask.max())} but {classes_file} "
                               f"names {len(classes)} classes")  # fmt: skip
        images.append(image)
        masks.append(mask)
    height = -(-max(m.shape[0] for m in masks) // stride) * stride
    width = -(-max(m.shape[1] for m in masks) // stride) * stride
    x = torch.zeros(len(images), channels, height, width)
    y = torch.zeros(len(images), height, width, dtype=torch.int64)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        h, w = mask.shape
        pixels = torch.from_numpy(image.astype(np.float32) / 255.0)
        x[i, :, :h, :w] = pixels[None] if channels == 1 else pixels.permute(2, 0, 1)
        y[i, :h, :w] = torch.from_numpy(mask.astype(np.int64))
    logger.info("dataset=%s images=%d classes=%d padded_to=%dx%d", root.name, len(images), len(classes), height, width)
    return MaskFolder(root.resolve().name, classes, scenes_from_masks(x, y), tuple(image_files))


def scenes_from_masks(images: torch.Tensor, masks: torch.Tensor) -> Scenes:
    """Scenes whose boxes are the connected components (8-connected) of each non-background class."""
    from scipy import ndimage  # type: ignore[import-untyped]  # no stubs; scipy comes with scikit-learn

    boxes: list[list[float]] = []
    box_classes: list[int] = []
    box_scene: list[int] = []
    for i, mask in enumerate(masks.numpy()):
        for c in np.unique(mask[mask > 0]):
            components, _ = ndimage.label(mask == c, structure=np.ones((3, 3)))
            for rows, cols in ndimage.find_objects(components):
                boxes.append([cols.start, rows.start, cols.stop, rows.stop])  # slices: stop is exclusive
                box_classes.append(int(c))
                box_scene.append(i)
    return Scenes(images, masks, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  torch.tensor(box_classes, dtype=torch.int64), torch.tensor(box_scene, dtype=torch.int64))  # fmt: skip


def subset(scenes: Scenes, index: torch.Tensor) -> Scenes:
    """The scenes at `index` (repeats allowed), their boxes renumbered to the new order."""
    picked = [torch.nonzero(scenes.box_scene == i).flatten() for i in index.tolist()]
    box_index = torch.cat([torch.empty(0, dtype=torch.int64), *picked])
    box_scene = torch.cat([torch.empty(0, dtype=torch.int64),
                           *(torch.full((len(p),), j, dtype=torch.int64) for j, p in enumerate(picked))])  # fmt: skip
    return Scenes(scenes.images[index], scenes.masks[index], scenes.boxes[box_index], scenes.box_classes[box_index],
                  box_scene)  # fmt: skip


def _read(path: Path, mode: str | None) -> np.ndarray:
    try:
        shown = read_image(path)
        # a palette mask's pixels are its indices already; anything else converts to one grey channel
        if mode is None:
            return np.asarray(shown if shown.mode in ("L", "P") else shown.convert("L"))
        return np.asarray(shown.convert(mode))
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from err
