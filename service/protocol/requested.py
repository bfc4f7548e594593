"""What a request asks to get back: its requested outputs (classification, PNG) and the parameters that shape them
(`output_format`, `overlay`), and which outputs the model must therefore compute.

Rules: a request naming no outputs gets every output but the model's optional ones (config parameter
`optional_outputs`), in graph order; one naming some gets exactly those, and the model computes only those
(runtime.py prunes its graph to them). Refusals are InvalidInput naming the output or parameter and the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import imaging
from cnnserve.service.errors import InvalidInput
from cnnserve.service.types import ModelSpec, TensorSpec


class RequestedOutput(NamedTuple):  # a tuple: one or more are built per request, a frozen dataclass costs 4x
    name: str
    classification_k: int = 0
    """0: the tensor itself; k > 0: its top k per item as BYTES "score:index:label" (classification extension)."""
    png: bool = False
    """The model's image output or mask sent as BYTES [n] of PNG files (request parameter output_format "png")."""


class WantedOutputs(NamedTuple):
    outputs: list[RequestedOutput]
    """In the order asked; when none was asked, every output but the optional ones, in graph order."""
    compute: frozenset[str] | None
    """What the model must compute; None: all of its outputs (the path of a request that names none)."""
    overlay: float
    """The palette's weight over the request's image (parameter `overlay`); 0: no overlay."""


def requested_outputs(
    outputs: Sequence[pb.ModelInferRequest.InferRequestedOutputTensor],
    parameters: Mapping[str, pb.InferParameter],
    spec: ModelSpec,
    *,
    sent_files: bool = False,
) -> WantedOutputs:
    """`sent_files`: the request's image input came as encoded files (something an overlay can blend over)."""
    png = bool(parameters) and _wants_png(parameters, spec)
    png_output = spec.png_output if png else None
    declared = spec.outputs_by_name
    result: list[RequestedOutput] = []
    for output in outputs:
        tensor = declared.get(output.name)
        if tensor is None:
            raise unknown_output(output.name, spec)
        if any(seen.name == output.name for seen in result):
            raise InvalidInput(f"output {output.name!r}: requested twice")
        k = _classification_k(output, tensor, spec.max_batch_size)  # never an image output: those are 3-D per item
        result.append(RequestedOutput(output.name, k, png=output.name == png_output))
    if result:
        compute = frozenset(want.name for want in result)
        everything = len(compute) == len(spec.outputs)
        wanted = WantedOutputs(result, None if everything else compute, 0.0)
    else:
        defaults = [RequestedOutput(tensor.name, png=tensor.name == png_output) for tensor in spec.default_outputs]
        wanted = WantedOutputs(defaults, spec.default_compute, 0.0)
    if parameters and "overlay" in parameters:
        return wanted._replace(overlay=_overlay(parameters["overlay"], spec, wanted.outputs, sent_files))
    return wanted


def _wants_png(parameters: Mapping[str, pb.InferParameter], spec: ModelSpec) -> bool:
    if "output_format" not in parameters:
        return False
    value = parameter_value(parameters["output_format"])
    if value not in ("png", "tensor"):
        raise InvalidInput(f'parameter \'output_format\' must be "png" or "tensor", got {value!r}')
    if value == "png" and spec.png_output is None:
        raise InvalidInput(
            f"parameter 'output_format': model {spec.name!r} has no image output or mask to send as PNG "
            "(its config's postprocessing.output must name a [n, 1|3|4, h, w] float output, or postprocessing.mask "
            "an integer [n, h, w] one)"
        )
    return value == "png"


def _overlay(parameter: pb.InferParameter, spec: ModelSpec, wanted: Sequence[RequestedOutput], sent_files: bool
             ) -> float:  # fmt: skip
    """true: the default weight (imaging.OVERLAY_ALPHA); a number in (0, 1]: that weight; false: none."""
    kind = parameter.WhichOneof("parameter_choice")
    value = parameter_value(parameter)
    if kind == "bool_param":
        alpha = imaging.OVERLAY_ALPHA if value else 0.0
    elif kind in ("double_param", "int64_param", "uint64_param") and 0 < float(value) <= 1:  # type: ignore[arg-type]
        alpha = float(value)  # type: ignore[arg-type]
    else:
        raise InvalidInput(
            f"parameter 'overlay' must be true, false or the palette's weight, a number in (0, 1]; got {value!r}"
        )
    if not alpha:
        return 0.0
    mask = spec.spatial.mask if spec.spatial is not None else None
    if mask is None:
        raise InvalidInput(f"parameter 'overlay': model {spec.name!r} has no mask output (postprocessing.mask)")
    if not any(want.name == mask and want.png for want in wanted):
        raise InvalidInput(
            f"parameter 'overlay' blends the mask PNG: ask for output {mask!r} with parameter output_format \"png\""
        )
    if not sent_files:
        raise InvalidInput("parameter 'overlay': nothing to blend over; send the image input as PNG/JPEG files (BYTES)")
    return alpha


def _classification_k(
    output: pb.ModelInferRequest.InferRequestedOutputTensor, tensor: TensorSpec, max_batch_size: int
) -> int:
    if "classification" not in output.parameters:
        return 0
    parameter = output.parameters["classification"]
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
    return InvalidInput(f"output {name!r}: unknown; model {spec.name!r} offers {tensor_names(spec.outputs)}")


def tensor_names(tensors: Iterable[TensorSpec]) -> str:
    return ", ".join(repr(tensor.name) for tensor in tensors) or "none"
