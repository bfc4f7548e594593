"""Digits scenes: labels, tight boxes, counts, no overlap, seeded determinism, and a split by handwriting."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cnnserve.training.segmenter.scenes import (
    INK_THRESHOLD,
    OTHER_RECIPE,
    TEST_RECIPE,
    TRAIN_RECIPE,
    SceneRecipe,
    Scenes,
    make_scenes,
    split_digits,
)

CLEAN = replace(TEST_RECIPE, noise_std=0.0)  # peak 1, no noise: the image is the pasted ink itself


@pytest.fixture(scope="module")
def digits():
    return split_digits(seed=0)


def _scenes(digits, recipe: SceneRecipe, n: int = 40, seed: int = 0) -> Scenes:
    return make_scenes(digits.train, n, recipe, torch.Generator().manual_seed(seed))


def test_split_keeps_each_handwriting_sample_in_one_part(digits) -> None:
    parts = [set(digits.train.index), set(digits.val.index), set(digits.test.index)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert sum(map(len, parts)) == 1797
    for pool in (digits.train, digits.val, digits.test):
        assert set(pool.labels.tolist()) == set(range(10))  # stratified: every digit in every part


@pytest.mark.parametrize("recipe", [CLEAN, TRAIN_RECIPE, OTHER_RECIPE])
def test_labels_are_digit_plus_one_where_ink_and_boxes_are_tight(digits, recipe: SceneRecipe) -> None:
    scenes = _scenes(digits, recipe)
    assert scenes.images.shape == (40, 1, recipe.height, recipe.width)
    assert float(scenes.images.min()) >= 0.0 and float(scenes.images.max()) <= 1.0
    covered = torch.zeros_like(scenes.masks, dtype=torch.bool)
    for box, cls, scene in zip(scenes.boxes.long(), scenes.box_classes, scenes.box_scene, strict=True):
        x0, y0, x1, y1 = box.tolist()
        inside = scenes.masks[scene, y0:y1, x0:x1]
        assert set(inside.unique().tolist()) <= {0, int(cls)}  # no other digit's ink in its box
        own = inside == cls
        assert own[0].any() and own[-1].any() and own[:, 0].any() and own[:, -1].any()  # ink on all four edges
        covered[scene, y0:y1, x0:x1] = True
    assert not (scenes.masks.bool() & ~covered).any()  # every ink pixel lies in its digit's box
    assert 1 <= int(scenes.masks.max()) <= 10


def test_clean_ink_is_exactly_the_labelled_pixels(digits) -> None:
    scenes = _scenes(digits, CLEAN)
    np.testing.assert_array_equal((scenes.images[:, 0] >= INK_THRESHOLD).numpy(), (scenes.masks > 0).numpy())


def test_faded_ink_keeps_the_labels_of_full_ink(digits) -> None:
    full = _scenes(digits, CLEAN)
    faded = _scenes(digits, replace(CLEAN, min_peak=0.4, max_peak=0.5))
    assert torch.equal(full.masks, faded.masks) and torch.equal(full.boxes, faded.boxes)
    assert float(faded.images.max()) <= 0.5 + 1e-6


def test_one_to_four_digits_whose_boxes_never_overlap(digits) -> None:
    scenes = _scenes(digits, TRAIN_RECIPE, n=60)
    counts = torch.bincount(scenes.box_scene, minlength=len(scenes))
    assert int(counts.min()) >= 1 and int(counts.max()) <= 4 and int(counts.max()) >= 3
    for i in range(len(scenes)):
        boxes, _ = scenes.boxes_of(i)
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                overlap = torch.minimum(boxes[a, 2:], boxes[b, 2:]) - torch.maximum(boxes[a, :2], boxes[b, :2])
                assert bool((overlap <= 0).any())


def test_scenes_are_seeded(digits) -> None:
    a, b, c = (
        _scenes(digits, TRAIN_RECIPE, seed=5),
        _scenes(digits, TRAIN_RECIPE, seed=5),
        _scenes(digits, TRAIN_RECIPE),
    )
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
    assert not torch.equal(a.images, c.images)


def test_scale_range_of_the_recipe_is_honoured(digits) -> None:
    scenes = _scenes(digits, CLEAN, n=80)
    sides = (scenes.boxes[:, 2:] - scenes.boxes[:, :2]).amax(1)
    assert float(sides.max()) <= CLEAN.max_size_px + 1 and float(sides.min()) >= 3
