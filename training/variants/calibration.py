"""The images a variant is calibrated and gated on, always from two disjoint sides of one seeded split: calibration
from the training side, the gate's held-out images from the validation side.

Sources: `digits` (the split training made, same seed, same resize), a class folder `root/<label>/<image>` (the
split training makes of that folder; class names must be the model's labels), or a flat folder of images (no
labels: the gate compares top-1 with the FP32 model). Folder images are decoded by the model's own recipe
(cnnserve.contracts.imaging), as the server decodes image files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cnnserve.contracts.imaging import read_image
from cnnserve.training.image_sources import (
    DIGITS,
    VAL_FRACTION,
    DatasetError,
    class_folders,
    image_files,
    stratified_split,
)
from cnnserve.training.variants.source import SourceModel, VariantError

if TYPE_CHECKING:
    from cnnserve.training.data import DataSplit

CALIBRATION_LIMIT = 256
"""Training-side images that calibrate the activation ranges; ORT's MinMax calibration settles well before this on
the models here, and each image is one more forward pass over every tensor."""


@dataclass(frozen=True)
class GateImages:
    calibration: npt.NDArray[np.float32]  # [n, ...] training-side items
    held_out: npt.NDArray[np.float32]  # [m, ...] validation-side items
    held_out_labels: npt.NDArray[np.int64] | None  # indices into the model's labels; None: no labels, agreement
    calibration_index: npt.NDArray[np.int64]  # positions in the source's own order
    held_out_index: npt.NDArray[np.int64]
    description: str  # where the images came from and the split's seed, for the log and the config


def choose(images: npt.NDArray[np.float32], labels: npt.NDArray[np.int64] | None, train_index: np.ndarray,
           val_index: np.ndarray, seed: int, description: str,
           limit: int = CALIBRATION_LIMIT) -> GateImages:  # fmt: skip
    """Calibration: a seeded sample of at most `limit` training-side items (every class, not the first ones);
    held out: the whole validation side."""
    if len(train_index) == 0 or len(val_index) == 0:
        raise VariantError(f"{description}: needs images on both sides of the split, got {len(train_index)} "
                           f"training-side and {len(val_index)} held-out")  # fmt: skip
    sample = np.sort(np.random.default_rng(seed).permutation(train_index)[:limit]).astype(np.int64)
    held = np.asarray(val_index, dtype=np.int64)
    return GateImages(
        calibration=np.ascontiguousarray(images[sample], dtype=np.float32),
        held_out=np.ascontiguousarray(images[held], dtype=np.float32),
        held_out_labels=None if labels is None else labels[held],
        calibration_index=sample, held_out_index=held,
        description=description,
    )  # fmt: skip


def gate_images(source: str, model: SourceModel, seed: int = 0) -> GateImages:
    """`source`: "digits" or a folder (class folders named like the model's labels, or images directly)."""
    if source == DIGITS:
        return _digits(model, seed)
    root = Path(source)
    if not root.is_dir():
        raise VariantError(f"calibration source {source!r} is neither 'digits' nor a folder")
    try:
        classes = class_folders(root)
    except DatasetError as err:
        raise VariantError(str(err)) from None
    if classes:
        return _class_folder(root, classes, model, seed)
    files = image_files(root)
    if not files:
        raise VariantError(f"calibration folder {root} holds no images and no class folders")
    images = np.stack([_decode(path, model) for path in files])
    train, val = stratified_split(np.zeros(len(files), dtype=np.int64), VAL_FRACTION, seed)
    return choose(images, None, train, val, seed, f"{root} (no labels, seed {seed})")


def _class_folder(root: Path, classes: list[tuple[str, list[Path]]], model: SourceModel, seed: int) -> GateImages:
    unknown = [name for name, _ in classes if name not in model.labels]
    if unknown:
        raise VariantError(f"calibration folder {root}: class folders {unknown[:5]} are not labels of model "
                           f"'{model.name}' ({', '.join(model.labels[:10]) or 'it has no labels'})")  # fmt: skip
    paths = [path for _, files in classes for path in files]
    labels = np.array([model.labels.index(name) for name, files in classes for _ in files], dtype=np.int64)
    images = np.stack([_decode(path, model) for path in paths])
    # Labels in sorted-class order, as training numbers a folder's classes: the same seed gives the same split.
    train, val = stratified_split(np.array([i for i, (_, f) in enumerate(classes) for _ in f]), VAL_FRACTION, seed)
    return choose(images, labels, train, val, seed, f"{root} ({len(classes)} classes, seed {seed})")


def _decode(path: Path, model: SourceModel) -> npt.NDArray[np.float32]:
    try:
        return model.recipe.tensor(read_image(path))  # the recipe the server applies to the same file
    except OSError as err:
        raise VariantError(f"cannot read image {path}: {err}") from None


def _digits(model: SourceModel, seed: int) -> GateImages:
    """The classifier job's own split of sklearn's digits (training/data.py, torch's resize), so the held-out images
    are exactly the validation images its report card scored."""
    recipe = model.recipe
    if recipe.channels != 1 or recipe.height != recipe.width or recipe.layout != "NCHW" or recipe.normalised:
        raise VariantError(f"'digits' calibrates grey square NCHW pixel models; '{model.name}' takes "
                           f"{recipe.item_shape} {recipe.layout}")  # fmt: skip
    if model.labels and model.labels != tuple(str(d) for d in range(10)):
        raise VariantError(f"'digits' labels are 0..9; model '{model.name}' has {', '.join(model.labels[:10])}")
    try:
        from cnnserve.training.data import load_dataset  # torch and scikit-learn: only this source needs them
    except ModuleNotFoundError as err:
        raise VariantError(f"'digits' needs the package '{err.name}' (pip install 'cnnserve[train]'); a folder "
                           "SOURCE needs only onnxruntime") from None  # fmt: skip

    assert recipe.height is not None
    return split_images(load_dataset(DIGITS, image_size=recipe.height, channels=1, seed=seed), seed)


def split_images(split: DataSplit, seed: int) -> GateImages:
    """A training run's own split (its labels are the model's): calibrate on its training side, gate on its
    validation side."""
    count = len(split.train) + len(split.val)
    images = np.empty((count, *split.train.images.shape[1:]), dtype=np.float32)
    images[split.train_index] = split.train.images.numpy()
    images[split.val_index] = split.val.images.numpy()
    labels = np.empty(count, dtype=np.int64)
    labels[split.train_index] = split.train.labels.numpy()
    labels[split.val_index] = split.val.labels.numpy()
    return choose(images, labels, split.train_index, split.val_index, seed, f"{split.name} (seed {seed})")
