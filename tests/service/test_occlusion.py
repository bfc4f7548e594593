"""kinds/occlusion.py on its own: where the patches go, what the copies hold, and the heatmap's averaging."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnserve.service.kinds.occlusion import OcclusionGrid, heatmap, occluded_copies


def test_positions_step_by_the_stride_and_end_flush_with_the_edge() -> None:
    grid = OcclusionGrid(16, 10, patch=4, stride=3)
    assert grid.rows == [0, 3, 6, 9, 12] and grid.columns == [0, 3, 6]
    assert grid.count == 15 and grid.corner(4) == (3, 3)


@pytest.mark.parametrize(("patch", "stride"), [(0, 1), (5, 1), (2, 3), (2, 0)])
def test_a_patch_that_does_not_fit_or_a_stride_that_leaves_gaps_is_refused(patch: int, stride: int) -> None:
    with pytest.raises(ValueError, match="patch"):
        OcclusionGrid(4, 4, patch, stride)


def test_each_copy_has_its_own_patch_filled_and_nothing_else_changed() -> None:
    image = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4) + 1
    grid = OcclusionGrid(4, 4, patch=2, stride=2)
    fill = np.array([-1.0, -2.0], np.float32)
    copies = occluded_copies(image, grid, fill, 1, 4)  # copies 1..3 of 4
    assert copies.shape == (3, 2, 4, 4)
    for offset, index in enumerate(range(1, 4)):
        top, left = grid.corner(index)
        expected = image.copy()
        expected[:, top : top + 2, left : left + 2] = fill[:, None, None]
        np.testing.assert_array_equal(copies[offset], expected)


@given(st.integers(1, 9), st.integers(1, 9), st.data())
def test_a_uniform_drop_makes_a_uniform_map(size: int, patch: int, data: st.DataObject) -> None:
    patch = min(patch, size)
    stride = data.draw(st.integers(1, patch))
    grid = OcclusionGrid(size, size, patch, stride)
    heat = heatmap(0.9, np.full(grid.count, 0.4), grid)
    np.testing.assert_allclose(heat, 0.5, rtol=1e-6)  # every pixel covered, each by the same drop


def test_a_pixel_is_the_mean_drop_of_the_patches_covering_it() -> None:
    grid = OcclusionGrid(3, 3, patch=2, stride=1)  # four patches; the centre lies under all of them
    scores = np.array([0.0, 0.2, 0.4, 0.6])
    heat = heatmap(1.0, scores, grid)
    assert heat[1, 1] == pytest.approx(1.0 - scores.mean())
    assert heat[0, 0] == pytest.approx(1.0) and heat[2, 2] == pytest.approx(0.4)
    assert heat[0, 1] == pytest.approx(1.0 - (0.0 + 0.2) / 2)
