"""A tiny style model for the serving tests: a real ONNX graph that follows cnnserve.contracts.style (RGB pixels in
[0, 1] in and out, any batch, height and width that are multiples of its stride), with an answer computable in
numpy (stylizer_reference), and its config written the way the trainer's publish writes one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from cnnserve.contracts import style
from tests.onnx_models import _entry, _save

STRIDE = 4


def write_stylizer(repo: Path, name: str = "stylizer", version: int = 1, max_batch_size: int = 8,
                   **config: Any) -> Path:  # fmt: skip
    """images FP32 [N,3,H,W] -> stylized FP32 [N,3,H,W]: 2x2 average pooling, nearest 2x back up, the channels
    reversed, then 1 - x. Pooling makes each answer depend on its 2x2 cell, so a wrong pad or crop shows."""
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", [style.INPUT], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Resize", ["pooled", "", "scales"], ["upsampled"], mode="nearest"),
            helper.make_node("Gather", ["upsampled", "reversed"], ["swapped"], axis=1),
            helper.make_node("Sub", ["one", "swapped"], [style.OUTPUT]),
        ],
        name,
        [helper.make_tensor_value_info(style.INPUT, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(style.OUTPUT, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
            numpy_helper.from_array(np.array([2, 1, 0], np.int64), "reversed"),
            numpy_helper.from_array(np.array(1, np.float32), "one"),
        ],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    (repo / name / str(version) / style.STYLE_IMAGE_FILE).write_bytes(b"")  # published beside the model
    settings = {"max_batch_size": max_batch_size, "preprocessing": style.preprocessing(STRIDE),
                "postprocessing": style.postprocessing(), "parameters": style.parameters(STRIDE), **config}  # fmt: skip
    return _entry(repo, name, settings)


def stylizer_reference(images: np.ndarray) -> np.ndarray:
    """What write_stylizer's graph answers for [N, 3, H, W] (H, W even)."""
    n, c, h, w = images.shape
    pooled = images.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    upsampled = pooled.repeat(2, axis=2).repeat(2, axis=3)
    return np.asarray(1.0 - upsampled[:, ::-1], dtype=np.float32)


def served_reference(pixels: np.ndarray) -> np.ndarray:
    """What the server answers for a file of RGB uint8 pixels [h, w, 3]: padded bottom / right with 0 to the
    stride, through the graph, cropped back to h x w: [1, 3, h, w]."""
    h, w = pixels.shape[:2]
    padded_h, padded_w = -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE
    item = np.zeros((1, 3, padded_h, padded_w), np.float32)
    item[0, :, :h, :w] = pixels.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
    return stylizer_reference(item)[..., :h, :w]
