"""What a request asks to get back: its requested outputs (classification, PNG files) and the parameter that shapes
them (PNG files, contracts/wire.py), and which outputs the model must therefore compute.

Rules: a request naming no outputs gets every output but the model's optional ones (config parameter
`optional_outputs`), in graph order; one naming some gets exactly those, and the model computes only those
(runtime.py prunes its graph to them). Refusals are InvalidInput naming the output or parameter and the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import wire
from cnnserve.service.errors import InvalidInput
from cnnserve.service.types import ModelSpec, TensorSpec

OUTPUT_FORMAT = wire.OUTPUT_FORMAT_PARAMETER


class RequestedOutput(NamedTuple):  # a tuple: one or more are built per request, a frozen dataclass costs 4x
    name: str
    classification_k: int = 0
    """0: the tensor itself; k > 0: its top k per item as BYTES "score:index:label" (classification extension)."""
    png: bool = False
    """The output sent as BYTES [n] of PNG files (the request asked for PNG files, contracts/wire.py)."""


class WantedOutputs(NamedTuple):
    outputs: list[RequestedOutput]
    """In the order asked; when none was asked, every output but the optional ones, in graph order."""
    compute: frozenset[str] | None
    """What the model must compute; None: all of its outputs (the path of a request that names none)."""


def requested_outputs(
    outputs: Sequence[pb.ModelInferRequest.InferRequestedOutputTensor],
    parameters: Mapping[str, pb.InferParameter],
    spec: ModelSpec,
    png_output: str | None,
) -> WantedOutputs:
    """`png_output`: the output that a request for PNG files gets them for (the model's kind says), or None."""
    png = bool(parameters) and wants_png(parameters, spec, png_output)
    png_name = png_output if png else None
    declared = spec.outputs_by_name
    result: list[RequestedOutput] = []
    for output in outputs:
        tensor = declared.get(output.name)
        if tensor is None:
            raise unknown_output(output.name, spec)
        if any(seen.name == output.name for seen in result):
            raise InvalidInput(f"output {output.name!r}: requested twice")
        k = _classification_k(output, tensor, spec.max_batch_size)  # never an image output: those are 3-D per item
        result.append(RequestedOutput(output.name, k, png=output.name == png_name))
    if result:
        compute = frozenset(want.name for want in result)
        everything = len(compute) == len(spec.outputs)
        return WantedOutputs(result, None if everything else compute)
    defaults = [RequestedOutput(tensor.name, png=tensor.name == png_name) for tensor in spec.default_outputs]
    return WantedOutputs(defaults, spec.default_compute)


def png_files_asked(parameters: Mapping[str, pb.InferParameter]) -> bool:
    """Whether the request asks for PNG files (contracts/wire.py); InvalidInput for a value that is neither."""
    if OUTPUT_FORMAT not in parameters:  # `in` first: indexing a protobuf map inserts the key
        return False
    value = parameter_value(parameters[OUTPUT_FORMAT])
    if value not in wire.OUTPUT_FORMATS:
        raise InvalidInput(
            f"parameter {OUTPUT_FORMAT!r} must be {' or '.join(map(_quoted, wire.OUTPUT_FORMATS))}, got {value!r}"
        )
    return value == wire.PNG


def _quoted(text: str) -> str:
    return f'"{text}"'


def wants_png(parameters: Mapping[str, pb.InferParameter], spec: ModelSpec, png_output: str | None) -> bool:
    png = png_files_asked(parameters)
    if png and png_output is None:
        raise InvalidInput(
            f"parameter {OUTPUT_FORMAT!r}: model {spec.name!r} has no image output to send as PNG files (its config's "
            "postprocessing.output must name a [n, 1|3|4, h, w] float output, or its kind make pictures of its own)"
        )
    return png


def _classification_k(
    output: pb.ModelInferRequest.InferRequestedOutputTensor, tensor: TensorSpec, max_batch_size: int
) -> int:
    if wire.CLASSIFICATION_PARAMETER not in output.parameters:
        return 0
    parameter = output.parameters[wire.CLASSIFICATION_PARAMETER]
    value = parameter_value(parameter)
    integral = parameter.WhichOneof("parameter_choice") in ("int64_param", "uint64_param")
    if not integral or not isinstance(value, int) or value <= 0:
        raise InvalidInput(
            f"output {output.name!r}: parameter 'classification' must be a positive integer, got {value!r}"
        )
    item_shape = tensor.shape[1:] if max_batch_size > 0 else tensor.shape
    if len(item_shape) != 1 or tensor.datatype in ("BYTES", "BOOL"):
        raise InvalidInput(
            f"output {output.name!r}: classification needs a numeric tensor of one dimension per "
            f"item, this one is {tensor.datatype} [{','.join(str(d) for d in tensor.shape)}]"
        )
    return value


def parameter_value(parameter: pb.InferParameter) -> bool | int | str | float | None:
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)  # type: ignore[no-any-return]


def unknown_output(name: str, spec: ModelSpec) -> InvalidInput:
    """Triton's words first (core src/model.cc), which clients match; then what the model offers."""
    return InvalidInput(
        f"unexpected inference output '{name}' for model '{spec.name}'; it offers {tensor_names(spec.outputs)}"
    )


def tensor_names(tensors: Iterable[TensorSpec]) -> str:
    return ", ".join(repr(tensor.name) for tensor in tensors) or "none"
