"""KServe v2 REST bodies <-> the gRPC request the shared path decodes: JSON tensors and the binary tensor extension.

A REST infer body becomes a ModelInferRequest holding only names, datatypes, shapes and parameters, plus one buffer
per input: binary tensors are views of the received body (no copy: decode.py makes numpy views of them), JSON data is
turned into numpy by orjson and one vectorised np.asarray, then viewed as bytes. Every rule about tensors (names,
datatypes, shapes, limits) is decode.py's, so both doors refuse the same things with the same words.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import wire
from cnnserve.contracts.datatypes import DATATYPES
from cnnserve.contracts.wire import pack_bytes
from cnnserve.service.errors import InvalidInput
from cnnserve.service.wire.decode import Buffer, RequestLimits
from cnnserve.service.wire.encode import OutputTensor, tensor_to_raw

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_ONLY_BINARY = frozenset({"FP16", "BF16"})  # no JSON form (the KServe v2 spec): binary only, both ways
_NON_FINITE = re.compile(rb"NaN|Infinity")


@dataclass
class RestRequest:
    request: pb.ModelInferRequest
    """Names, datatypes, shapes, parameters and requested outputs; no tensor data."""
    raw_inputs: list[Buffer]
    """One buffer per input, in order, in the protocol's raw form (decode.py reads them)."""
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    """Per requested output: whether its data goes in the binary part of the reply."""
    binary_default: bool = False
    """For outputs not named: request parameter binary_data_output."""
    parameters: dict[str, Any] = field(default_factory=dict)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def loads(data: bytes | memoryview, what: str) -> Any:
    """JSON, plus the bare tokens NaN, Infinity and -Infinity, which Triton reads and writes for floats that JSON
    cannot spell and tritonclient.http sends; orjson refuses them, so only a body it refused that holds one of
    them is read again by Python's json."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:  # also nesting past orjson's depth limit
        if _NON_FINITE.search(data) is None:
            raise InvalidInput(f"{what} is not valid JSON: {err}") from None
        try:
            document = json.loads(bytes(data))
            json.dumps(document, ensure_ascii=False).encode()  # lone surrogate escapes, which orjson refuses too
        except (ValueError, RecursionError) as again:  # UnicodeEncodeError is a ValueError
            raise InvalidInput(f"{what} is not valid JSON: {again}") from None
        return document


def parse_infer(
    body: bytes, header_length: str | None, model_name: str, model_version: str, limits: RequestLimits
) -> RestRequest:
    """The request in `body`; `header_length` is the Inference-Header-Content-Length header (binary extension)."""
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view) :]
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} must be a byte count, got {header_length!r}") from None
        if not 0 <= length <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes")
        header, binary = view[:length], view[length:]
    document = loads(header, "request body")
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object with 'inputs'")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("request body needs 'inputs': a non-empty list of tensors")
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version)
    request_id = document.get("id")
    if request_id is not None:
        request.id = _text(request_id, "'id'")
    parameters = _mapping(document.get("parameters"), "request 'parameters'")
    set_parameters(request.parameters, parameters, "request")
    _precheck_elements(inputs, limits)
    raw: list[Buffer] = []
    offset = 0
    for index, entry in enumerate(inputs):
        if not isinstance(entry, dict):
            raise InvalidInput(f"inputs[{index}] must be a JSON object")
        name = _text(entry.get("name"), f"inputs[{index}].name")
        datatype = _text(entry.get("datatype"), f"input {name!r}: datatype")
        shape = _shape(entry.get("shape"), name)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        params = _mapping(entry.get("parameters"), f"input {name!r}: parameters")
        size = params.pop("binary_data_size", None)
        set_parameters(tensor.parameters, params, f"input {name!r}")
        if wire.SHARED_MEMORY_REGION in params:  # its bytes are the region's (shared_memory.py): no raw entry
            if size is not None or "data" in entry:
                other = "data" if "data" in entry else "binary_data_size"
                raise InvalidInput(f"input {name!r}: both {other!r} and shared_memory_region; a tensor uses one form")
        elif size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"input {name!r}: binary_data_size must be a byte count, got {size!r}")
            if "data" in entry:
                raise InvalidInput(f"input {name!r}: both 'data' and binary_data_size; a tensor uses one form")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size} runs past the body's binary part "
                    f"({len(binary) - offset} bytes left)"
                )
            raw.append(binary[offset : offset + size])
            offset += size
        elif "data" in entry:
            raw.append(_json_tensor(name, datatype, shape, entry["data"]))
        else:
            raise InvalidInput(f"input {name!r}: needs 'data' or parameters.binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data follow the header that no input claims")
    parsed = RestRequest(request, raw, parameters=parameters)
    parsed.binary_default = parameters.get("binary_data_output") is True
    for index, entry in enumerate(_list(document.get("outputs"), "'outputs'")):
        if not isinstance(entry, dict):
            raise InvalidInput(f"outputs[{index}] must be a JSON object")
        name = _text(entry.get("name"), f"outputs[{index}].name")
        params = _mapping(entry.get("parameters"), f"output {name!r}: parameters")
        binary_data = params.pop("binary_data", None)
        if binary_data is True and wire.SHARED_MEMORY_REGION in params:
            raise InvalidInput(f"output {name!r}: both binary_data and shared_memory_region; an output goes one way")
        if binary_data is not None:
            parsed.binary_outputs[name] = binary_data is True
        set_parameters(request.outputs.add(name=name).parameters, params, f"output {name!r}")
    return parsed


def _precheck_elements(inputs: Sequence[Any], limits: RequestLimits) -> None:
    """The declared element count against the limit before any JSON data becomes an array (decode.py checks again
    with every other rule; this only keeps a huge declared shape from being built here first)."""
    total = 0
    for entry in inputs:
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape):
            total += math.prod(shape)
    if total > limits.max_elements:
        raise InvalidInput(
            f"request declares more than {limits.max_elements} tensor elements (max_elements_per_request); "
            "split it into smaller requests"
        )


def _json_tensor(name: str, datatype: str, shape: Sequence[int], data: Any) -> Buffer:
    """JSON `data` (flat or nested, row-major) as the raw form; the count is checked against the shape here, every
    other rule by decode.py."""
    info = DATATYPES.get(datatype)
    if info is None:  # decode.py names the expected datatype; any stand-in that fails the same way will do
        return b""
    if datatype in JSON_ONLY_BINARY:
        raise InvalidInput(f"input {name!r}: {datatype} has no JSON form; send it binary (binary_data_size)")
    if not isinstance(data, list):
        data = [data]
    needed = math.prod(shape)
    if info.name == "BYTES":
        items = _flatten(data)
        if len(items) != needed:
            raise InvalidInput(f"input {name!r}: data has {len(items)} elements, shape {list(shape)} needs {needed}")
        for item in items:
            if not isinstance(item, str):
                raise InvalidInput(f"input {name!r}: BYTES data are JSON strings, got {type(item).__name__}")
        return pack_bytes(item.encode() for item in items)
    try:
        array = np.asarray(data, dtype=info.numpy)  # one vectorised pass over orjson's lists
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {name!r}: data is not a regular (non-ragged) array of {datatype} values") from None
    if array.size != needed:
        raise InvalidInput(f"input {name!r}: data has {array.size} elements, shape {list(shape)} needs {needed}")
    if info.name == "BOOL" and array.size and not all(isinstance(v, bool) for v in _flatten(data)[:1]):
        raise InvalidInput(f"input {name!r}: BOOL data are JSON true/false")
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


# -- replies ---------------------------------------------------------------------------------------------------------


def encode_infer(
    parsed: RestRequest, model_name: str, model_version: str, tensors: Sequence[OutputTensor]
) -> tuple[bytes, int | None]:
    """(body, header length): the header length is set when some output went binary (Inference-Header-...)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in tensors:
        shape = list(np.shape(tensor.array))
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": shape}
        if tensor.placement is not None:  # written to a shared memory region: no data and, as Triton answers, no
            outputs.append(entry)  # parameters (its C++ client reads binary_data_size from any it finds)
            continue
        binary = parsed.binary_outputs.get(tensor.name, parsed.binary_default) or tensor.datatype in JSON_ONLY_BINARY
        data = None if binary else _json_data(tensor)
        if data is None:  # binary asked, or BYTES that are not text (a PNG)
            blob = tensor_to_raw(tensor.array, tensor.datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data
        outputs.append(entry)
    reply: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if parsed.request.id:
        reply["id"] = parsed.request.id
    header = orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _json_data(tensor: OutputTensor) -> Any:
    """Flat row-major data, written by orjson straight from the array; None when it has no JSON form."""
    if tensor.datatype == "BYTES":
        try:
            return [item.decode() if isinstance(item, bytes) else str(item) for item in np.asarray(tensor.array).flat]
        except UnicodeDecodeError:
            return None
    info = DATATYPES[tensor.datatype]
    flat = np.ascontiguousarray(tensor.array, dtype=info.numpy).reshape(-1)
    if info.numpy.kind == "f" and not np.isfinite(flat).all():
        # orjson writes NaN and Infinity as null; Triton writes the bare tokens, which tritonclient.http reads back
        return orjson.Fragment(json.dumps(flat.tolist(), separators=(",", ":")))
    return flat


# -- shared memory ---------------------------------------------------------------------------------------------------


def parse_register(document: Any) -> tuple[str, int, int]:
    """(key, offset, byte_size) of a system shared memory register body: {"key", "offset" (optional), "byte_size"}."""
    if not isinstance(document, dict):
        raise InvalidInput('a register request is a JSON object {"key": ..., "offset": ..., "byte_size": ...}')
    if "key" not in document:
        raise InvalidInput("Shared memory register request has no 'key' field")
    if "byte_size" not in document:
        raise InvalidInput("Shared memory register request has no 'byte_size' field")
    key = _text(document["key"], "'key'")
    offset, byte_size = document.get("offset", 0), document["byte_size"]
    for field_name, value in (("offset", offset), ("byte_size", byte_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidInput(f"{field_name!r} must be a byte count (an integer >= 0), got {value!r:.40}")
    return key, offset, byte_size


# -- small readers ---------------------------------------------------------------------------------------------------


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    return value


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise InvalidInput(f"input {name!r}: shape must be a list of integers, got {value!r:.80}")
    if any(not -(2**63) <= d < 2**63 for d in value):
        raise InvalidInput(f"input {name!r}: a dimension is out of range")
    return value


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return dict(value)


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{what} must be a list")
    return value


def set_parameters(target: Any, values: Mapping[str, Any], what: str) -> None:
    """JSON parameter values into InferParameter's oneof: booleans, integers, strings, numbers."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            parameter.int64_param = value
        elif isinstance(value, str):
            parameter.string_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            raise InvalidInput(f"{what} parameter {key!r} must be a boolean, integer, number or string")
