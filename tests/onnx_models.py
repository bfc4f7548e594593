"""Small real ONNX models built with onnx.helper, for server tests that need no torch.

Each builder writes a repository entry (config.json, labels, versions) the way training/ publishes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
LATENT = 8


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _entry(repo: Path, name: str, config: dict[str, Any], labels: list[str] | None = None) -> Path:
    folder = repo / name
    folder.mkdir(parents=True, exist_ok=True)
    if labels is not None:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
        config = {**config, "labels_file": "labels.txt"}
    (folder / "config.json").write_text(json.dumps({"name": name, **config}, indent=2))
    return folder


# How images become the classifier's input: grey 4x4, scaled to [0,1], then (x - 0.5) / 0.25. The server also takes
# PNG/JPEG files for it ("input_format": "image").
CLASSIFIER_PREPROCESSING = {"input": "images", "input_format": "image", "height": 4, "width": 4, "channels": 1,
                            "layout": "NCHW", "scale": 1 / 255, "mean": [0.5], "std": [0.25]}


def classifier_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((16, 10)).astype(np.float32), rng.standard_normal(10).astype(np.float32)


def write_classifier(repo: Path, name: str = "classifier", version: int = 1, seed: int = 0,
                     **config: Any) -> Path:
    """images FP32 [N,1,4,4] -> logits FP32 [N,10]: flatten, matmul, add."""
    weight, bias = classifier_weights(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["logits"]),
        ],
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    base = {"max_batch_size": 32, "label_output": "logits", "preprocessing": CLASSIFIER_PREPROCESSING,
            "dynamic_batching": {"max_queue_delay_us": 2000, "max_queue_size": 256}}
    return _entry(repo, name, {**base, **config}, labels=[f"digit-{i}" for i in range(10)])


def classifier_reference(images: np.ndarray, seed: int = 0) -> np.ndarray:
    weight, bias = classifier_weights(seed)
    logits: np.ndarray = images.reshape(len(images), -1) @ weight + bias
    return logits


def write_conditional_generator(repo: Path, name: str = "cgen", version: int = 1) -> Path:
    """latent FP32 [N,8] + class INT64 [N] -> images FP32 [N,1,2,4]: tanh(latent + table[class])."""
    table = np.linspace(-1, 1, 10 * LATENT, dtype=np.float32).reshape(10, LATENT)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "class"], ["offset"], axis=0),
            helper.make_node("Add", ["latent", "offset"], ["sum"]),
            helper.make_node("Tanh", ["sum"], ["act"]),
            helper.make_node("Reshape", ["act", "shape"], ["images"]),
        ],
        name,
        [
            helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["N", LATENT]),
            helper.make_tensor_value_info("class", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 2, 4])],
        [numpy_helper.from_array(table, "table"),
         numpy_helper.from_array(np.array([-1, 1, 2, 4], dtype=np.int64), "shape")],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    config = {"max_batch_size": 16, "parameters": {"task": "conditional_generation"},
              "postprocessing": {"output": "images", "range": [-1.0, 1.0]}}
    return _entry(repo, name, config, labels=[str(i) for i in range(10)])


def conditional_generator_reference(latent: np.ndarray, classes: np.ndarray) -> np.ndarray:
    table = np.linspace(-1, 1, 10 * LATENT, dtype=np.float32).reshape(10, LATENT)
    produced: np.ndarray = np.tanh(latent + table[classes]).reshape(-1, 1, 2, 4)
    return produced


# Datatypes an identity model passes through: protocol name -> ONNX element type.
IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def write_identity(repo: Path, name: str = "identity", version: int = 1) -> Path:
    """One input and output per datatype, each [N,3], copied through; batching off (max_batch_size 0 -> [-1,3])."""
    nodes, inputs, outputs = [], [], []
    for datatype, elem in IDENTITY_TYPES.items():
        nodes.append(helper.make_node("Identity", [f"in_{datatype}"], [f"out_{datatype}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{datatype}", elem, ["N", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{datatype}", elem, ["N", 3]))
    _save(helper.make_graph(nodes, name, inputs, outputs), repo / name / str(version) / "model.onnx")
    return _entry(repo, name, {"max_batch_size": 8, "dynamic_batching": None})


def write_corrupt(repo: Path, name: str = "broken", version: int = 1) -> Path:
    path = repo / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an onnx model")
    return _entry(repo, name, {"max_batch_size": 4})


def write_slow_classifier(repo: Path, name: str = "slow", version: int = 1, seed: int = 0, work: int = 8,
                          dim: int = 384, **config: Any) -> Path:
    """The classifier's answers (same weights as write_classifier) at a fixed cost per execution: `work` chained
    [dim,dim] MatMul+Tanh steps that start from the batch's mean, so no optimiser can fold them, and are then
    multiplied by zero into the logits. One thread per session, so the cost does not depend on the batch size."""
    weight, bias = classifier_weights(seed)
    rng = np.random.default_rng(seed + 1)
    square = (rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["images"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["plain"]),
        helper.make_node("ReduceMean", ["flat"], ["mean"], keepdims=0),  # scalar: depends on every input
        helper.make_node("Add", ["square", "mean"], ["h0"]),
    ]
    for step in range(work):  # tanh keeps every value in [-1, 1]: times zero is exactly zero
        nodes.append(helper.make_node("MatMul", [f"h{step}", "square"], [f"m{step}"]))
        nodes.append(helper.make_node("Tanh", [f"m{step}"], [f"h{step + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"h{work}"], ["busy"], keepdims=0),
        helper.make_node("Mul", ["busy", "zero"], ["nothing"]),
        helper.make_node("Add", ["plain", "nothing"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"),
         numpy_helper.from_array(square, "square"), numpy_helper.from_array(np.array(0, np.float32), "zero")],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    base = {"max_batch_size": 8, "label_output": "logits", "session": {"intra_op_threads": 1},
            "dynamic_batching": {"max_queue_delay_us": 1000, "max_queue_size": 256}}
    return _entry(repo, name, {**base, **config}, labels=[f"digit-{i}" for i in range(10)])


# The pixel contract (what training exports since issue 11): the graph takes [0, 1] pixels and normalises them in its
# first nodes, so the hints keep only what happens before the tensor.
PIXEL_PREPROCESSING = {"input": "images", "input_format": "image", "height": 4, "width": 4, "channels": 1,
                       "layout": "NCHW", "scale": 1 / 255}


def write_pixel_classifier(repo: Path, name: str = "pixels", version: int = 1, seed: int = 0) -> Path:
    """images FP32 [N,1,4,4] pixels in [0, 1] -> logits: (x - 0.5) / 0.25 in the graph, then write_classifier's
    weights, so its answer on pixels p is classifier_reference((p - 0.5) / 0.25)."""
    weight, bias = classifier_weights(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["images", "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "std"], ["normalised"]),
            helper.make_node("Flatten", ["normalised"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["logits"]),
        ],
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "mean"),
         numpy_helper.from_array(np.full((1, 1, 1, 1), 0.25, np.float32), "std"),
         numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    config = {"max_batch_size": 32, "label_output": "logits", "preprocessing": PIXEL_PREPROCESSING,
              "parameters": {"task": "classification"}}
    return _entry(repo, name, config, labels=[f"digit-{i}" for i in range(10)])


def write_pixel_generator(repo: Path, name: str = "pixelgen", version: int = 1) -> Path:
    """latent FP32 [N,8] -> images FP32 [N,1,2,4] in [0, 1]: (tanh(latent) + 1) / 2, range [0, 1] published."""
    graph = helper.make_graph(
        [
            helper.make_node("Tanh", ["latent"], ["act"]),
            helper.make_node("Add", ["act", "one"], ["shifted"]),
            helper.make_node("Div", ["shifted", "two"], ["halved"]),
            helper.make_node("Reshape", ["halved", "shape"], ["images"]),
        ],
        name,
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["N", LATENT])],
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 2, 4])],
        [numpy_helper.from_array(np.array(1, np.float32), "one"),
         numpy_helper.from_array(np.array(2, np.float32), "two"),
         numpy_helper.from_array(np.array([-1, 1, 2, 4], dtype=np.int64), "shape")],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    config = {"max_batch_size": 16, "parameters": {"task": "generation"},
              "postprocessing": {"output": "images", "range": [0.0, 1.0]}}
    return _entry(repo, name, config)
