"""An explanation as a picture: the heatmap in a colour map, blended over the image it explains in grey, as PNG."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from cnnserve.contracts import imaging

HEAT_WEIGHT = 0.75
"""The colour's weight at the hottest pixel; cooler pixels show more of the image, cold ones only the image."""


def heat_colours(heat: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """[h, w] heat -> (RGB [h, w, 3] in 0..255 on a black-red-yellow-white scale, weight [h, w] in [0, 1]).
    Scaled by the map's own peak; negative heat (occlusion raised the score) counts as none."""
    values = np.asarray(heat, dtype=np.float32)
    peak = float(values.max()) if values.size else 0.0
    level = np.clip(values / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(values)
    rgb = np.stack([np.clip(3 * level - k, 0.0, 1.0) for k in range(3)], axis=-1) * 255.0
    return rgb.astype(np.float32), level


def overlay_png(heat: npt.NDArray[np.floating], grey: npt.NDArray[np.uint8]) -> bytes:
    """The heatmap [h, w] over the grey image uint8 [h, w] -> an RGB PNG file of h x w pixels."""
    rgb, level = heat_colours(heat)
    weight = (HEAT_WEIGHT * level)[..., np.newaxis]
    base = np.repeat(np.asarray(grey, dtype=np.float32)[..., np.newaxis], 3, axis=-1)
    blended = np.round((1.0 - weight) * base + weight * rgb)
    return imaging.png(np.clip(blended, 0, 255).astype(np.uint8))


def overlay_pngs(heatmaps: npt.NDArray[np.floating], greys: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.object_]:
    """One PNG per item: object array [n] of bytes, as the protocol sends BYTES."""
    files = np.empty(len(heatmaps), dtype=object)
    for index, (heat, grey) in enumerate(zip(heatmaps, greys, strict=True)):
        files[index] = overlay_png(heat, grey)
    return files
