"""The transport-free half of `generate`: a generator's inputs (latents drawn here from a seed, class labels), the
request parameters (truncation, PNG files) and its images as uint8 pixels (contracts/generation.py)."""

from __future__ import annotations

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client import images
from cnnserve.client.core import hints, tensors
from cnnserve.contracts import generation, layout

DEFAULT_CLASS_COUNT = 10
"""A conditional generator without the config parameter num_classes is taken to have the digits' ten classes."""


def class_count(config: pb.ModelConfig) -> int:
    count = hints.string_parameter(config, generation.NUM_CLASSES_PARAMETER)
    return int(count) if count else DEFAULT_CLASS_COUNT


def inputs(
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
    arrays: dict[str, np.ndarray] = {
        latent_spec.name: rng.standard_normal((n, *latent_spec.shape[1:])).astype(np.float32)
    }
    for tensor in metadata.inputs:
        if tensor.name != latent_spec.name:
            values = np.full(n, label) if label is not None else np.arange(n) % classes
            arrays[tensor.name] = values.astype(tensors.NUMPY_TYPES[tensor.datatype])
    return arrays


def parameters(truncation: float | None, png: bool = False) -> dict[str, str | float]:
    """Request parameters of a generate call: the truncation factor when given (the server applies the model's
    default otherwise), PNG files when asked."""
    found: dict[str, str | float] = dict(tensors.PNG_PARAMETERS) if png else {}
    if truncation is not None:
        found[generation.TRUNCATION_PARAMETER] = truncation
    return found


def request(
    model: str,
    config: pb.ModelConfig,
    metadata: pb.ModelMetadataResponse,
    n: int,
    *,
    seed: int | None,
    label: int | None,
    truncation: float | None,
    png: bool,
) -> pb.ModelInferRequest:
    """n images' request: latents from `seed`, `label` (else the config's classes cycled), truncation, PNG files."""
    arrays = inputs(metadata, n, seed=seed, label=label, classes=class_count(config))
    return tensors.infer_request(model, arrays, parameters=parameters(truncation, png))


def pixels(produced: np.ndarray, config: pb.ModelConfig) -> np.ndarray:
    """Generator output [n, c, h, w] -> uint8 [n, h, w, c], scaled from the config's postprocessing range."""
    post = hints.json_parameter(config, layout.POSTPROCESSING_PARAMETER)
    return images.to_uint8(produced, post.get("range", (-1.0, 1.0)))
