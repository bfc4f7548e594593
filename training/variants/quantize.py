"""Static INT8 quantisation in QDQ format by ONNX Runtime's own tooling: `quant_pre_process` (shape inference and
graph clean-up, as ORT recommends before quantising), then `quantize_static` calibrated on images the caller chose;
and FP16 conversion by onnxconverter-common's float16 tool, inputs and outputs kept FP32. No quantiser of our own:
this module only feeds the tools and hands back the bytes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

CALIBRATION_BATCH = 32


class ArrayReader(CalibrationDataReader):  # type: ignore[misc]  # ORT ships no type hints
    """Calibration batches of `images` [N, ...] for the graph input `input_name`, CALIBRATION_BATCH at a time."""

    def __init__(self, input_name: str, images: npt.NDArray[np.float32], batch: int = CALIBRATION_BATCH) -> None:
        if len(images) == 0:
            raise ValueError("calibration needs at least one image")
        self._batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])
        self._input_name = input_name

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_int8(model_bytes: bytes, input_name: str, calibration: npt.NDArray[np.float32],
                  per_channel: bool = True) -> bytes:  # fmt: skip
    """The model statically quantised (INT8 weights and activations, QDQ nodes), every output kept by name."""
    with tempfile.TemporaryDirectory() as tmp:
        source, prepared, quantized = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model_bytes)
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared), str(quantized), ArrayReader(input_name, calibration), quant_format=QuantFormat.QDQ,
            per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        return quantized.read_bytes()


def convert_fp16(model_bytes: bytes) -> bytes:
    """The model with FP16 weights and arithmetic for the CUDA provider; its inputs and outputs stay FP32 (Cast
    nodes at the edges), so clients send and get what they did."""
    from onnxconverter_common import float16  # the train extra's; imported here so INT8 needs only onnxruntime

    model = onnx.load_from_string(model_bytes)
    _outputs_behind_identity(model.graph)
    converted = float16.convert_float_to_float16(model, keep_io_types=True)
    return bytes(converted.SerializeToString())


def _outputs_behind_identity(graph: onnx.GraphProto) -> None:
    """Each graph output becomes an Identity of the tensor it named. The converter casts a kept FP32 output where it
    is produced, so an output that other nodes also read (a classifier's feature maps) reached them as FP32 and
    the graph did not type-check; behind an Identity only the Identity's own output is cast."""
    for output in graph.output:
        if not any(output.name in node.output for node in graph.node):
            continue  # a graph input or initialiser passed through: nothing to cast
        inner = f"{output.name}.body"
        for node in graph.node:
            node.input[:] = [inner if name == output.name else name for name in node.input]
            node.output[:] = [inner if name == output.name else name for name in node.output]
        graph.node.append(onnx.helper.make_node("Identity", [inner], [output.name], name=f"{output.name}.identity"))
