"""numpy arrays <-> the protocol's inference messages, in the contracts' datatypes and BYTES codec (raw contents both
ways, as the server reads and writes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client import images
from cnnserve.contracts import wire
from cnnserve.contracts.datatypes import DATATYPES as _TABLE

# Fixed-size datatypes as numpy scalar types; BYTES (object arrays) is built and read separately.
NUMPY_TYPES = {name: info.numpy.type for name, info in _TABLE.items() if info.numpy.kind != "O"}
DATATYPES = {np.dtype(t): name for name, t in NUMPY_TYPES.items()}

PNG_PARAMETERS = {wire.OUTPUT_FORMAT_PARAMETER: wire.PNG}
"""Request parameters that ask for a model's image output (or mask, or heatmap) as PNG files, encoded by the server."""


def infer_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] = (),
    version: str = "",
    parameters: Mapping[str, str | float] | None = None,
) -> pb.ModelInferRequest:
    """numpy arrays -> a ModelInferRequest with raw contents (object arrays of bytes travel as BYTES); outputs names
    the ones wanted (all when empty); parameters are request parameters such as output_format (strings) or
    truncation (numbers)."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for key, value in (parameters or {}).items():
        if isinstance(value, str):
            request.parameters[key].string_param = value
        else:
            request.parameters[key].double_param = float(value)
    for name, values in inputs.items():
        array = np.ascontiguousarray(values)
        if array.dtype == object:
            request.inputs.add(name=name, datatype="BYTES", shape=list(array.shape))
            request.raw_input_contents.append(wire.pack_bytes(array.flat))
            continue
        datatype = DATATYPES.get(array.dtype)
        if datatype is None:
            raise ValueError(f"input '{name}': numpy dtype {array.dtype} has no protocol datatype")
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def infer_outputs(reply: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """A ModelInferResponse -> output name -> array; BYTES outputs become object arrays of bytes."""
    result: dict[str, np.ndarray] = {}
    for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
        shape = tuple(out.shape)
        if out.datatype == "BYTES":
            items = np.empty(int(np.prod(shape)), dtype=object)
            items[:] = wire.unpack_bytes(raw, items.size)
            result[out.name] = items.reshape(shape)
        elif out.datatype in NUMPY_TYPES:
            result[out.name] = np.frombuffer(raw, dtype=NUMPY_TYPES[out.datatype]).reshape(shape)
    return result


def first_output(reply: pb.ModelInferResponse) -> np.ndarray:
    """The reply's first output: a model's only one, or the one a request asked for."""
    return next(iter(infer_outputs(reply).values()))


def image_files(pictures: Sequence[images.ImageLike]) -> np.ndarray:
    """BYTES [n]: each picture as an image file (paths and bytes as they are, pixels and Pillow images as PNG), for an
    input the server decodes. Reads files: a plan asks for it as Work."""
    files = np.empty(len(pictures), dtype=object)
    files[:] = [images.encoded(picture) for picture in pictures]
    return files
