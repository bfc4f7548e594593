"""training/variants/quantize.py on the session's dry-run digits classifier: ORT's QDQ tooling, outputs kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from cnnserve.training.data import load_dataset
from cnnserve.training.publish import latest_model
from cnnserve.training.variants.quantize import quantize_int8


def test_the_variant_is_qdq_keeps_every_output_and_answers_close_to_fp32(classifier_repo: Path) -> None:
    path = latest_model(classifier_repo, "digits_cnn")
    assert path is not None
    split = load_dataset("digits")
    calibration = split.train.images[:64].numpy()  # training side only
    int8 = quantize_int8(path.read_bytes(), "images", calibration)
    graph = onnx.load_from_string(int8).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32_graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == [o.name for o in fp32_graph.output]
    images = split.val.images[:32].numpy()
    fp32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], {"images": images})[0]
    got = ort.InferenceSession(int8, providers=["CPUExecutionProvider"]).run(["logits"], {"images": images})[0]
    assert np.mean(fp32.argmax(1) == got.argmax(1)) >= 0.9
