"""Scenes of real sklearn digits for the segmenter: 1-4 digits pasted on a black canvas at random scales and places,
with a class index per pixel and a tight box per digit, generated on the fly (vectorised in torch) and seeded.

A `SceneRecipe` says how scenes look; `TRAIN_RECIPE` is wider than `TEST_RECIPE` (scales, rotations, fainter ink)
so the model also copes with `OTHER_RECIPE`, which the report card measures beside the main test scenes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from cnnserve.training.data import load_digits, stratified_split

INK_THRESHOLD = 0.3
"""A pixel is ink when the pasted digit's own intensity (in [0, 1], before fading) reaches it."""
SQUARE_GAP_PX = 1
"""Pasted squares keep this many pixels apart, so bilinear edges never touch a neighbour."""
PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class SceneRecipe:
    height: int = 64  # canvas height, pixels
    width: int = 64  # canvas width, pixels
    min_digits: int = 1
    max_digits: int = 4
    min_size_px: float = 12.0  # side of a pasted digit's square
    max_size_px: float = 28.0
    max_rotate_deg: float = 0.0  # each digit turned by up to this many degrees either way
    min_peak: float = 1.0  # ink fading: the digit's intensity is multiplied by a peak in [min_peak, max_peak]
    max_peak: float = 1.0
    noise_std: float = 0.03  # Gaussian pixel noise, then clipped to [0, 1]


TEST_RECIPE = SceneRecipe()
"""The main recipe: upright digits of 12-28 px at full ink on 64 x 64."""
TRAIN_RECIPE = SceneRecipe(min_size_px=10.0, max_size_px=34.0, max_rotate_deg=15.0, min_peak=0.4, max_peak=1.0)
"""Training: wider than both test recipes in scale, turn and ink, so neither is out of distribution."""
OTHER_RECIPE = SceneRecipe(height=96, width=128, min_size_px=10.0, max_size_px=34.0, max_rotate_deg=15.0,
                           min_peak=0.4, max_peak=0.7, noise_std=0.04)  # fmt: skip
"""Scenes of another recipe: a larger canvas, other scales, slight turns, fainter ink."""


@dataclass(frozen=True)
class Scenes:
    images: torch.Tensor  # [N, 1, H, W] float32 in [0, 1], white ink on black
    masks: torch.Tensor  # [N, H, W] int64: 0 background, k + 1 where digit k's ink is
    boxes: torch.Tensor  # [D, 4] float32 (x0, y0, x1, y1) tight around each digit's ink, x1 / y1 exclusive
    box_classes: torch.Tensor  # [D] int64 class index of each box (digit k -> k + 1)
    box_scene: torch.Tensor  # [D] int64 the scene each box belongs to

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device) -> Scenes:
        if device.type == "cpu":
            return self
        return Scenes(*(t.to(device) for t in (self.images, self.masks, self.boxes, self.box_classes, self.box_scene)))

    def boxes_of(self, scene: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes [d, 4], classes [d]) of one scene."""
        chosen = self.box_scene == scene
        return self.boxes[chosen], self.box_classes[chosen]


@dataclass(frozen=True)
class DigitPool:
    images: torch.Tensor  # [N, 1, 8, 8] float32 in [0, 1]: sklearn's digits at their own resolution
    labels: torch.Tensor  # [N] int64 digit 0..9
    index: np.ndarray  # [N] positions in sklearn's order (train, val and test never share one)


@dataclass(frozen=True)
class DigitSplit:
    train: DigitPool
    val: DigitPool
    test: DigitPool


def split_digits(seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.15) -> DigitSplit:
    """Split sklearn's digits by sample first (stratified, seeded), so val and test scenes carry unseen handwriting."""
    images, labels, _ = load_digits(image_size=8)
    rest, test = stratified_split(labels.numpy(), test_fraction, seed)
    train_in_rest, val_in_rest = stratified_split(labels[rest].numpy(), val_fraction / (1 - test_fraction), seed + 1)
    train, val = rest[train_in_rest], rest[val_in_rest]

    def pool(index: np.ndarray) -> DigitPool:
        return DigitPool(images[index], labels[index], index)

    return DigitSplit(pool(train), pool(val), pool(test))


def make_scenes(pool: DigitPool, n: int, recipe: SceneRecipe, generator: torch.Generator) -> Scenes:
    """`n` scenes drawn from `pool` by `recipe`; the same generator state gives the same scenes."""
    scene_of, sizes, centres, angles = _place(n, recipe, generator)
    d = len(scene_of)
    picks = torch.randint(0, len(pool.labels), (d,), generator=generator)
    peaks = recipe.min_peak + (recipe.max_peak - recipe.min_peak) * torch.rand(d, generator=generator)
    pasted = _paste(pool.images[picks], sizes, centres, angles, recipe.height, recipe.width)  # [D, H, W]
    ink = pasted >= INK_THRESHOLD  # before fading: the label follows the handwriting, not its contrast
    classes = pool.labels[picks] + 1
    images = torch.zeros(n, recipe.height, recipe.width).index_add_(0, scene_of, pasted * peaks[:, None, None])
    masks = torch.zeros(n, recipe.height, recipe.width, dtype=torch.int64)
    masks.index_add_(0, scene_of, ink.long() * classes[:, None, None])  # squares never overlap: a sum is a paint
    noise = recipe.noise_std * torch.randn(n, recipe.height, recipe.width, generator=generator)
    images = (images + noise).clamp_(0.0, 1.0)[:, None]
    boxes, kept = _tight_boxes(ink)
    return Scenes(images, masks, boxes[kept], classes[kept], scene_of[kept])


def _place(n: int, recipe: SceneRecipe, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Per digit: its scene, square side, centre (x, y) and turn, with squares (grown to hold the turn) apart."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    scene_of: list[int] = []
    sizes: list[float] = []
    centres: list[tuple[float, float]] = []
    angles: list[float] = []
    for scene in range(n):
        wanted = int(rng.integers(recipe.min_digits, recipe.max_digits + 1))
        placed: list[tuple[float, float, float]] = []  # (x, y, half side of the footprint)
        for _ in range(wanted):
            for _ in range(PLACEMENT_TRIES):
                size = float(rng.uniform(recipe.min_size_px, recipe.max_size_px))
                angle = math.radians(float(rng.uniform(-recipe.max_rotate_deg, recipe.max_rotate_deg)))
                half = size / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))  # the turned square's bounding half
                if 2 * half > min(recipe.height, recipe.width):
                    continue
                x = float(rng.uniform(half, recipe.width - half))
                y = float(rng.uniform(half, recipe.height - half))
                if all(max(abs(x - px), abs(y - py)) >= half + ph + SQUARE_GAP_PX for px, py, ph in placed):
                    placed.append((x, y, half))
                    scene_of.append(scene)
                    sizes.append(size)
                    centres.append((x, y))
                    angles.append(angle)
                    break
    return (torch.tensor(scene_of, dtype=torch.int64), torch.tensor(sizes), torch.tensor(centres).reshape(-1, 2),
            torch.tensor(angles))  # fmt: skip


def _paste(digits: torch.Tensor, sizes: torch.Tensor, centres: torch.Tensor, angles: torch.Tensor, height: int,
           width: int) -> torch.Tensor:  # fmt: skip
    """Each digit [D, 1, 8, 8] resampled bilinearly onto its own canvas-sized plane [D, H, W] (0 outside it)."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5  # pixel centres
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    dx = xs[None, None, :] - centres[:, 0, None, None]  # [D, 1, W]
    dy = ys[None, :, None] - centres[:, 1, None, None]  # [D, H, 1]
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    half = (sizes / 2)[:, None, None]
    u = (cos * dx + sin * dy) / half  # [D, H, W] in the digit's own [-1, 1] frame
    v = (-sin * dx + cos * dy) / half
    grid = torch.stack([u, v], dim=-1)  # [D, H, W, 2]
    pasted = functional.grid_sample(digits, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # bilinear tails reach half a source pixel (up to ~2 px here) past the square: cut them, or a neighbour's
    # tail would add to a digit's own ink and the squares would overlap after all
    return pasted[:, 0] * ((u.abs() <= 1) & (v.abs() <= 1))


def _tight_boxes(ink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes [D, 4] (x0, y0, x1, y1), exclusive, around each plane's ink, and which planes hold any ink."""
    cols, rows = ink.any(dim=1), ink.any(dim=2)  # [D, W], [D, H]
    kept = cols.any(dim=1)
    x = torch.arange(ink.shape[2])
    y = torch.arange(ink.shape[1])
    big = 1 << 20
    x0 = torch.where(cols, x, big).amin(dim=1)
    x1 = torch.where(cols, x, -1).amax(dim=1) + 1
    y0 = torch.where(rows, y, big).amin(dim=1)
    y1 = torch.where(rows, y, -1).amax(dim=1) + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float(), kept
