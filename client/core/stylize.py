"""The transport-free half of `stylize`: a request that sends one image file to a style model and asks for its
output as a PNG, and the checks that the model is one (contracts/style.py).

The server does the geometry: a file of any size is padded to the model's stride and the answer cropped back, so
the PNG that comes back has the file's own width and height.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client import images
from cnnserve.client.core import hints, tensors
from cnnserve.contracts import layout, style


def output_name(model: str, config: pb.ModelConfig) -> str:
    """The style model's image output (postprocessing `output`); ValueError for a model of another kind."""
    task = hints.string_parameter(config, layout.TASK_PARAMETER)
    post = hints.json_parameter(config, layout.POSTPROCESSING_PARAMETER)
    if task != style.TASK or "output" not in post:
        raise ValueError(f"model '{model}' is not a style model (parameter task {task!r}, want {style.TASK!r})")
    return str(post["output"])


def request(model: str, image: images.ImageLike, input_name: str, output: str) -> pb.ModelInferRequest:
    """One image as a file, its stylised version asked for as a PNG file. Reads a file."""
    files = tensors.image_files([image])
    return tensors.infer_request(model, {input_name: files}, (output,), parameters=tensors.PNG_PARAMETERS)


def png_of(outputs: Mapping[str, np.ndarray], output: str) -> bytes:
    """The PNG file of a one-item reply."""
    return bytes(np.asarray(outputs[output]).reshape(-1)[0])


def decoded(files: list[bytes]) -> list[np.ndarray]:
    """PNG files -> uint8 RGB pixels [h, w, 3] each."""
    return [np.asarray(images.open_image(png).convert("RGB")) for png in files]
