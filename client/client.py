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
configuration, so callers never repeat it. The transport-free work (tensors <-> messages, ranking, labels,
generator inputs) lives in client.protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.client import explain, protocol, segment, stylize
from cnnserve.client.connection import Connection
from cnnserve.client.errors import ClientError
from cnnserve.client.explain import Explanation
from cnnserve.client.images import ImageLike, open_image
from cnnserve.client.protocol import DATATYPES, NUMPY_TYPES, Health, ModelEntry
from cnnserve.client.segment import Detection, Segmentation
from cnnserve.contracts.scores import softmax

__all__ = ["DATATYPES", "NUMPY_TYPES", "Client", "Detection", "Explanation", "Health", "ModelEntry", "Segmentation"]


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
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._configs: dict[str, pb.ModelConfig] = {}
        self._label_cache: dict[str, list[str]] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise ClientError.from_rpc(err) from None

    # -- server ----------------------------------------------------------------------------------------------

    def health(self) -> Health:
        live = self._call("ServerLive", pb.ServerLiveRequest()).live
        ready = self._call("ServerReady", pb.ServerReadyRequest()).ready
        return Health(live=live, ready=ready)

    def health_check(self, service: str = "ready") -> bool:
        """grpc.health.v1 Check; "" is liveness, "ready" readiness, a model name that model's readiness."""
        try:
            reply = health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise ClientError.from_rpc(err) from None
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def models(self) -> list[ModelEntry]:
        return protocol.model_entries(self._call("RepositoryIndex", pb.RepositoryIndexRequest()))

    def metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))  # type: ignore[no-any-return]

    def config(self, model: str) -> pb.ModelConfig:
        if model not in self._configs:
            self._configs[model] = self._call("ModelConfig", pb.ModelConfigRequest(name=model)).config
        return self._configs[model]

    # -- inference ---------------------------------------------------------------------------------------------

    def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (), version: str = ""
    ) -> dict[str, np.ndarray]:
        return protocol.infer_outputs(self._call("ModelInfer", protocol.infer_request(model, inputs, outputs, version)))

    def classify(
        self, model: str, images: Sequence[ImageLike], top_k: int = 5, *, send_files: bool | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image, best first. An image is a file path, a file's bytes, a Pillow image
        or uint8 pixels. send_files: True sends them as PNG/JPEG files (the server decodes and preprocesses), False
        sends tensors preprocessed here, None (default) sends files when the model takes them."""
        hints = protocol.preprocessing(model, self.config(model))
        input_name = protocol.image_input(hints, self.metadata(model))
        inputs = protocol.classify_inputs(images, hints, input_name, send_files)
        logits = next(iter(self.infer(model, inputs).values()))
        probabilities = softmax(logits, axis=1)
        return protocol.rank(probabilities, self._labels(model, probabilities.shape[1]), top_k)

    def _labels(self, model: str, count: int) -> list[str]:
        """Labels come from the classification extension, asked once per model with top-k = all classes."""
        if model not in self._label_cache:
            probe = protocol.label_probe(model, self.metadata(model), count)
            self._label_cache[model] = protocol.probe_labels(self._call("ModelInfer", probe), count)
        return self._label_cache[model]

    def generate(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> np.ndarray:
        """n images from a generator as uint8 [n, h, w, c]; a conditional one takes `label` (else cycles classes).
        truncation scales the latents (contracts/generation.py); None: the model's default."""
        config = self.config(model)
        inputs = protocol.generator_inputs(
            self.metadata(model), n, seed=seed, label=label, classes=protocol.class_count(config)
        )
        request = protocol.infer_request(model, inputs, parameters=protocol.generator_parameters(truncation))
        produced = next(iter(protocol.infer_outputs(self._call("ModelInfer", request)).values()))
        return protocol.generated_images(produced, config)

    def generate_png(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> list[bytes]:
        """As generate(), but the server encodes each image as a PNG file (its bytes, ready to write)."""
        inputs = protocol.generator_inputs(
            self.metadata(model), n, seed=seed, label=label, classes=protocol.class_count(self.config(model))
        )
        request = protocol.infer_request(model, inputs, parameters=protocol.generator_parameters(truncation, png=True))
        produced = next(iter(protocol.infer_outputs(self._call("ModelInfer", request)).values()))
        return list(produced)

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
        hints = protocol.preprocessing(model, self.config(model))
        if not protocol.takes_files(hints):
            raise ValueError(f"model '{model}' takes no image files (preprocessing input_format); use infer()")
        input_name = protocol.image_input(hints, self.metadata(model))
        labels = self._labels(model, self._class_count(model))
        results = []
        for image in images:
            asked = [explain.request(model, image, input_name, patch=patch, stride=stride, target_class=target_class,
                                     png=png) for png in ((False, True) if with_png else (False,))]  # fmt: skip
            found = explain.parse(protocol.infer_outputs(self._call("ModelInfer", asked[0])), labels)
            if with_png:
                png = explain.png_of(protocol.infer_outputs(self._call("ModelInfer", asked[1])))
                found = dataclasses.replace(found, png=png)
            results.append(found)
        return results

    def _class_count(self, model: str) -> int:
        label_output = next(iter(self.metadata(model).outputs))
        return int(label_output.shape[-1])

    def segment(
        self, model: str, images: Sequence[ImageLike], *, with_mask: bool = True, min_score: float = 0.0
    ) -> list[Segmentation]:
        """Per image (any size: sent as a file, the server pads it to the model's stride and answers in the image's
        own pixels) its detections (label, score, box) best first and, with_mask, the class index of every pixel.
        One request per image, so images of different sizes never wait for each other."""
        hints = protocol.preprocessing(model, self.config(model))
        if not protocol.takes_files(hints):
            raise ValueError(f"model '{model}' takes no image files (preprocessing input_format); use infer()")
        input_name = protocol.image_input(hints, self.metadata(model))
        labels = segment.labels(self.config(model))
        results = []
        for image in images:
            reply = self._call("ModelInfer", segment.request(model, image, input_name, with_mask))
            results.append(segment.parse(protocol.infer_outputs(reply), labels, min_score))
        return results

    def stylize_png(self, model: str, images: Sequence[ImageLike]) -> list[bytes]:
        """Per image (any size, sent as a file), the style model's output as a PNG file at the image's own size.
        One request per image: images of one size may share the server's batches, other sizes never wait for them."""
        config = self.config(model)
        output = stylize.output_name(model, config)
        input_name = protocol.image_input(protocol.preprocessing(model, config), self.metadata(model))
        files = []
        for image in images:
            reply = self._call("ModelInfer", stylize.request(model, image, input_name, output))
            files.append(stylize.png_of(protocol.infer_outputs(reply), output))
        return files

    def stylize(self, model: str, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """As stylize_png(), decoded: uint8 RGB pixels [h, w, 3] per image."""
        return [np.asarray(open_image(png).convert("RGB")) for png in self.stylize_png(model, images)]
