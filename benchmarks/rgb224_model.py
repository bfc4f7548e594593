"""Writes `rgb224`, a stand-in for an ImageNet-sized classifier input (FP32 [N,3,224,224] -> logits [N,10]:
global average pool, then a matmul), into a model repository, so `cnnserve bench --protocol http` can measure the
REST door on 600 KB tensors where the digits CNN sends 1 KB. The graph is cheap on purpose: the transport is timed.

    python benchmarks/rgb224_model.py MODEL_REPOSITORY     (needs the `onnx` package: the train extra)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write(repo: Path, name: str = "rgb224") -> Path:
    weight = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),  # [N,3,1,1]
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),  # [N,3]
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),  # [N,10]
        ],
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(version / "model.onnx"))
    (repo / name / "config.json").write_text(json.dumps({"name": name, "max_batch_size": 32}, indent=2))
    return version / "model.onnx"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(write(Path(sys.argv[1])))
