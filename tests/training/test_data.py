"""The digits and image-folder loaders, the split, normalisation and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnserve.training.classifier.data import channel_stats, normalise, random_affine
from cnnserve.training.data import DatasetError, load_dataset, stratified_split


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_dataset("digits")


def test_digits_are_16x16_in_unit_range_with_a_stratified_80_20_split(digits) -> None:  # type: ignore[no-untyped-def]
    assert digits.train.images.shape[1:] == (1, 16, 16)
    assert len(digits.train) + len(digits.val) == 1797
    assert abs(len(digits.val) / 1797 - 0.2) < 0.01
    assert digits.train.images.min() >= 0 and digits.train.images.max() <= 1
    assert digits.classes == tuple(str(i) for i in range(10))
    counts = np.bincount(digits.val.labels.numpy(), minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37  # ~20% of each class's ~180
    assert not set(digits.train_index) & set(digits.val_index)


def test_split_is_fixed_by_the_seed(digits) -> None:  # type: ignore[no-untyped-def]
    again = load_dataset("digits")
    assert np.array_equal(again.val_index, digits.val_index)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.val_index, digits.val_index)


def test_stratified_split_keeps_every_class_in_train() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 2])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, val])) == list(range(8))
    assert set(labels[train]) == {0, 1, 2}  # a single-item class stays in train
    assert set(labels[val]) == {0, 1}


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_loads_mixed_sizes_modes_and_formats(image_folder: Path, channels: int) -> None:
    split = load_dataset(str(image_folder), image_size=8, channels=channels)
    assert split.classes == ("bar", "circle", "cross")  # sorted folder names
    assert len(split.train) + len(split.val) == 24  # notes.txt skipped
    assert split.train.images.shape[1:] == (channels, 8, 8)
    assert split.train.images.dtype == torch.float32
    assert split.train.images.min() >= 0 and split.train.images.max() <= 1
    assert set(split.val.labels.tolist()) == {0, 1, 2}


def test_image_folder_pixels_match_pillow(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4), (255, 0, 51)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (4, 4), (0, 0, 0)).save(tmp_path / "a" / "y.png")
    split = load_dataset(str(tmp_path), image_size=4, channels=3)
    pixels = torch.cat([split.train.images, split.val.images])
    red = pixels[pixels.sum(dim=(1, 2, 3)) > 0][0]
    assert torch.allclose(red[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))


@pytest.mark.parametrize("layout", ["missing", "no-classes", "empty-class", "broken-image"])
def test_image_folder_errors_name_the_problem(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "empty-class":
        (root / "a").mkdir()
    if layout == "broken-image":
        (root / "a").mkdir()
        (root / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError):
        load_dataset(str(root))


def test_normalisation_uses_training_statistics(digits) -> None:  # type: ignore[no-untyped-def]
    mean, std = channel_stats(digits.train.images)
    normalised = normalise(digits.train.images, mean, std)
    assert abs(float(normalised.mean())) < 1e-4
    assert abs(float(normalised.std()) - 1) < 1e-3


def test_random_affine_keeps_shape_and_is_identity_without_motion() -> None:
    images = torch.rand(4, 1, 16, 16)
    rng = torch.Generator().manual_seed(0)
    assert random_affine(images, rng).shape == images.shape
    same = random_affine(images, rng, max_shift_px=0.0, max_rotate_deg=0.0, max_scale=0.0)
    assert torch.allclose(same, images, atol=1e-5)
