"""Tiny ONNX graphs for the model-loading tests, beyond the ones in tests/onnx_models.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_config(folder: Path, **config: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))


def fixed_batch(path: Path) -> Path:
    """x FP32 [1,3] -> y FP32 [1,3]: y = 2x; the batch axis is fixed at 1."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    return save(graph, path)


def conv_any_size(path: Path) -> Path:
    """images FP32 [N,1,H,W] -> features [N,2,H-2,W-2]: a 3x3 convolution, so H and W below 3 fail."""
    weight = np.ones((2, 1, 3, 3), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["features"])],
        "conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 2, None, None])],
        [numpy_helper.from_array(weight, "w")],
    )
    return save(graph, path)


def strings(path: Path) -> Path:
    """text BYTES [N] -> same BYTES [N] (Identity): a model that takes nothing but strings."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["N"])],
    )
    return save(graph, path)
