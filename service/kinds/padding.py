"""Outputs in input pixels, for the kinds whose files are padded to a stride (segmentation, image-to-image): the
config's `postprocessing` keys that name them (contracts/segmentation.py) checked when the model loads, and the crop
and clip back to the size of the files the server padded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cnnserve.contracts import segmentation as contract
from cnnserve.service.errors import ModelLoadError
from cnnserve.service.types import ModelSpec, TensorSpec

INTEGER_DATATYPES = ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
FLOAT_DATATYPES = ("FP16", "FP32", "FP64")
KEYS = (contract.POSTPROCESSING_MASK, contract.POSTPROCESSING_BOXES, contract.POSTPROCESSING_SPATIAL)


@dataclass(frozen=True)
class SpatialOutputs:
    """Outputs in input pixels (config `postprocessing`): what the server crops or clips back to an image it padded,
    and the mask it may send as a palette PNG."""

    mask: str | None = None
    """Class index per pixel [n, H, W] (postprocessing.mask)."""
    boxes: str | None = None
    """Boxes [n, K, 4] as x0, y0, x1, y1 (postprocessing.boxes): clipped to the original image after padding."""
    spatial: tuple[str, ...] = ()
    """Outputs whose last two axes are the input's H, W (postprocessing.spatial): cropped after padding."""


def from_spec(spec: ModelSpec, config_path: Path) -> SpatialOutputs | None:
    """The spec's spatial outputs (postprocessing mask, boxes, spatial), checked against its graph."""
    return spatial_outputs(config_path, spec.postprocessing, spec.outputs, spec.max_batch_size)


def spatial_outputs(
    config_path: Path, postprocessing: Mapping[str, Any], outputs: Sequence[TensorSpec], max_batch_size: int
) -> SpatialOutputs | None:
    """postprocessing.mask, .boxes and .spatial checked against the graph's outputs; None when the config has none."""
    if not any(key in postprocessing for key in KEYS):
        return None
    by_name = {t.name: t for t in outputs}
    names = ", ".join(by_name)

    def output(key: str, name: object, rule: str, fits: Any) -> str:
        tensor = by_name.get(name) if isinstance(name, str) else None
        if tensor is None:
            raise ModelLoadError(
                f"{config_path}: key 'postprocessing.{key}' must name an output ({names}), got {name!r}"
            )
        if max_batch_size == 0 or not fits(tensor):
            raise ModelLoadError(
                f"{config_path}: key 'postprocessing.{key}' names {name!r}, {tensor.datatype} "
                f"{list(tensor.shape)}; it must be {rule}, batch axis included (max_batch_size > 0)"
            )
        return tensor.name

    mask = boxes = None
    mask_key, boxes_key = contract.POSTPROCESSING_MASK, contract.POSTPROCESSING_BOXES
    if mask_key in postprocessing:
        mask = output(mask_key, postprocessing[mask_key], "an integer output [n, H, W] (UINT8 for the palette)",
                      lambda t: t.datatype in INTEGER_DATATYPES and len(t.shape) == 3)  # fmt: skip
    if boxes_key in postprocessing:  # K and the 4 may be left variable (-1) by an exporter

        def is_boxes(t: TensorSpec) -> bool:
            return t.datatype in FLOAT_DATATYPES and len(t.shape) == 3 and t.shape[2] in (4, -1)

        boxes = output(boxes_key, postprocessing[boxes_key], "a float output [n, K, 4] (x0, y0, x1, y1)", is_boxes)
    spatial = []
    listed = postprocessing.get(contract.POSTPROCESSING_SPATIAL, [])
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise ModelLoadError(
            f"{config_path}: key 'postprocessing.spatial' must be a list of output names, got {listed!r}"
        )
    for index, name in enumerate(listed):
        spatial.append(output(f"spatial[{index}]", name, "[n, ..., H, W]", lambda t: len(t.shape) >= 3))
    return SpatialOutputs(mask, boxes, tuple(spatial))


def crop(outputs: Mapping[str, npt.NDArray[Any]], spatial: SpatialOutputs, size: tuple[int, int]
         ) -> dict[str, npt.NDArray[Any]]:  # fmt: skip
    """Outputs of a padded batch back to the files' own (height, width): spatial outputs cut to it (views), boxes
    clipped to it (x to [0, width], y to [0, height]; a copy, the batch's arrays stay untouched)."""
    height, width = size
    result = dict(outputs)
    for name in spatial.spatial:
        if name in result:
            result[name] = result[name][..., :height, :width]
    if spatial.boxes is not None and spatial.boxes in result:
        boxes = np.array(result[spatial.boxes], copy=True)
        np.clip(boxes[..., 0::2], 0, width, out=boxes[..., 0::2])
        np.clip(boxes[..., 1::2], 0, height, out=boxes[..., 1::2])
        result[spatial.boxes] = boxes
    return result
