"""Occlusion sensitivity, the maths without transport: the occluded copies of one image and the heatmap their scores
make (contracts/features.py names the parameters and outputs).

A patch of the fill value slides over the image; copy j has the patch at position j (rows of positions top to
bottom, each left to right). A pixel's heat is the mean drop in the explained class's score over the patches that
cover it, so the map has the image's own pixels whatever the patch and stride.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from cnnserve.contracts.features import occlusion_positions

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class OcclusionGrid:
    """Where the patches go on a height x width image; ValueError when the patch does not fit or the stride would
    leave pixels uncovered."""

    height: int
    width: int
    patch: int
    stride: int

    def __post_init__(self) -> None:
        # A stride past the patch would leave pixels no patch covers, and they would have no heat.
        if not 0 < self.patch <= min(self.height, self.width) or not 0 < self.stride <= self.patch:
            raise ValueError(
                f"patch must be in [1, {min(self.height, self.width)}] and stride in [1, patch], "
                f"got patch {self.patch}, stride {self.stride}"
            )

    @cached_property
    def rows(self) -> list[int]:
        return occlusion_positions(self.height, self.patch, self.stride)

    @cached_property
    def columns(self) -> list[int]:
        return occlusion_positions(self.width, self.patch, self.stride)

    @property
    def count(self) -> int:
        """Occluded copies per image."""
        return len(self.rows) * len(self.columns)

    def corner(self, index: int) -> tuple[int, int]:
        """(top, left) of copy `index`'s patch."""
        row, column = divmod(index, len(self.columns))
        return self.rows[row], self.columns[column]


def occluded_copies(image: Floats, grid: OcclusionGrid, fill: Floats, start: int, stop: int) -> Floats:
    """Copies start..stop-1 of `image` [C, H, W], each with its patch set to `fill` [C]: [stop - start, C, H, W].
    Built a range at a time, so a request's copies never all sit in memory at once."""
    copies = np.repeat(image[np.newaxis], stop - start, axis=0)
    patch = grid.patch
    for offset, index in enumerate(range(start, stop)):
        top, left = grid.corner(index)
        copies[offset, :, top : top + patch, left : left + patch] = fill[:, np.newaxis, np.newaxis]
    return copies


def heatmap(base_score: float, scores: npt.NDArray[np.floating[Any]], grid: OcclusionGrid) -> Floats:
    """Per pixel, the mean of base_score - scores[j] over the copies j whose patch covers it: [H, W] FP32."""
    if len(scores) != grid.count:
        raise ValueError(f"expected {grid.count} scores, got {len(scores)}")
    drops = base_score - np.asarray(scores, dtype=np.float64)
    total = np.zeros((grid.height, grid.width), dtype=np.float64)
    covered = np.zeros((grid.height, grid.width), dtype=np.int64)
    patch = grid.patch
    for index, drop in enumerate(drops):
        top, left = grid.corner(index)
        total[top : top + patch, left : left + patch] += drop
        covered[top : top + patch, left : left + patch] += 1
    return (total / covered).astype(np.float32)  # every pixel is covered: the last position is flush with the edge
