"""The transport-free half of the SDK: protocol messages <-> numpy arrays, ranking, labels, generator inputs.

Client and AsyncClient make the calls; everything they build or decode goes through here, so both answer alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client import images
from cnnserve.contracts import generation, wire
from cnnserve.contracts.datatypes import DATATYPES as _TABLE

# Fixed-size datatypes as numpy scalar types; BYTES (object arrays) is built and read separately.
NUMPY_TYPES = {name: info.numpy.type for name, info in _TABLE.items() if info.numpy.kind != "O"}
DATATYPES = {np.dtype(t): name for name, t in NUMPY_TYPES.items()}

# Without a "num_classes" parameter a conditional generator is taken to have the digits' ten classes.
DEFAULT_CLASS_COUNT = 10


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    state: str
    reason: str


def model_entries(index: pb.RepositoryIndexResponse) -> list[ModelEntry]:
    return [ModelEntry(m.name, m.version, m.state, m.reason) for m in index.models]


# -- tensors -----------------------------------------------------------------------------------------------------


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
            request.raw_input_contents.append(b"".join(len(v).to_bytes(4, "little") + v for v in array.flat))
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
        if out.datatype == "BYTES":
            items = np.empty(len(elements := split_bytes(raw)), dtype=object)
            items[:] = elements
            result[out.name] = items.reshape(tuple(out.shape))
        elif out.datatype in NUMPY_TYPES:
            result[out.name] = np.frombuffer(raw, dtype=NUMPY_TYPES[out.datatype]).reshape(tuple(out.shape))
    return result


def split_bytes(raw: bytes) -> list[bytes]:
    """The protocol's raw BYTES form (each element after its 4-byte little-endian length) -> the elements."""
    return wire.split_bytes(raw)


# -- model configuration -----------------------------------------------------------------------------------------


def json_parameter(config: pb.ModelConfig, key: str) -> dict[str, Any]:
    """A config parameter that holds a JSON object ("preprocessing", "postprocessing"); {} when absent."""
    if key not in config.parameters:
        return {}
    value: dict[str, Any] = json.loads(config.parameters[key].string_value)
    return value


def class_count(config: pb.ModelConfig) -> int:
    parameters = config.parameters
    return int(parameters["num_classes"].string_value) if "num_classes" in parameters else DEFAULT_CLASS_COUNT


# -- classification ----------------------------------------------------------------------------------------------


def preprocessing(model: str, config: pb.ModelConfig) -> dict[str, Any]:
    hints = json_parameter(config, "preprocessing")
    if not hints:
        raise ValueError(f"model '{model}' publishes no preprocessing hints; use infer() with tensors")
    return hints


def image_input(hints: Mapping[str, Any], metadata: pb.ModelMetadataResponse) -> str:
    """The input that takes the images: named by the hints, else the model's first input."""
    return str(hints.get("input", metadata.inputs[0].name))


def takes_files(hints: Mapping[str, Any]) -> bool:
    """Whether the server decodes PNG/JPEG files for the model itself (preprocessing input_format "image")."""
    return hints.get("input_format") == "image"


def classify_inputs(
    pictures: Sequence[images.ImageLike], hints: Mapping[str, Any], input_name: str, send_files: bool | None
) -> dict[str, np.ndarray]:
    """The image input for `pictures`: as files (by default, whenever the model takes them: the server then
    preprocesses with the model's recipe; paths and bytes travel as they are), else tensors preprocessed here."""
    if send_files is None:
        send_files = takes_files(hints)
    if not send_files:
        return {input_name: images.load(pictures, hints)}
    files = np.empty(len(pictures), dtype=object)
    files[:] = [images.encoded(picture) for picture in pictures]
    return {input_name: files}


def rank(probabilities: np.ndarray, labels: Sequence[str], top_k: int) -> list[list[tuple[str, float]]]:
    """[n, classes] probabilities -> per row the top_k (label, probability), best first."""
    ranked = np.argsort(-probabilities, axis=1)[:, :top_k]
    return [[(labels[i], float(row[i])) for i in order] for row, order in zip(probabilities, ranked, strict=True)]


def label_probe(model: str, metadata: pb.ModelMetadataResponse, count: int) -> pb.ModelInferRequest:
    """A one-item request of zeros whose first output asks the classification extension for all `count` classes,
    so the reply carries every class's label."""
    request = pb.ModelInferRequest(model_name=model)
    for tensor in metadata.inputs:
        shape = [1 if d == -1 else d for d in tensor.shape]
        zeros: np.ndarray = np.zeros(shape, dtype=NUMPY_TYPES[tensor.datatype])
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=shape)
        request.raw_input_contents.append(zeros.tobytes())
    output = request.outputs.add(name=metadata.outputs[0].name)
    output.parameters["classification"].int64_param = count
    return request


def probe_labels(reply: pb.ModelInferResponse, count: int) -> list[str]:
    """The label of each class index from the probe's BYTES output ("score:index:label", each length-prefixed);
    a class the reply does not name keeps its index as label."""
    labels = [str(i) for i in range(count)]
    for element in split_bytes(reply.raw_output_contents[0]):
        entry = wire.parse_class(element)
        if entry.label:
            labels[entry.position] = entry.label
    return labels


# -- generation --------------------------------------------------------------------------------------------------


def generator_inputs(
    metadata: pb.ModelMetadataResponse,
    n: int,
    *,
    seed: int | None = None,
    label: int | None = None,
    classes: int = DEFAULT_CLASS_COUNT,
) -> dict[str, np.ndarray]:
    """The latent (the first floating-point input, standard normal from `seed`) and, for every other input,
    `label` n times, or classes 0..classes-1 cycled when no label is given."""
    latent_spec = next(t for t in metadata.inputs if t.datatype.startswith("FP"))
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {
        latent_spec.name: rng.standard_normal((n, *latent_spec.shape[1:])).astype(np.float32)
    }
    for tensor in metadata.inputs:
        if tensor.name != latent_spec.name:
            values = np.full(n, label) if label is not None else np.arange(n) % classes
            inputs[tensor.name] = values.astype(NUMPY_TYPES[tensor.datatype])
    return inputs


PNG_PARAMETERS = {wire.OUTPUT_FORMAT_PARAMETER: wire.PNG}
"""Request parameters that ask a generator for PNG files instead of floats (server-side encoding)."""


def generator_parameters(truncation: float | None, png: bool = False) -> dict[str, str | float]:
    """Request parameters of a generate call: the truncation factor when given (the server applies the model's
    default otherwise), PNG files when asked."""
    parameters: dict[str, str | float] = dict(PNG_PARAMETERS) if png else {}
    if truncation is not None:
        parameters[generation.TRUNCATION_PARAMETER] = truncation
    return parameters


def generated_images(produced: np.ndarray, config: pb.ModelConfig) -> np.ndarray:
    """Generator output [n, c, h, w] -> uint8 [n, h, w, c], scaled from the config's postprocessing range."""
    post = json_parameter(config, "postprocessing")
    return images.to_uint8(produced, post.get("range", (-1.0, 1.0)))
