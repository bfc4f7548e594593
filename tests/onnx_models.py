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
CLASSIFIER_PREPROCESSING = {
    "input": "images",
    "input_format": "image",
    "height": 4,
    "width": 4,
    "channels": 1,
    "layout": "NCHW",
    "scale": 1 / 255,
    "mean": [0.5],
    "std": [0.25],
}


def classifier_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((16, 10)).astype(np.float32), rng.standard_normal(10).astype(np.float32)


def write_classifier(repo: Path, name: str = "classifier", version: int = 1, seed: int = 0, **config: Any) -> Path:
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
    base = {
        "max_batch_size": 32,
        "label_output": "logits",
        "preprocessing": CLASSIFIER_PREPROCESSING,
        "dynamic_batching": {"max_queue_delay_us": 2000, "max_queue_size": 256},
    }
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
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([-1, 1, 2, 4], dtype=np.int64), "shape"),
        ],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    config = {
        "max_batch_size": 16,
        "parameters": {"task": "conditional_generation"},
        "postprocessing": {"output": "images", "range": [-1.0, 1.0]},
    }
    return _entry(repo, name, config, labels=[str(i) for i in range(10)])


def conditional_generator_reference(latent: np.ndarray, classes: np.ndarray) -> np.ndarray:
    table = np.linspace(-1, 1, 10 * LATENT, dtype=np.float32).reshape(10, LATENT)
    produced: np.ndarray = np.tanh(latent + table[classes]).reshape(-1, 1, 2, 4)
    return produced


# Datatypes an identity model passes through: protocol name -> ONNX element type.
IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
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


def write_typed_identity(repo: Path, datatype: str, name: str | None = None, version: int = 1, **config: Any) -> Path:
    """`identity_<datatype>` (lower case): INPUT0 [N,4] of one datatype copied to OUTPUT0; batching up to 8."""
    name = name or f"identity_{datatype.lower()}"
    elem = IDENTITY_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        name,
        [helper.make_tensor_value_info("INPUT0", elem, ["N", 4])],
        [helper.make_tensor_value_info("OUTPUT0", elem, ["N", 4])],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    return _entry(repo, name, {"max_batch_size": 8, **config})


# Triton's example models (triton-inference-server/server docs/examples/model_repository), rebuilt in ONNX: what
# its example clients (tritonclient's src/python/examples) call by name, with the same tensor names and shapes.


def _sum_and_difference(name: str, elem: int, repo: Path, as_text: bool) -> Path:
    """INPUT0, INPUT1 [N,16] -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1; with `as_text`, BYTES tensors
    holding decimal numbers, cast to INT32 for the arithmetic and back to strings (Triton's simple_string)."""
    number = "INPUT0", "INPUT1"
    nodes = []
    if as_text:
        nodes += [helper.make_node("Cast", [f"INPUT{i}"], [f"n{i}"], to=TensorProto.INT32) for i in range(2)]
        number = "n0", "n1"
    results = ("sum", "difference") if as_text else ("OUTPUT0", "OUTPUT1")
    nodes += [helper.make_node("Add", list(number), [results[0]]), helper.make_node("Sub", list(number), [results[1]])]
    if as_text:
        nodes += [helper.make_node("Cast", [r], [f"OUTPUT{i}"], to=TensorProto.STRING) for i, r in enumerate(results)]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(f"INPUT{i}", elem, ["N", 16]) for i in range(2)],
        [helper.make_tensor_value_info(f"OUTPUT{i}", elem, ["N", 16]) for i in range(2)],
    )
    _save(graph, repo / name / "1" / "model.onnx")
    return _entry(repo, name, {"max_batch_size": 8})


def write_simple_string(repo: Path, name: str = "simple_string") -> Path:
    """Triton's simple_string: BYTES [N,16] of decimal numbers; a graph that refuses any other string (Cast)."""
    return _sum_and_difference(name, TensorProto.STRING, repo, as_text=True)


def write_simple(repo: Path, name: str = "simple") -> Path:
    """Triton's simple: INT32 [N,16] sum and difference (simple_*_infer_client.py, grpc_explicit_int_content_client)."""
    return _sum_and_difference(name, TensorProto.INT32, repo, as_text=False)


def write_simple_int8(repo: Path, name: str = "simple_int8") -> Path:
    """Triton's simple_int8: INT8 [N,16] sum and difference (grpc_explicit_int8_content_client.py)."""
    return _sum_and_difference(name, TensorProto.INT8, repo, as_text=False)


def write_simple_identity(repo: Path, name: str = "simple_identity") -> Path:
    """Triton's simple_identity: INPUT0 BYTES [N,-1] copied to OUTPUT0 (strings with null bytes in its clients)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        name,
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, ["N", "L"])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, ["N", "L"])],
    )
    _save(graph, repo / name / "1" / "model.onnx")
    return _entry(repo, name, {"max_batch_size": 8})


def write_corrupt(repo: Path, name: str = "broken", version: int = 1) -> Path:
    path = repo / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an onnx model")
    return _entry(repo, name, {"max_batch_size": 4})


def write_slow_classifier(
    repo: Path, name: str = "slow", version: int = 1, seed: int = 0, work: int = 8, dim: int = 384, **config: Any
) -> Path:
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
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(square, "square"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
        ],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    base = {
        "max_batch_size": 8,
        "label_output": "logits",
        "session": {"intra_op_threads": 1},
        "dynamic_batching": {"max_queue_delay_us": 1000, "max_queue_size": 256},
    }
    return _entry(repo, name, {**base, **config}, labels=[f"digit-{i}" for i in range(10)])


# The pixel contract (what training exports since issue 11): the graph takes [0, 1] pixels and normalises them in its
# first nodes, so the hints keep only what happens before the tensor.
PIXEL_PREPROCESSING = {k: v for k, v in CLASSIFIER_PREPROCESSING.items() if k not in ("mean", "std")}


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
        [
            numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "mean"),
            numpy_helper.from_array(np.full((1, 1, 1, 1), 0.25, np.float32), "std"),
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    config = {
        "max_batch_size": 32,
        "label_output": "logits",
        "preprocessing": PIXEL_PREPROCESSING,
        "parameters": {"task": "classification"},
    }
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
        [
            numpy_helper.from_array(np.array(1, np.float32), "one"),
            numpy_helper.from_array(np.array(2, np.float32), "two"),
            numpy_helper.from_array(np.array([-1, 1, 2, 4], dtype=np.int64), "shape"),
        ],
    )
    _save(graph, repo / name / str(version) / "model.onnx")
    config = {
        "max_batch_size": 16,
        "parameters": {"task": "generation"},
        "postprocessing": {"output": "images", "range": [0.0, 1.0]},
    }
    return _entry(repo, name, config)


# A segmenter following cnnserve.contracts.segmentation: dynamic H and W (multiples of its stride), pixels in [0, 1].
SEGMENTER_STRIDE = 8
SEGMENTER_PREPROCESSING = {
    "input": "images",
    "input_format": "image",
    "channels": 1,
    "layout": "NCHW",
    "scale": 1 / 255,
    "resize": "pad",
    "stride": SEGMENTER_STRIDE,
}


def write_segmenter(
    repo: Path, name: str = "segmenter", version: int = 1, work: int = 12, dim: int = 192, **config: Any
) -> Path:
    """images FP32 [N,1,H,W] -> the contract's five outputs, each checkable (segmenter_reference):
    - mask UINT8 [N,H,W] = ceil(10 * pixel): 0 where the pixel is black, 1..10 brighter;
    - boxes FP32 [N,8,4]: row 0 the whole input (0, 0, W, H), the other rows 0;
    - scores FP32 [N,8]: row 0 0.9, the others 0; classes INT64 [N,8]: row 0 the item's largest mask value;
    - logits FP32 [N,11,H,W] = -(10 * pixel - k)^2 for class k, plus `work` [dim,dim] MatMul+Tanh steps multiplied
      by zero: an expensive branch only logits need, so pruning it away is measurable."""
    from cnnserve.contracts import segmentation

    rng = np.random.default_rng(5)
    square = (rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)
    first_row = np.zeros((1, 8, 1), np.float32)
    first_row[0, 0, 0] = 1
    nodes = [
        helper.make_node("Mul", ["images", "ten"], ["tenfold"]),
        helper.make_node("Ceil", ["tenfold"], ["ceiled"]),
        helper.make_node("Squeeze", ["ceiled", "axis1"], ["ceiled_hw"]),
        helper.make_node("Cast", ["ceiled_hw"], ["mask"], to=TensorProto.UINT8),
        # boxes: (0, 0, W, H) in row 0 of each item
        helper.make_node("Shape", ["images"], ["shape"]),
        helper.make_node("Gather", ["shape", "idx_n"], ["n"]),
        helper.make_node("Gather", ["shape", "idx_hw"], ["hw"]),
        helper.make_node("Cast", ["hw"], ["hw_f"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["hw_f", "idx_wh"], ["wh"]),  # (W, H)
        helper.make_node("Concat", ["zeros2", "wh"], ["box"], axis=0),  # [4]
        helper.make_node("Reshape", ["box", "box_shape"], ["box_1"]),  # [1,1,4]
        helper.make_node("Mul", ["box_1", "first_row"], ["box_rows"]),  # [1,8,4]
        helper.make_node("Concat", ["n", "eight_four"], ["boxes_shape"], axis=0),
        helper.make_node("Expand", ["box_rows", "boxes_shape"], ["boxes"]),
        helper.make_node("Concat", ["n", "eight"], ["scores_shape"], axis=0),
        helper.make_node("Expand", ["score_row", "scores_shape"], ["scores"]),
        helper.make_node("ReduceMax", ["ceiled"], ["top"], axes=[1, 2, 3], keepdims=0),  # [N]
        helper.make_node("Cast", ["top"], ["top_i"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["top_i", "axis1"], ["top_col"]),  # [N,1]
        helper.make_node("Mul", ["top_col", "class_row"], ["classes"]),
        # logits, and the expensive branch only they need
        helper.make_node("Sub", ["tenfold", "class_ids"], ["distance"]),  # [N,11,H,W]
        helper.make_node("Mul", ["distance", "distance"], ["squared"]),
        helper.make_node("Neg", ["squared"], ["plain_logits"]),
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Add", ["square", "mean"], ["h0"]),
    ]
    for step in range(work):
        nodes.append(helper.make_node("MatMul", [f"h{step}", "square"], [f"m{step}"]))
        nodes.append(helper.make_node("Tanh", [f"m{step}"], [f"h{step + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"h{work}"], ["busy"], keepdims=0),
        helper.make_node("Mul", ["busy", "zero"], ["nothing"]),
        helper.make_node("Add", ["plain_logits", "nothing"], ["logits"]),
    ]
    constants = {
        "ten": np.array(10, np.float32), "axis1": np.array([1], np.int64), "idx_n": np.array([0], np.int64),
        "idx_hw": np.array([2, 3], np.int64), "idx_wh": np.array([1, 0], np.int64),
        "zeros2": np.zeros(2, np.float32), "box_shape": np.array([1, 1, 4], np.int64), "first_row": first_row,
        "eight_four": np.array([8, 4], np.int64), "eight": np.array([8], np.int64),
        "score_row": np.array([[0.9] + [0.0] * 7], np.float32),
        "class_row": np.array([[1] + [0] * 7], np.int64),
        "class_ids": np.arange(11, dtype=np.float32).reshape(1, 11, 1, 1),
        "square": square, "zero": np.array(0, np.float32),
    }  # fmt: skip
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 8, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 8]),
         helper.make_tensor_value_info("classes", TensorProto.INT64, ["N", 8]),
         helper.make_tensor_value_info("mask", TensorProto.UINT8, ["N", "H", "W"]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 11, "H", "W"])],
        [numpy_helper.from_array(value, key) for key, value in constants.items()],
    )  # fmt: skip
    _save(graph, repo / name / str(version) / "model.onnx")
    base = {
        "max_batch_size": 32,
        "inputs": [{"name": "images", "datatype": "FP32", "dims": [-1, 1, -1, -1]}],
        "instance_count": 1, "session": {"intra_op_threads": 1},
        "preprocessing": SEGMENTER_PREPROCESSING,
        "postprocessing": segmentation.postprocessing(),
        "parameters": {"task": segmentation.TASK, "stride": str(SEGMENTER_STRIDE), "max_boxes": "8",
                       "score_threshold": "0.3", "optional_outputs": segmentation.LOGITS},
    }  # fmt: skip
    return _entry(repo, name, {**base, **config}, labels=[segmentation.BACKGROUND, *map(str, range(10))])


def segmenter_reference(images: np.ndarray) -> dict[str, np.ndarray]:
    """What write_segmenter answers for images [N,1,H,W] (pixels in [0, 1])."""
    n, _, height, width = images.shape
    tenfold = images.astype(np.float32) * np.float32(10)
    ceiled = np.ceil(tenfold)
    boxes = np.zeros((n, 8, 4), np.float32)
    boxes[:, 0] = (0, 0, width, height)
    scores = np.zeros((n, 8), np.float32)
    scores[:, 0] = 0.9
    classes = np.zeros((n, 8), np.int64)
    classes[:, 0] = ceiled.reshape(n, -1).max(axis=1)
    logits = -((tenfold - np.arange(11, dtype=np.float32).reshape(1, 11, 1, 1)) ** 2)
    return {
        "boxes": boxes,
        "scores": scores,
        "classes": classes,
        "mask": ceiled[:, 0].astype(np.uint8),
        "logits": logits,
    }


# -- real architectures from the onnx package -------------------------------------------------------------------------
# onnx ships ImageNet CNNs (Caffe2 conversions, opset 9, input [1,3,224,224]) with every weight made in the graph by
# ConstantOfShape from one value, so any input gives the same answer. zoo_model swaps those nodes for random weights
# (He-scaled, seeded), which makes the answers depend on the input and so worth comparing.

ZOO = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO_INPUT = (3, 224, 224)  # per item, NCHW


def zoo_model(architecture: str, seed: int = 0, batch_axis: bool = False) -> onnx.ModelProto:
    """`architecture`: a file of ZOO without its prefix (squeezenet, inception_v1, densenet121, ...). `batch_axis`:
    the graph's first input and output dimension becomes symbolic ('N'), as an exporter with dynamic axes writes."""
    model = onnx.load(str(ZOO / f"light_{architecture}.onnx"))
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in constants:
            nodes.append(node)
            continue
        shape = numpy_helper.to_array(constants[node.input[0]]).astype(int)
        if len(shape) >= 2:  # conv and gemm weights
            values = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
        else:  # biases and batch-norm parameters (variances among them: positive)
            values = rng.uniform(0.5, 1.5, shape)
        weights.append(numpy_helper.from_array(values.astype(np.float32), node.output[0]))
    used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend([*kept, *weights])
    inputs = [i for i in graph.input if i.name not in constants and i.name not in {w.name for w in weights}]
    del graph.input[:]  # IR 3 lists initializers as inputs too; IR 4 lets them be constants alone
    graph.input.extend(inputs)
    del graph.value_info[:]
    if batch_axis:
        for tensor in (*graph.input, *graph.output):
            tensor.type.tensor_type.shape.dim[0].dim_param = "N"
    model.ir_version = max(model.ir_version, 4)
    onnx.checker.check_model(model)
    return model


def write_zoo_model(
    repo: Path, name: str, architecture: str, *, batch_axis: bool = False, config: dict[str, Any] | None = None
) -> Path:
    """`name`/1/model.onnx from zoo_model; config.json only when `config` is given. Returns the model file."""
    path = repo / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(zoo_model(architecture, batch_axis=batch_axis), str(path))
    if config is not None:
        (repo / name / "config.json").write_text(json.dumps(config, indent=2))
    return path


def write_planes(repo: Path, name: str = "planes", **config: Any) -> Path:
    """x FP32 [N,2,3,W] -> y = x * 2 [N,2,3,W] and total = sum per item [N]: a variable dimension for reshape
    tests, and a per-item scalar output."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["y"]),
            helper.make_node("ReduceSum", ["x", "all_axes"], ["total"], keepdims=0),
        ],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, "W"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3, "W"]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"]),
        ],
        [
            numpy_helper.from_array(np.array(2, np.float32), "two"),
            numpy_helper.from_array(np.array([1, 2, 3], np.int64), "all_axes"),
        ],
    )
    _save(graph, repo / name / "1" / "model.onnx")
    return _entry(repo, name, {"max_batch_size": 8, **config})
