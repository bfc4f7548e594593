"""What the segmenter job trains and judges on, from either source: digits scenes (fresh training scenes of the
training digits; fixed, seeded validation, test and other-recipe scenes of unseen digits) or a mask folder (its
images split by file; training picks random images, flipped at random)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnserve.contracts.segmentation import BACKGROUND
from cnnserve.training.data import DIGITS
from cnnserve.training.segmenter.loop import SceneSampler
from cnnserve.training.segmenter.mask_folder import load_mask_folder, subset
from cnnserve.training.segmenter.model import STRIDE
from cnnserve.training.segmenter.scenes import (
    OTHER_RECIPE,
    TEST_RECIPE,
    TRAIN_RECIPE,
    Scenes,
    make_scenes,
    split_digits,
)

logger = logging.getLogger(__name__)

VAL_SCENES = 128  # digits: fixed validation scenes (per-epoch curve)
TEST_SCENES = 500  # digits: held-out scenes of the report card
OTHER_SCENES = 200  # digits: held-out scenes of OTHER_RECIPE
HELD_OUT_SHARE = 0.2  # folders: share of images for validation and for test each (at least one when possible)


@dataclass(frozen=True)
class SegmenterData:
    name: str  # "digits" or the folder's name
    classes: tuple[str, ...]  # labels file: index 0 is the background
    sample: SceneSampler  # training batches
    val: Scenes
    test: Scenes
    other: Scenes | None  # scenes of another recipe (digits only)
    channels: int


def load_segmenter_data(source: str, seed: int, channels: int = 1, dry_run: bool = False) -> SegmenterData:
    """dry_run: digits get a tenth of the held-out scenes (a smoke test measures nothing worth the time)."""
    if source == DIGITS:
        return _digits(seed, 10 if dry_run else 1)
    return _folder(Path(source), seed, channels)


def _digits(seed: int, fewer: int) -> SegmenterData:
    digits = split_digits(seed)
    # held-out scenes have their own generators: the same seed gives the same report card whatever was trained
    val = make_scenes(digits.val, VAL_SCENES // fewer, TEST_RECIPE, torch.Generator().manual_seed(seed + 101))
    test = make_scenes(digits.test, TEST_SCENES // fewer, TEST_RECIPE, torch.Generator().manual_seed(seed + 102))
    other = make_scenes(digits.test, OTHER_SCENES // fewer, OTHER_RECIPE, torch.Generator().manual_seed(seed + 103))

    def sample(n: int, generator: torch.Generator) -> Scenes:
        return make_scenes(digits.train, n, TRAIN_RECIPE, generator)

    logger.info("dataset=digits train_digits=%d val_digits=%d test_digits=%d test_scenes=%d other_scenes=%d",
                len(digits.train.labels), len(digits.val.labels), len(digits.test.labels), len(test),
                len(other))  # fmt: skip
    return SegmenterData(DIGITS, (BACKGROUND, *(str(k) for k in range(10))), sample, val, test, other, channels=1)


def _folder(root: Path, seed: int, channels: int) -> SegmenterData:
    folder = load_mask_folder(root, STRIDE, channels)
    n = len(folder.scenes)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    held = round(HELD_OUT_SHARE * n) if n >= 3 else 0
    if held == 0:
        logger.warning("dataset=%s has %d image(s): validation and test reuse the training images", folder.name, n)
        train_index = val_index = test_index = order
    else:
        val_index, test_index, train_index = order[:held], order[held : 2 * held], order[2 * held :]
    train = subset(folder.scenes, train_index)

    def sample(batch: int, generator: torch.Generator) -> Scenes:
        picked = subset(train, torch.randint(0, len(train), (batch,), generator=generator))
        return _flip_some(picked, generator)

    return SegmenterData(folder.name, folder.classes, sample, subset(folder.scenes, val_index),
                         subset(folder.scenes, test_index), None, channels)  # fmt: skip


def _flip_some(scenes: Scenes, generator: torch.Generator) -> Scenes:
    """Mirror about half the scenes left-right (boxes with them): a folder is small, this doubles what it shows."""
    flip = torch.rand(len(scenes), generator=generator) < 0.5
    images, masks, boxes = scenes.images.clone(), scenes.masks.clone(), scenes.boxes.clone()
    images[flip], masks[flip] = images[flip].flip(-1), masks[flip].flip(-1)
    width = scenes.images.shape[-1]
    mirrored = flip[scenes.box_scene]
    boxes[mirrored, 0], boxes[mirrored, 2] = width - scenes.boxes[mirrored, 2], width - scenes.boxes[mirrored, 0]
    return Scenes(images, masks, boxes, scenes.box_classes, scenes.box_scene)
