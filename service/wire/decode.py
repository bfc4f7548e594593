"""Requests off the wire: decode and validate ModelInferRequest inputs against a ModelSpec (replies: encode.py).

Pure functions: no gRPC server, no ONNX Runtime. Every refusal is an InvalidInput naming the tensor and the rule, raised
before a request reaches the batcher, so a bad request never fails its batch-mates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import wire
from cnnserve.contracts.datatypes import DATATYPES, DataTypeInfo, datatype_from_ort, triton_data_type
from cnnserve.service.errors import InvalidInput
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire import input_checks as checks
from cnnserve.service.wire.input_checks import MAX_ELEMENTS, shape_text
from cnnserve.service.wire.requested import (
    RequestedOutput,
    requested_outputs,
    tensor_names,
    unknown_output,
)
from cnnserve.service.wire.shared_memory import RegionUse, TensorRef

__all__ = [
    "BYTES_ELEMENT_COST",
    "DATATYPES",
    "MAX_ELEMENTS",
    "Buffer",
    "DataTypeInfo",
    "DecodedRequest",
    "RequestLimits",
    "RequestedOutput",
    "datatype_from_ort",
    "decode_inputs",
    "triton_data_type",
    "unknown_output",
]

LENGTH = wire.LENGTH

# Typed contents fields wider than the datatype they carry: INT8/16 travel in int32, UINT8/16 in uint32.
_WIRE_DTYPES: Mapping[str, np.dtype[Any]] = {"int_contents": np.dtype("<i4"), "uint_contents": np.dtype("<u4")}

Array = npt.NDArray[Any]
Buffer = bytes | memoryview
"""A raw tensor: bytes from a protobuf message, or a view of an HTTP body (the REST door's binary extension)."""


@dataclass(slots=True)
class DecodedRequest:
    inputs: dict[str, Array]
    """By input name, in the model's dtype and full shape (batch axis included). Raw inputs are read-only views
    of the request's bytes (no copy); BYTES inputs are object arrays of bytes."""
    batch_size: int
    """Items in the request (the inputs' shared first dimension); 0 when the model does not batch."""
    requested_outputs: list[RequestedOutput]
    """In the order asked; when none was asked, every output but the optional ones, in graph order."""
    encoded_images: dict[str, Array] = field(default_factory=dict)
    """By input name: PNG/JPEG files (object array [n] of bytes) sent for the model's image input, still to be
    decoded (execution/images.py); that input is then absent from `inputs`."""
    compute: frozenset[str] | None = None
    """The outputs the model must compute for this request; None: all of them."""


@dataclass(frozen=True)
class RequestLimits:
    """Server-wide bounds on one request, checked before its tensors are decoded (Settings' max_* fields)."""

    max_elements: int = 16 * 1024 * 1024
    """Tensor elements, summed over the request's inputs."""
    max_tensor_bytes: int = 256 * 1024 * 1024
    """Memory of the decoded inputs; each BYTES element counts its length plus BYTES_ELEMENT_COST."""


FileElements = Callable[[str, Array], int]
"""(input name, its files) -> the tensor elements they decode to, from their headers: a model kind's cost of files
whose size the recipe leaves open (padded images). Called before any pixel is decoded."""

_NONE_SHARED: dict[int, TensorRef] = {}

BYTES_ELEMENT_COST = 64
"""What one BYTES element costs beyond its length: the array's pointer and the bytes object (~41 bytes), and the
string ONNX Runtime is handed. Counted so a tensor of empty strings is charged for what it makes the server build."""


def decode_inputs(
    request: pb.ModelInferRequest,
    spec: ModelSpec,
    limits: RequestLimits = RequestLimits(),
    raw_inputs: Sequence[Buffer] | None = None,
    *,
    png_output: str | None = None,
    file_elements: FileElements | None = None,
    reserve: Callable[[int], None] | None = None,
    shared: RegionUse | None = None,
) -> DecodedRequest:
    """Validate a request against the model's spec and the limits, then turn its inputs into numpy arrays.

    Two passes: every input's name, datatype, shape and cost is checked before any of them is decoded.
    `raw_inputs` stands in for request.raw_input_contents: the REST door passes views of its body here, so its
    binary tensors become numpy views of the bytes received, with no copy into a protobuf message. `png_output` is
    the output a PNG reply applies to (requested.py); `file_elements` charges files by their headers. `reserve`
    is told the request's decoded bytes once they are costed and before anything is decoded (and again with its
    files at their decoded size): the server's byte budget, which may refuse. `shared` holds the inputs that lie in
    shared memory regions (shared_memory.py): they are costed from the sizes they declare, like raw inputs, and
    copied out of their regions only once the budget has them; `raw` then holds the other inputs only, in order."""
    parameters = request.parameters
    if parameters:
        checks.check_parameters(parameters)
    raw: Sequence[Buffer] = request.raw_input_contents if raw_inputs is None else raw_inputs
    in_regions = shared.inputs if shared is not None else _NONE_SHARED
    if raw and len(raw) != len(request.inputs) - len(in_regions):
        for index, tensor in enumerate(request.inputs):  # Triton names this mistake first, and its clients look for it
            if index not in in_regions and tensor.contents.ListFields():
                raise checks.both_forms(tensor.name, request.model_name)
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs) - len(in_regions)} inputs"
            f"{' not in shared memory' if in_regions else ''}: send one per input, in order"
        )
    raw_index = 0
    declared = spec.inputs_by_name
    batching = spec.max_batch_size > 0
    # name -> (index, shape, element count, raw bytes or None, region range or None); upb copies a raw entry on every
    # access: once here
    checked: dict[str, tuple[int, tuple[int, ...], int, Buffer | None, TensorRef | None]] = {}
    files: set[str] = set()  # inputs sent as encoded images
    batch: tuple[int, str] | None = None  # (size, the input that set it)
    elements = cost = 0
    padded = spec.padded_input
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        expected = declared.get(name)
        if expected is None:  # Triton's words first: clients match them
            raise InvalidInput(
                f"unexpected inference input '{name}' for model '{spec.name}'; it takes {tensor_names(spec.inputs)}"
            )
        if name in checked:
            raise InvalidInput(f"input {name!r}: given twice")
        encoded = checks.is_encoded_image(tensor, expected, spec)
        if encoded:
            shape = checks.check_files(name, tuple(tensor.shape), spec.max_batch_size)
            count = shape[0]
            files.add(name)
        else:
            shape = checks.with_unit_axis(tuple(tensor.shape), expected, spec.max_batch_size)
            count = checks.check_tensor(name, tensor.datatype, shape, expected, spec.max_batch_size)
            if name == padded:
                checks.check_stride(name, shape, spec)
        if batching:
            if batch is None:
                batch = (shape[0], name)
            elif shape[0] != batch[0]:
                raise InvalidInput(f"input {name!r}: batch size {shape[0]}, but input {batch[1]!r} has {batch[0]}")
        ref = in_regions.get(index) if in_regions else None
        if ref is None:
            data = raw[raw_index] if raw else None
            raw_index += 1
            if data is not None and tensor.contents.ListFields():
                raise checks.both_forms(name, request.model_name)
        else:
            data = None
            checks.check_in_region(
                name, ref, tensor, DATATYPES["BYTES" if encoded else expected.datatype], shape, count
            )
        item_elements = checks.image_item_elements(spec) if encoded else 1
        elements += count * item_elements
        if elements > limits.max_elements:
            raise InvalidInput(
                f"request declares more than {limits.max_elements} tensor elements (max_elements_per_request); "
                "split it into smaller requests"
            )
        payload = len(data) if data is not None else ref.byte_size if ref is not None else None
        cost += _decoded_bytes(DATATYPES["BYTES" if encoded else expected.datatype], count, payload, tensor.contents)
        if encoded:  # the decoded tensor, too
            cost += count * item_elements * DATATYPES[expected.datatype].numpy.itemsize
        if cost > limits.max_tensor_bytes:
            raise InvalidInput(
                f"request's inputs would take more than {limits.max_tensor_bytes} bytes decoded "
                "(max_request_tensor_bytes); split it into smaller requests"
            )
        checked[name] = (index, shape, count, data, ref)
    if len(checked) != len(declared):
        for needed in spec.inputs:
            if needed.name not in checked:
                raise InvalidInput(
                    f"input {needed.name!r}: missing; model {spec.name!r} needs {tensor_names(spec.inputs)}"
                )
    wanted = requested_outputs(request.outputs, parameters, spec, png_output)
    if reserve is not None:
        reserve(cost)
    inputs: dict[str, Array] = {}
    encoded_images: dict[str, Array] = {}
    for name, (index, shape, count, data, ref) in checked.items():
        info = DATATYPES["BYTES" if name in files else declared[name].datatype]
        if ref is not None:
            assert shared is not None
            data = shared.read(ref, f"input {name!r}")  # a copy, read right after the object's size is checked
        if data is not None:
            array = _from_raw(name, data, info, shape, count)
        else:
            array = _from_contents(name, request.inputs[index].contents, info, shape, count)
        if name in files:
            encoded_images[name] = array.reshape(count)
        else:
            inputs[name] = array
    if file_elements is not None:
        for name, files_of_input in encoded_images.items():
            info = DATATYPES[declared[name].datatype]
            decoded_bytes = _charge_files(name, file_elements(name, files_of_input), info, elements, cost, limits)
            if reserve is not None:
                reserve(cost + decoded_bytes)
    batch_size = batch[0] if batch is not None else 0
    return DecodedRequest(inputs, batch_size, wanted.outputs, encoded_images, wanted.compute)


def _charge_files(name: str, decoded_elements: int, info: DataTypeInfo, elements: int, cost: int,
                  limits: RequestLimits) -> int:  # fmt: skip
    """Files whose decoded size only their headers tell, against the request's limits, naming both; their bytes."""
    if elements + decoded_elements > limits.max_elements:
        raise InvalidInput(
            f"input {name!r}: the files decode to {decoded_elements} tensor elements, more than "
            f"max_elements_per_request {limits.max_elements} with the rest of the request; send smaller images or "
            "fewer per request"
        )
    decoded_bytes = decoded_elements * info.numpy.itemsize
    if cost + decoded_bytes > limits.max_tensor_bytes:
        raise InvalidInput(
            f"input {name!r}: the files decode to {decoded_bytes} bytes, more than max_request_tensor_bytes "
            f"{limits.max_tensor_bytes} with the rest of the request; send smaller images or fewer per request"
        )
    return decoded_bytes


def _decoded_bytes(info: DataTypeInfo, count: int, payload: int | None, contents: pb.InferTensorContents) -> int:
    """Memory the decoded tensor takes (an upper estimate), from sizes alone: nothing is decoded here. `payload`:
    the raw form's bytes (None: the data is in `contents`)."""
    if info.name != "BYTES":
        wire = _WIRE_DTYPES.get(info.contents_field or "", info.numpy) if payload is None else info.numpy
        return count * max(info.numpy.itemsize, wire.itemsize)
    return count * BYTES_ELEMENT_COST + (contents.ByteSize() if payload is None else payload)


# --- decoding ---------------------------------------------------------------------------------------------------


def _from_raw(name: str, data: Buffer, info: DataTypeInfo, shape: tuple[int, ...], count: int) -> Array:
    if info.name == "BYTES":
        return _bytes_from_raw(name, data, count).reshape(shape)
    needed = count * info.numpy.itemsize
    if len(data) != needed:
        raise InvalidInput(
            f"input {name!r}: raw data has {len(data)} bytes, {info.name} {shape_text(shape)} needs {needed}"
        )
    array = np.frombuffer(data, dtype=info.numpy).reshape(shape)  # a view of the request's bytes: no copy
    if info.name == "BOOL" and bool((array.view(np.uint8) > 1).any()):
        raise InvalidInput(f"input {name!r}: BOOL bytes must be 0 or 1")
    return array


def _bytes_from_raw(name: str, data: Buffer, count: int) -> Array:
    try:
        elements = wire.unpack_bytes(data, count)
    except ValueError as err:
        raise InvalidInput(f"input {name!r}: {err}") from None
    items = np.empty(count, dtype=object)
    items[:] = elements
    return items


def _from_contents(
    name: str, contents: pb.InferTensorContents, info: DataTypeInfo, shape: tuple[int, ...], count: int
) -> Array:
    present = [field.name for field, _ in contents.ListFields()]
    field = info.contents_field
    if field is None:
        if present or count:
            raise InvalidInput(f"input {name!r}: {info.name} travels only in raw_input_contents")
        return np.empty(shape, dtype=info.numpy)
    stray = [other for other in present if other != field]
    if stray:
        raise InvalidInput(f"input {name!r}: {info.name} data belongs in contents.{field}, got contents.{stray[0]}")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input {name!r}: contents.{field} has {len(values)} elements, "
            f"{info.name} {shape_text(shape)} needs {count}"
        )
    if info.name == "BYTES":
        items = np.empty(count, dtype=object)
        items[:] = list(values)
        return items.reshape(shape)
    wire = _WIRE_DTYPES.get(field, info.numpy)
    array = np.asarray(values, dtype=wire)
    if wire != info.numpy:
        limits = np.iinfo(info.numpy)
        if count and (int(array.min()) < limits.min or int(array.max()) > limits.max):
            raise InvalidInput(f"input {name!r}: a value lies outside {info.name}'s range")
        array = array.astype(info.numpy)
    return array.reshape(shape)
