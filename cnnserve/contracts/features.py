"""What the network sees, defined once for the trainer that exports it, the server that serves it and the page and
client that read it: feature-map outputs, the neuron atlas files, and occlusion explanations.

Feature maps. A classifier cnnserve exports also answers the activation of every conv block, as extra graph outputs
after its primary ones: `features.block{i}.relu` (after the block's ReLU, [n, C_i, H_i, W_i]) and, where the block
pools, `features.block{i}.pool` (after its max-pool). Blocks count from 1. They are optional outputs (config
parameter `optional_outputs`, contracts/segmentation.py), so a request gets them only when it names them, and the
server computes only what a batch asked for. The config parameter `feature_outputs` lists them, in graph order.

The atlas. At publish, every channel of every conv block gets the input that excites it most (gradient ascent from
noise) and the validation crops that excite it most. The files live in the version folder under `atlas/`:
`index.json` (ATLAS_INDEX, the layout below) and PNG sprites. The config parameter `atlas` names the index, relative
to the version folder, when the model has one; the REST door serves the folder at
`GET /v2/models/{model}/versions/{version}/atlas/{file}`.

index.json:
    {"model": str, "image_size": [h, w], "top_k": 9, "measure": {"optimised": str, "top": str},
     "layers": [{"layer": "features.block1.relu", "block": 1, "channels": C, "receptive_field": px,
                 "optimised": {"sprite": "block1-optimised.png", "tile": [h, w], "columns": k},
                 "top": {"sprite": "block1-top.png", "tile": [h, w], "columns": k},
                 "neurons": [{"channel": c, "optimised_activation": float,
                              "top": [{"activation": float, "label": str, "image": i,
                                       "box": [x0, y0, x1, y1]}, ...]}]}]}
A sprite is a grid of tiles, left to right then top to bottom, `columns` tiles a row, no gaps; `tile` is a tile's
size in the PNG (upscaled by a whole factor, nearest neighbour, from the input's or the receptive field's pixels).
In `optimised`, tile c is channel c's optimised input; in `top`, tiles c * top_k ... c * top_k + top_k - 1 are
channel c's top crops, best first. `top_k` is 9 or the validation split's size when smaller. Activations are of the
layer's map after the ReLU; `measure` says which statistic of it each kind of value is. `image` is the crop's
source in the validation split (its position there); boxes are in that image's pixels, x1 and y1 exclusive, and a
box may reach past the image's edge (the receptive field of an edge unit), where the crop is 0.

Explanations. Occlusion sensitivity: a patch of the fill value slides over the input with a stride; each position's
heatmap value is the drop in the explained class's score (its softmax probability) from the unoccluded input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

FEATURE_PREFIX = "features."
RELU = "relu"
POOL = "pool"
FEATURE_OUTPUTS_PARAMETER = "feature_outputs"
"""config parameter: the feature-map outputs, comma-separated, in graph order."""

ATLAS_PARAMETER = "atlas"
"""config parameter: the atlas index's path relative to the version folder (present only when there is one)."""
ATLAS_DIR = "atlas"
ATLAS_INDEX = "index.json"
ATLAS_TOP_K = 9

EXPLAIN_PARAMETER = "explain"
"""Request parameter on ModelInfer: "occlusion" adds the EXPLANATION output."""
EXPLAIN_METHODS = ("occlusion",)
EXPLANATION_OUTPUT = "explanation"
"""FP32 [n, H, W]: the heatmap over the input's pixels, one per item."""
EXPLAINED_CLASS_OUTPUT = "explained_class"
"""INT64 [n]: the class each heatmap explains (the request's `target_class`, else the model's top class)."""
PATCH_PARAMETER = "patch"
STRIDE_PARAMETER = "patch_stride"
TARGET_CLASS_PARAMETER = "target_class"
DEFAULT_PATCH = 4
DEFAULT_STRIDE = 2
DEFAULT_FILL = 0.0
"""Occluded pixels are set to this (pixels in [0, 1], black: the digits' background)."""


def feature_name(block: int, stage: str) -> str:
    """`features.block{block}.{stage}` for a 1-based block and stage RELU or POOL."""
    if block < 1 or stage not in (RELU, POOL):
        raise ValueError(f"block must be >= 1 and stage {RELU!r} or {POOL!r}, got {block}, {stage!r}")
    return f"{FEATURE_PREFIX}block{block}.{stage}"


def is_feature_output(name: str) -> bool:
    return name.startswith(FEATURE_PREFIX)


def feature_outputs_parameter(names: Sequence[str]) -> str:
    return ",".join(names)


def feature_outputs(parameters: Mapping[str, str]) -> tuple[str, ...]:
    """The feature-map outputs a config's parameters list, in graph order; empty when none."""
    value = parameters.get(FEATURE_OUTPUTS_PARAMETER, "")
    return tuple(name.strip() for name in value.split(",") if name.strip())


def occlusion_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top (or left) edges of the patch along one axis: every `stride` pixels, the last one flush with the edge so
    every pixel is covered."""
    if not 0 < patch <= size or stride < 1:
        raise ValueError(f"patch must be in [1, {size}] and stride >= 1, got patch {patch}, stride {stride}")
    positions = list(range(0, size - patch + 1, stride))
    if positions[-1] != size - patch:
        positions.append(size - patch)
    return positions
