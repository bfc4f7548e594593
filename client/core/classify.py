"""The transport-free half of `classify`: the image input (files, or tensors preprocessed here), the ranking of the
model's scores, and the labels asked once per model from the classification extension ("score:index:label")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client import images
from cnnserve.client.core import hints, tensors
from cnnserve.contracts import wire
from cnnserve.contracts.scores import softmax


def inputs(
    pictures: Sequence[images.ImageLike], recipe: Mapping[str, Any], input_name: str, send_files: bool | None
) -> dict[str, np.ndarray]:
    """The image input for `pictures`: as files (by default, whenever the model takes them: the server then
    preprocesses with the model's recipe; paths and bytes travel as they are), else tensors preprocessed here.
    Reads files: a plan asks for it as Work."""
    if send_files is None:
        send_files = hints.takes_files(recipe)
    if not send_files:
        return {input_name: images.load(pictures, recipe)}
    return {input_name: tensors.image_files(pictures)}


def rank(logits: np.ndarray, labels: Sequence[str], top_k: int) -> list[list[tuple[str, float]]]:
    """[n, classes] logits -> per row the top_k (label, probability), best first."""
    probabilities = softmax(logits, axis=1)
    ranked = np.argsort(-probabilities, axis=1)[:, :top_k]
    return [[(labels[i], float(row[i])) for i in order] for row, order in zip(probabilities, ranked, strict=True)]


def label_probe(model: str, metadata: pb.ModelMetadataResponse, count: int) -> pb.ModelInferRequest:
    """A one-item request of zeros whose first output asks the classification extension for all `count` classes,
    so the reply carries every class's label."""
    request = pb.ModelInferRequest(model_name=model)
    for tensor in metadata.inputs:
        shape = [1 if d == -1 else d for d in tensor.shape]
        zeros: np.ndarray = np.zeros(shape, dtype=tensors.NUMPY_TYPES[tensor.datatype])
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=shape)
        request.raw_input_contents.append(zeros.tobytes())
    output = request.outputs.add(name=metadata.outputs[0].name)
    output.parameters[wire.CLASSIFICATION_PARAMETER].int64_param = count
    return request


def probe_labels(reply: pb.ModelInferResponse, count: int) -> list[str]:
    """The label of each class index from the probe's BYTES output ("score:index:label", each length-prefixed);
    a class the reply does not name keeps its index as label."""
    labels = [str(i) for i in range(count)]
    for element in wire.split_bytes(reply.raw_output_contents[0]):
        entry = wire.parse_class(element)
        if entry.label:
            labels[entry.position] = entry.label
    return labels


def class_count(metadata: pb.ModelMetadataResponse) -> int:
    """The classes of a classifier: the last axis of its first output (the logits)."""
    return int(metadata.outputs[0].shape[-1])
