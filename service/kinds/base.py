"""The hooks a model kind fills in, and the plain tensor kind (this base class itself, for models from elsewhere).

A kind is chosen per model by its config (kinds/select.py) and built once per loaded version. The generic request
path (protocol/inference.py) names no kind; for each request it calls:

    plan = kind.plan(request, raw_inputs)                      the kind's request parameters, checked
    decoded = decode_inputs(plan.request, ...)                 tensors; files costed by kind.file_elements
    plan = kind.prepare(plan, decoded)                         e.g. latents truncated, pixels to keep
    files decoded to pixels (execution/images.py)
    extra = await kind.extra_outputs(plan, model, ...)         outputs the kind makes itself (plan.extra)
    outputs = await model.infer(...)                           the batcher, unless plan.model_outputs is False
    outputs = await kind.finish(plan, outputs, ...)            crop to the file's size, PNG files
    reply = the requested outputs + extra

At the REST door a file body is turned into a request by `file_request` and its answer into JSON or a PNG by
`file_answer`; a kind's own operations are `post_operations` (infer with parameters implied, e.g. /explain) and
`read_file` (files served beside the model, e.g. its atlas). Refusals are InvalidInput (or ModelNotFound for a
file that is not there), naming the parameter and the rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import wire
from cnnserve.contracts.segmentation import STRIDE_PARAMETER
from cnnserve.service.errors import InvalidInput, ModelLoadError, ModelNotFound
from cnnserve.service.execution import images as image_codec
from cnnserve.service.execution.images import DecodedImages, ImageWorkers
from cnnserve.service.registry.served import ServedModel
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec
from cnnserve.service.wire.decode import Array, Buffer, DecodedRequest, FileElements
from cnnserve.service.wire.encode import OutputTensor
from cnnserve.service.wire.requested import parameter_value

ParameterValue = bool | int | float | str
INFER = "infer"
"""The operation every model answers; kinds add theirs beside it (post_operations)."""
PNG_PARAMETERS: Mapping[str, ParameterValue] = {wire.OUTPUT_FORMAT_PARAMETER: wire.PNG}


class Plan(NamedTuple):
    """One request as its model's kind reads it, passed from hook to hook."""

    request: pb.ModelInferRequest
    """What the generic path decodes: the request, less any parameters and outputs the kind answers itself."""
    raw_inputs: Sequence[Buffer] | None
    keep_pixels: bool = False
    """Keep each file's pixels after decoding (something is drawn over them)."""
    model_outputs: bool = True
    """False: the request named only outputs the kind makes itself; the model is not run for it."""
    extra: bool = False
    """True: the kind makes outputs of its own for this request (extra_outputs is called)."""
    png_reply: str | None = None
    """The output whose first PNG file the REST door sends as the body when the client accepts image/png."""
    own: Any = None
    """The kind's parsed parameters."""


class FileRequest(NamedTuple):
    """What a file sent to the REST door asks the model for."""

    outputs: tuple[str, ...]
    parameters: Mapping[str, ParameterValue]


FileAnswer = dict[str, Any] | bytes | None
"""A JSON document's fields (the door adds model_name and model_version), a PNG file, or None: the outputs as the
door's ordinary infer reply."""


class Kind:
    """The plain tensor kind: tensors in, tensors out, files decoded by the config's recipe, an image output sent as
    PNG files on request. Subclasses override the hooks they need and call this class's for the rest."""

    name: ClassVar[str] = "tensor"
    """The config parameter `kind` (or `task`) that selects this kind."""
    tasks: ClassVar[tuple[str, ...]] = ()
    """Further values of the config parameter `task` that select it (the contracts' task names)."""
    precedence: ClassVar[int] = 0
    """For a config that names no known task: the kinds whose `describes` accepts it are tried highest first."""
    own_parameters: ClassVar[frozenset[str]] = frozenset()
    """Request parameters only this kind reads; another kind's model refuses them (registered as the class is
    defined, __init_subclass__)."""
    post_operations: ClassVar[Mapping[str, Mapping[str, ParameterValue]]] = {}
    """REST operations beside infer (POST /v2/models/{m}/{operation}), each an infer with these parameters set
    unless the request sets them."""
    _parameter_owners: ClassVar[dict[str, type[Kind]]] = {}
    """Every kind's own parameters, by the kind class that declared them: filled as kind classes are defined
    (plug-ins included), so a model of another kind refuses them rather than ignore them."""
    _operation_owners: ClassVar[dict[str, type[Kind]]] = {}
    _by_task: ClassVar[dict[str, type[Kind]]] = {}
    """Every kind class defined so far, by its name and tasks: a kind module registers itself by being imported."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__  # what the class itself declares: a subclass that inherits a name does not take it over
        for task in ((cls.name,) if "name" in own else ()) + tuple(own.get("tasks", ())):
            Kind._by_task.setdefault(task, cls)
        for parameter in own.get("own_parameters", ()):
            Kind._parameter_owners.setdefault(parameter, cls)
        for operation in own.get("post_operations", {}):
            Kind._operation_owners.setdefault(operation, cls)

    def __init__(self, spec: ModelSpec, config_path: Path, settings: Settings) -> None:
        """Reads and checks the kind's part of the config against the resolved spec; ModelLoadError naming the key
        when it does not fit. Runs once per loaded version, in a worker thread."""
        self.spec = spec
        self.config_path = config_path
        self.png_output: str | None = spec.image_output.name if spec.image_output is not None else None
        """The output that a request asking for PNG files gets them for."""
        self.file_elements: FileElements | None = None
        """What files cost before they are decoded, when the recipe leaves their size open (None: it does not)."""
        image = spec.image_input
        if image is not None and image.preprocessing.padded:  # any kind whose files pad: one stride, checked here
            stride = spec.parameters.get(STRIDE_PARAMETER)
            if stride not in (None, str(image.preprocessing.stride)):
                raise ModelLoadError(
                    f"{config_path}: key 'parameters.{STRIDE_PARAMETER}' is {stride!r}, but 'preprocessing.stride' "
                    f"pads to {image.preprocessing.stride}; state one stride"
                )
            self.file_elements = self._padded_file_elements
            self._pixel_cap = image_codec.PixelCap(spec.name, settings.max_image_pixels, image.preprocessing.max_pixels)
        # Which per-request hooks do anything for this model, so that the plain path does not call empty ones.
        own = type(self)
        self.prepares = own.prepare is not Kind.prepare
        self.finishes = own.finish is not Kind.finish or spec.image_output is not None

    @classmethod
    def describes(cls, spec: ModelSpec) -> bool:
        """Whether a config that names no known task describes a model of this kind. The plain tensor kind takes
        any model; a subclass is chosen this way only when it says so (else only by name or task)."""
        return cls is Kind

    # -- a request ----------------------------------------------------------------------------------------------

    def plan(self, request: pb.ModelInferRequest, raw_inputs: Sequence[Buffer] | None) -> Plan:
        """The kind's reading of the request's parameters. The base refuses other kinds' parameters."""
        parameters = request.parameters
        if parameters:
            owners = Kind._parameter_owners
            for key in parameters:
                owner = owners.get(key)
                if owner is not None and not isinstance(self, owner):
                    raise InvalidInput(f"parameter {key!r}: model {self.spec.name!r} is a {self.name} model, which "
                                       f"does not take it (a {owner.name} model's)")  # fmt: skip
        return Plan(request, raw_inputs, png_reply=self.png_output)

    def prepare(self, plan: Plan, decoded: DecodedRequest) -> Plan:
        """After the tensors are decoded and checked, before files are decoded and anything is queued; may replace
        decoded.inputs (a copy, never the request's own views)."""
        return plan

    async def extra_outputs(self, plan: Plan, model: ServedModel, inputs: dict[str, Array],
                            images: DecodedImages | None, deadline: float | None) -> list[OutputTensor]:  # fmt: skip
        """Outputs the kind computes itself, appended to the reply (they may run the model through its batcher).
        Called only for a plan whose `extra` is set."""
        return []

    async def finish(self, plan: Plan, outputs: dict[str, Array], decoded: DecodedRequest,
                     images: DecodedImages | None, workers: ImageWorkers) -> dict[str, Array]:  # fmt: skip
        """The model's outputs as the request gets them: the image output as PNG files when it asked for them."""
        target = self.spec.image_output
        if target is None or target.name not in outputs or not any(want.png for want in decoded.requested_outputs):
            return outputs  # a missing output is named by select_outputs
        return {**outputs, target.name: await workers.encode_png(outputs[target.name], target)}

    def _padded_file_elements(self, name: str, files: Array) -> int:
        """Each file at its own size padded to the stride, times the channels: read from the headers alone. A file
        over the pixel cap is refused here, naming the cap rather than the element count it would make."""
        image = self.spec.image_input
        assert image is not None
        recipe = image.preprocessing
        total = 0
        for index, (height, width) in enumerate(image_codec.header_sizes(files)):
            self._pixel_cap.check(name, index, width, height)
            padded_height, padded_width = recipe.padded_size(height, width)
            total += padded_height * padded_width * recipe.channels
        return total

    # -- the REST door --------------------------------------------------------------------------------------------

    def implied_parameters(self, operation: str) -> Mapping[str, ParameterValue]:
        """The parameters POST .../{operation} sets on an infer body; ModelNotFound for an operation no kind has,
        InvalidInput for another kind's."""
        if operation == INFER:
            return {}
        implied = self.post_operations.get(operation)
        if implied is not None:
            return implied
        if operation in Kind._operation_owners:
            raise InvalidInput(f"model {self.spec.name!r} is a {self.name} model, which has no {operation!r} operation")
        raise ModelNotFound(f"model {self.spec.name!r} has no operation {operation!r}")

    def file_request(self, operation: str, query: Mapping[str, str], png: bool) -> FileRequest:
        """A PNG/JPEG body posted to `operation` ("infer", or one of post_operations): the outputs to ask for and
        the parameters to set. `png`: the client accepts image/png. The base asks for every default output."""
        if operation != INFER:
            raise ModelNotFound(f"model {self.spec.name!r} has no operation {operation!r}")
        return FileRequest((), PNG_PARAMETERS if png and self.png_output is not None else {})

    def file_answer(self, operation: str, tensors: Sequence[OutputTensor], query: Mapping[str, str], png: bool
                    ) -> FileAnswer:  # fmt: skip
        """The answer to such a body: a PNG file when asked for and made, else the ordinary infer reply."""
        if png:
            return first_png(tensors, self.png_output)
        return None

    def read_file(self, operation: str, version_dir: Path, file: str) -> tuple[bytes, str]:
        """GET /v2/models/{m}[/versions/{v}]/{operation}/{file}: (bytes, content type) of a file the kind serves
        beside the model. Runs in a worker thread. The base serves none."""
        raise ModelNotFound(f"model {self.spec.name!r} has no {operation!r} files")


def first_png(tensors: Sequence[OutputTensor], name: str | None) -> bytes | None:
    """The first PNG file of output `name` in a reply, or None when it holds none."""
    for tensor in tensors:
        if tensor.name == name and tensor.datatype == "BYTES" and tensor.array.size:
            return bytes(np.asarray(tensor.array).reshape(-1)[0])
    return None


def integer_parameter(parameters: Mapping[str, pb.InferParameter], key: str, default: int) -> int:
    """An integer request parameter; InvalidInput naming it when it holds anything else."""
    if key not in parameters:  # `in` first: indexing a protobuf map inserts the key
        return default
    value = parameter_value(parameters[key])
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} must be an integer, got {value!r}")
    return value


def query_integer(query: Mapping[str, str], key: str) -> int | None:
    """A non-negative integer query parameter of the REST door, None when absent; InvalidInput naming it else."""
    if key not in query:
        return None
    try:
        value = int(query[key])
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidInput(f"query parameter {key} must be a non-negative integer, got {query[key]!r}")
    return value
