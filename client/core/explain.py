"""The transport-free half of `explain`: an occlusion request for image files and its reply as explanations.

The server does the work (contracts/features.py): it slides a patch over the image, runs the occluded copies through
the model's own batcher and answers, per item, the drop in the explained class's probability at each pixel and the
class it explains; with `png`, also the heatmap over the image as a PNG file it made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client import images
from cnnserve.client.core import tensors
from cnnserve.contracts import features, wire

OUTPUTS = (features.EXPLANATION_OUTPUT, features.EXPLAINED_CLASS_OUTPUT)


@dataclass(frozen=True)
class Explanation:
    label: str
    class_index: int
    heatmap: np.ndarray  # float32 [H, W] at the model's input size: the probability lost when that pixel is covered
    png: bytes | None = None  # the heatmap over the image, as the server drew it; None unless asked

    def hottest(self, share: float = 0.2) -> np.ndarray:
        """bool [H, W]: the `share` of pixels whose covering costs the class most."""
        flat = self.heatmap.ravel()
        count = max(1, round(share * flat.size))
        mask = np.zeros(flat.size, bool)
        mask[np.argsort(-flat, kind="stable")[:count]] = True
        return mask.reshape(self.heatmap.shape)


def request(
    model: str,
    image: images.ImageLike,
    input_name: str,
    *,
    patch: int | None = None,
    stride: int | None = None,
    target_class: int | None = None,
    png: bool = False,
) -> pb.ModelInferRequest:
    """One image as a file, asking for its explanation alone (the model's own outputs are not computed for it); with
    png, the heatmap drawn over the image as a PNG file instead of numbers. Reads a file."""
    message = tensors.infer_request(
        model,
        {input_name: tensors.image_files([image])},
        OUTPUTS,
        parameters={features.EXPLAIN_PARAMETER: features.EXPLAIN_METHODS[0]},
    )
    for key, value in ((features.PATCH_PARAMETER, patch), (features.STRIDE_PARAMETER, stride),
                       (features.TARGET_CLASS_PARAMETER, target_class)):  # fmt: skip
        if value is not None:
            message.parameters[key].int64_param = value
    if png:
        message.parameters[wire.OUTPUT_FORMAT_PARAMETER].string_param = wire.PNG
    return message


def parse(outputs: Mapping[str, np.ndarray], labels: Sequence[str]) -> Explanation:
    """One item's reply (batch axis of 1) with the heatmap as numbers."""
    index = int(np.asarray(outputs[features.EXPLAINED_CLASS_OUTPUT]).reshape(-1)[0])
    label = labels[index] if 0 <= index < len(labels) else str(index)
    return Explanation(label, index, np.asarray(outputs[features.EXPLANATION_OUTPUT])[0].astype(np.float32))


def png_of(outputs: Mapping[str, np.ndarray]) -> bytes:
    """One item's reply to a request made with png=True: the PNG file the server drew."""
    return bytes(np.asarray(outputs[features.EXPLANATION_OUTPUT]).reshape(-1)[0])
