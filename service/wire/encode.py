"""Replies on the wire: model outputs into a ModelInferResponse (always raw little-endian bytes, as tritonclient reads
numeric outputs only from raw bytes) or into the shared memory regions a request names, and the classification
extension's top-k strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import wire
from cnnserve.contracts.datatypes import datatype_info
from cnnserve.service.errors import InferenceFailed
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import Array, RequestedOutput, unknown_output
from cnnserve.service.wire.shared_memory import Placement, RegionUse


class OutputTensor(NamedTuple):
    """One tensor of a reply, as either door writes it: the wire datatype (BYTES for classification and PNG)."""

    name: str
    datatype: str
    array: Array
    placement: Placement | None = None
    """Set once the tensor was written to a shared memory region: the reply then carries its name, datatype, shape
    and where it lies, but no data."""


def select_outputs(
    spec: ModelSpec, outputs: Mapping[str, Array], requested: Sequence[RequestedOutput], labels: Sequence[str]
) -> list[OutputTensor]:
    """One tensor per requested output, in the order asked, classification applied. `labels` describe
    spec.label_output (any output when that is unset)."""
    declared = spec.outputs_by_name
    selected: list[OutputTensor] = []
    for want in requested or [RequestedOutput(tensor.name) for tensor in spec.outputs]:
        tensor = declared.get(want.name)
        if tensor is None:
            raise unknown_output(want.name, spec)
        array = outputs.get(want.name)
        if array is None:
            raise InferenceFailed(f"model {spec.name!r} produced no output {want.name!r}")
        datatype = tensor.datatype
        if want.classification_k > 0:
            described = spec.label_output is None or spec.label_output == want.name
            array = classify(array, want.classification_k, labels if described else (), spec.max_batch_size > 0)
            datatype = "BYTES"
        elif want.png:
            datatype = "BYTES"
        selected.append(OutputTensor(want.name, datatype, array))
    return selected


def encode_response(
    request: pb.ModelInferRequest,
    spec: ModelSpec,
    model_version: str,
    outputs: Mapping[str, Array],
    requested: Sequence[RequestedOutput],
    labels: Sequence[str],
) -> pb.ModelInferResponse:
    """The gRPC reply to `request` from the model's outputs (select_outputs, then grpc_reply)."""
    return grpc_reply(request.id, spec.name, model_version, select_outputs(spec, outputs, requested, labels))


def grpc_reply(
    request_id: str, model_name: str, model_version: str, tensors: Sequence[OutputTensor]
) -> pb.ModelInferResponse:
    """Data always in raw_output_contents: tritonclient reads numeric outputs only from raw bytes."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    for tensor in tensors:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=np.shape(tensor.array))
        if tensor.placement is None:
            response.raw_output_contents.append(tensor_to_raw(tensor.array, tensor.datatype))
        else:  # an empty entry, as Triton sends: clients find each output's raw bytes by its position
            response.raw_output_contents.append(b"")  # Triton's reply for an output in a region: no data, no parameters
    return response


def into_shared_memory(tensors: list[OutputTensor], shared: RegionUse) -> list[OutputTensor]:
    """The outputs the request asked for in shared memory written to their regions (each right after its object's
    size is checked), and marked so that the reply carries no data for them."""
    placed = []
    for tensor in tensors:
        ref = shared.outputs.get(tensor.name)
        if ref is not None:
            data = _raw_view(tensor.array, tensor.datatype)
            tensor = tensor._replace(placement=shared.write(ref, data, f"output {tensor.name!r}"))
        placed.append(tensor)
    return placed


def tensor_to_raw(array: Array, datatype: str) -> bytes:
    """The protocol's raw form: row-major little-endian bytes; BYTES as a 4-byte LE length before each element."""
    info = datatype_info(datatype)
    if info.name == "BYTES":
        return _bytes_to_raw(np.asarray(array, dtype=object).flat)
    return _contiguous(array, info.numpy, info.name).tobytes()


def _raw_view(array: Array, datatype: str) -> memoryview:
    """The raw form as a view of the array's own bytes where it already has them (no copy before the region's)."""
    info = datatype_info(datatype)
    if info.name == "BYTES":
        return memoryview(tensor_to_raw(array, datatype))
    return memoryview(_contiguous(array, info.numpy, info.name)).cast("B")  # type: ignore[arg-type]  # numpy's stubs


def _contiguous(array: Array, dtype: np.dtype[Any], name: str) -> Array:
    contiguous = np.asarray(array)
    if contiguous.dtype != dtype or not contiguous.flags.c_contiguous:
        try:
            contiguous = contiguous.astype(dtype, order="C", casting="same_kind")
        except TypeError:
            raise InferenceFailed(f"a {contiguous.dtype} tensor cannot be sent as {name}") from None
    return contiguous


def classify(scores: Array, k: int, labels: Sequence[str], batched: bool) -> Array:
    """Top-k per item as b"score:index:label" (b"score:index" past the labels), best first, as Triton writes them.

    scores: [batch, classes] when batched, else [classes]; returns an object array [batch, k] or [k], with k clamped
    to the number of classes. Ties keep the lower index first.
    """
    array = np.asarray(scores)
    rows = array if batched else array[np.newaxis]
    if rows.ndim != 2 or array.dtype.kind not in "iuf":
        raise InferenceFailed(
            f"classification needs numeric scores of one dimension per item, got {array.dtype} {list(array.shape)}"
        )
    values = rows.astype(np.float64)
    order = np.argsort(-values, axis=1, kind="stable")[:, : min(k, rows.shape[1])]
    result = np.empty(order.shape, dtype=object)
    for row, col in np.ndindex(order.shape):
        index = int(order[row, col])
        result[row, col] = wire.format_class(float(values[row, index]), index, labels)
    return result if batched else result[0]


def _bytes_to_raw(items: Iterable[Any]) -> bytes:
    # ORT hands back str; tritonclient sends any other object as its str() too
    return wire.pack_bytes(item if isinstance(item, bytes) else str(item).encode() for item in items)
