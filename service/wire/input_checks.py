"""The rules a request's inputs are checked by before anything is decoded or allocated (decode.py applies them):
datatype, rank, dims and batch bounds, shared-memory sizes, encoded-image shapes, a padding model's stride, and the
parameters that would change what a request means. Each refusal is an InvalidInput that names the tensor and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import wire
from cnnserve.contracts.datatypes import DataTypeInfo
from cnnserve.service.errors import InvalidInput
from cnnserve.service.types import ModelSpec, TensorSpec
from cnnserve.service.wire.requested import parameter_value
from cnnserve.service.wire.shared_memory import TensorRef

MAX_ELEMENTS = 2**31
"""Most elements one tensor may declare; a larger shape is refused before anything is allocated."""


def check_parameters(parameters: Mapping[str, pb.InferParameter]) -> None:
    """Triton's client parameters (priority, timeout, binary_data_output, ...) and unknown ones are ignored; only
    the sequence parameters would change what a request means, and no model here keeps state between requests."""
    for key in ("sequence_id", "sequence_start"):
        # `in` first: indexing a protobuf map inserts the key into the caller's message.
        if key in parameters and parameter_value(parameters[key]):
            raise InvalidInput(f"parameter {key!r}: model is not stateful: sequence batching is not supported")


def both_forms(name: str, model: str) -> InvalidInput:
    """Triton's words (server src/grpc/infer_handler.cc), which its example clients look for."""
    return InvalidInput(
        f"contents field must not be specified when using raw_input_contents for '{name}' for model '{model}'; "
        "a request sends every input in raw_input_contents or every input in contents"
    )


def check_in_region(name: str, ref: TensorRef, tensor: pb.ModelInferRequest.InferInputTensor, info: DataTypeInfo,
                     shape: tuple[int, ...], count: int) -> None:  # fmt: skip
    """An input in shared memory carries no data of its own, and declares exactly the bytes its shape takes (BYTES:
    at least a length per element; unpacking checks the rest)."""
    if tensor.contents.ListFields():
        raise InvalidInput(f"input {name!r}: data in both a shared memory region and contents; a tensor uses one form")
    if info.name == "BYTES":
        needed, rule, fits = count * wire.LENGTH.size, "needs at least", ref.byte_size >= count * wire.LENGTH.size
    else:
        needed, rule, fits = count * info.numpy.itemsize, "needs", ref.byte_size == count * info.numpy.itemsize
    if not fits:
        raise InvalidInput(
            f"input {name!r}: shared_memory_byte_size is {ref.byte_size} (region {ref.region.name!r}, offset "
            f"{ref.offset}), but {info.name} {shape_text(shape)} {rule} {needed}"
        )


def with_unit_axis(shape: tuple[int, ...], expected: TensorSpec, max_batch_size: int) -> tuple[int, ...]:
    """A per-item scalar (graph [b]) is declared to clients as [b, 1], dims [1] with reshape [] (describe.py), and
    clients that follow the metadata (perf_analyzer) send that; the graph's own [b] stays accepted too, given its
    unit axis here. The served model reshapes to the graph's shape (registry/served.py)."""
    model = expected.model_shape
    scalar = model is not None and len(model) == (1 if max_batch_size > 0 else 0)
    if scalar and len(shape) == len(expected.shape) - 1:
        return (*shape, 1)
    return shape


def check_tensor(name: str, datatype: str, shape: tuple[int, ...], expected: TensorSpec, max_batch_size: int) -> int:
    """Datatype, rank, dims and batch bounds; returns the element count (capped at MAX_ELEMENTS). Runs per input
    of every request, hence one pass over the dims and no helper objects on the accepting path."""
    wanted = expected.shape
    rule = ""
    if datatype != expected.datatype:
        rule = "datatype differs"
    elif len(shape) != len(wanted):
        rule = "rank differs"
    elif shape and min(shape) < 0:
        rule = "negative dimension"
    elif any(want >= 0 and got != want for got, want in zip(shape, wanted, strict=True)):
        rule = "a fixed dimension differs"
    elif max_batch_size > 0 and shape[0] == 0:
        rule = "empty batch"
    elif max_batch_size > 0 and shape[0] > max_batch_size:
        rule = f"batch over max_batch_size {max_batch_size}"
    else:
        extent = 1
        for dim in shape:
            extent *= dim or 1  # a zero dim empties the tensor, but numpy still sizes the others
            if extent > MAX_ELEMENTS:
                rule = f"more than {MAX_ELEMENTS} elements"
                break
        else:
            return math.prod(shape)
    raise InvalidInput(
        f"input {name!r}: expected {expected.datatype} {shape_text(wanted)}, "
        f"got {datatype} {shape_text(shape)} ({rule})"
    )


def check_stride(name: str, shape: tuple[int, ...], spec: ModelSpec) -> None:
    """A padding model takes any height and width that are multiples of its stride; files are padded to them, a
    tensor must come so."""
    assert spec.image_input is not None
    recipe = spec.image_input.preprocessing
    height, width = shape[-2:] if recipe.layout == "NCHW" else shape[-3:-1]
    if height % recipe.stride or width % recipe.stride:
        raise InvalidInput(
            f"input {name!r}: height and width must be multiples of the stride {recipe.stride}, got {width}x{height} "
            "(files sent for this input are padded to it)"
        )


def is_encoded_image(tensor: pb.ModelInferRequest.InferInputTensor, expected: TensorSpec, spec: ModelSpec) -> bool:
    image = spec.image_input
    return image is not None and image.name == tensor.name and tensor.datatype == "BYTES" != expected.datatype


def image_item_elements(spec: ModelSpec) -> int:
    assert spec.image_input is not None
    # A padded recipe's height and width (-1) are each file's own, known once decoded; max_image_pixels bounds them.
    return math.prod(max(dim, 1) for dim in spec.image_input.preprocessing.item_shape)


def check_files(name: str, shape: tuple[int, ...], max_batch_size: int) -> tuple[int, ...]:
    """Encoded images travel as BYTES [n] or [n, 1] (one file per item); a model that does not batch takes [1]."""
    n = shape[0] if shape else -1
    well_formed = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    largest = max_batch_size if max_batch_size > 0 else 1
    if not well_formed or not 1 <= n <= largest:
        expected = f"[n] or [n,1] with n in 1..{largest}" if max_batch_size > 0 else "[1]"
        raise InvalidInput(
            f"input {name!r}: encoded images travel as BYTES {expected}, one file each; got {shape_text(shape)}"
        )
    return shape


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(dim) for dim in shape) + "]"
