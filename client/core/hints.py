"""What a model's ModelConfig tells a client, so that callers never repeat the model's recipe: the preprocessing and
postprocessing blocks (JSON parameters the server publishes), the input that takes the images, and whether the
server decodes image files for it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts import layout


def json_parameter(config: pb.ModelConfig, key: str) -> dict[str, Any]:
    """A config parameter that holds a JSON object (layout.PREPROCESSING_PARAMETER, ...); {} when absent."""
    if key not in config.parameters:
        return {}
    value: dict[str, Any] = json.loads(config.parameters[key].string_value)
    return value


def string_parameter(config: pb.ModelConfig, key: str) -> str:
    """A config parameter's string; "" when absent."""
    return config.parameters[key].string_value if key in config.parameters else ""


def preprocessing(model: str, config: pb.ModelConfig) -> dict[str, Any]:
    """The model's preprocessing hints; ValueError for a model that publishes none (it takes tensors only)."""
    hints = json_parameter(config, layout.PREPROCESSING_PARAMETER)
    if not hints:
        raise ValueError(f"model '{model}' publishes no preprocessing hints; use infer() with tensors")
    return hints


def image_input(hints: Mapping[str, Any], metadata: pb.ModelMetadataResponse) -> str:
    """The input that takes the images: named by the hints, else the model's first input."""
    return str(hints.get("input", metadata.inputs[0].name))


def takes_files(hints: Mapping[str, Any]) -> bool:
    """Whether the server decodes PNG/JPEG files for the model itself (preprocessing input_format "image")."""
    return hints.get("input_format") == "image"


def require_files(model: str, hints: Mapping[str, Any]) -> None:
    """For operations that send image files of any size (the server decodes, pads and maps answers back)."""
    if not takes_files(hints):
        raise ValueError(f"model '{model}' takes no image files (preprocessing input_format); use infer()")
