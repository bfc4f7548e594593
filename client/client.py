"""A small synchronous client for cnnserve (or any Open Inference Protocol gRPC server).

    with Client("127.0.0.1:8001") as client:
        client.classify("digits_cnn", ["seven.png"])   # [[("7", 0.998), ...]]
        client.generate("cdcgan_digits", 16, label=7)  # uint8 [16, 16, 16, 1]
        client.segment("digits_segmenter", ["scene.png"])  # [Segmentation(detections=[Detection("7", ...)], mask)]
        client.stylize("stylize_brushstrokes", ["photo.jpg"])  # [uint8 [h, w, 3]], at each photo's own size

    Client("models.example:8001", root_certificates="ca.pem", token=token)   # TLS, bearer token

    async with AsyncClient("127.0.0.1:8001") as client:   # client.aio_client: the same methods, as coroutines
        await client.classify("digits_cnn", ["seven.png"])

Preprocessing (size, channels, layout, scale; mean/std where a model declares them) comes from the model's
configuration, so callers never repeat it. This is the blocking shell: every method runs the plan of the same name
from client.core.operations, which builds the requests and reads the replies; here they are only sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2_grpc

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.client.connection import Connection
from cnnserve.client.core.explain import Explanation
from cnnserve.client.core.operations import Operations
from cnnserve.client.core.segment import Detection, Segmentation
from cnnserve.client.core.server import Health, ModelEntry
from cnnserve.client.core.steps import Call, Plan, Service, Work
from cnnserve.client.core.tensors import DATATYPES, NUMPY_TYPES
from cnnserve.client.errors import ClientError
from cnnserve.client.images import ImageLike

__all__ = ["DATATYPES", "NUMPY_TYPES", "Client", "Detection", "Explanation", "Health", "ModelEntry", "Segmentation"]

T = TypeVar("T")


class Client:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        max_message_bytes: int = 256 * 1024 * 1024,
        tls: bool = False,
        root_certificates: Path | str | None = None,
        certificate_chain: Path | str | None = None,
        private_key: Path | str | None = None,
        token: str | None = None,
    ) -> None:
        """Connection arguments as for client.connection.Connection.build."""
        self.url = url
        self.timeout = timeout
        connection = Connection.build(
            max_message_bytes=max_message_bytes,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            token=token,
        )
        self._channel = connection.channel(url)
        self._metadata = connection.metadata
        self._stubs: dict[Service, Any] = {
            "inference": pb_grpc.GRPCInferenceServiceStub(self._channel),
            "health": health_pb2_grpc.HealthStub(self._channel),
        }
        self._operations = Operations()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _run(self, plan: Plan[T]) -> T:
        """Every operation passes here: each step the plan yields is done, blocking, and its result sent back."""
        result: Any = None
        while True:
            try:
                step = plan.send(result)
            except StopIteration as done:
                answer: T = done.value
                return answer
            if isinstance(step, Work):
                result = step.run()
            elif isinstance(step, Call):
                result = self._send(step)
            else:
                result = tuple(self._send(call) for call in step)  # in turn: one call in flight at a time

    def _send(self, call: Call) -> Any:
        stub = self._stubs[call.service]
        try:
            return getattr(stub, call.method)(call.request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise ClientError.from_rpc(err) from None

    # -- server ----------------------------------------------------------------------------------------------

    def health(self) -> Health:
        return self._run(self._operations.health())

    def health_check(self, service: str = "ready") -> bool:
        """grpc.health.v1 Check; "" is liveness, "ready" readiness, a model name that model's readiness."""
        return self._run(self._operations.health_check(service))

    def models(self) -> list[ModelEntry]:
        return self._run(self._operations.models())

    def metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return self._run(self._operations.metadata(model, version))

    def config(self, model: str) -> pb.ModelConfig:
        """The model's ModelConfig, asked once per model."""
        return self._run(self._operations.config(model))

    # -- inference ---------------------------------------------------------------------------------------------

    def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (), version: str = ""
    ) -> dict[str, np.ndarray]:
        """numpy arrays in, numpy arrays out (object arrays of bytes for BYTES); outputs: the ones wanted (all when
        empty)."""
        return self._run(self._operations.infer(model, inputs, outputs, version))

    def classify(
        self, model: str, images: Sequence[ImageLike], top_k: int = 5, *, send_files: bool | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image, best first. An image is a file path, a file's bytes, a Pillow image
        or uint8 pixels. send_files: True sends them as PNG/JPEG files (the server decodes and preprocesses), False
        sends tensors preprocessed here, None (default) sends files when the model takes them."""
        return self._run(self._operations.classify(model, images, top_k, send_files=send_files))

    def generate(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> np.ndarray:
        """n images from a generator as uint8 [n, h, w, c]; a conditional one takes `label` (else cycles classes).
        truncation scales the latents (contracts/generation.py); None: the model's default."""
        return self._run(self._operations.generate(model, n, seed=seed, label=label, truncation=truncation))

    def generate_png(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> list[bytes]:
        """As generate(), but the server encodes each image as a PNG file (its bytes, ready to write)."""
        return self._run(self._operations.generate_png(model, n, seed=seed, label=label, truncation=truncation))

    def explain(
        self,
        model: str,
        images: Sequence[ImageLike],
        *,
        patch: int | None = None,
        stride: int | None = None,
        target_class: int | None = None,
        with_png: bool = False,
    ) -> list[Explanation]:
        """Per image, its occlusion heatmap at the model's input size (the probability the explained class loses
        when each pixel is covered) and that class: target_class, else the model's own top class. The server runs
        the occluded copies through the model's batcher; patch and stride default to the server's (4 and 2).
        with_png: a second request per image for the heatmap drawn over it by the server (Explanation.png)."""
        return self._run(
            self._operations.explain(
                model, images, patch=patch, stride=stride, target_class=target_class, with_png=with_png
            )
        )

    def segment(
        self, model: str, images: Sequence[ImageLike], *, with_mask: bool = True, min_score: float = 0.0
    ) -> list[Segmentation]:
        """Per image (any size: sent as a file, the server pads it to the model's stride and answers in the image's
        own pixels) its detections (label, score, box) best first and, with_mask, the class index of every pixel.
        One request per image, so images of different sizes never wait for each other."""
        return self._run(self._operations.segment(model, images, with_mask=with_mask, min_score=min_score))

    def stylize_png(self, model: str, images: Sequence[ImageLike]) -> list[bytes]:
        """Per image (any size, sent as a file), the style model's output as a PNG file at the image's own size.
        One request per image: images of one size may share the server's batches, other sizes never wait for them."""
        return self._run(self._operations.stylize_png(model, images))

    def stylize(self, model: str, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """As stylize_png(), decoded: uint8 RGB pixels [h, w, 3] per image."""
        return self._run(self._operations.stylize(model, images))
