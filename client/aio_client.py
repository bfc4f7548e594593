"""The asyncio flavour of the SDK: Client's methods as coroutines over one grpc.aio channel.

    async with AsyncClient("127.0.0.1:8001") as client:
        ranked = await client.classify("digits_cnn", ["seven.png"])      # [[("7", 0.998), ...]]
        batches = await asyncio.gather(*(client.generate("cdcgan_digits", 4, label=d) for d in range(10)))

Build it inside the running event loop (a grpc.aio channel belongs to the loop it was made on). Requests and replies
go through client.protocol, as Client's do, so both flavours answer alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
from cnnserve.client.protocol import Health, ModelEntry
from cnnserve.client.segment import Segmentation
from cnnserve.contracts.scores import softmax

T = TypeVar("T")


class AsyncClient:
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
        self._channel = connection.aio_channel(url)
        self._metadata = connection.metadata
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        # Tasks, not values: concurrent first calls for a model share one ModelConfig call and one label probe.
        self._configs: dict[str, asyncio.Task[pb.ModelConfig]] = {}
        self._label_cache: dict[str, asyncio.Task[list[str]]] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise ClientError.from_rpc(err) from None

    # -- server ----------------------------------------------------------------------------------------------

    async def health(self) -> Health:
        live = (await self._call("ServerLive", pb.ServerLiveRequest())).live
        ready = (await self._call("ServerReady", pb.ServerReadyRequest())).ready
        return Health(live=live, ready=ready)

    async def health_check(self, service: str = "ready") -> bool:
        """grpc.health.v1 Check; "" is liveness, "ready" readiness, a model name that model's readiness."""
        try:
            reply = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise ClientError.from_rpc(err) from None
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def models(self) -> list[ModelEntry]:
        return protocol.model_entries(await self._call("RepositoryIndex", pb.RepositoryIndexRequest()))

    async def metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return await self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version))  # type: ignore[no-any-return]

    async def config(self, model: str) -> pb.ModelConfig:
        async def fetch() -> pb.ModelConfig:
            return (await self._call("ModelConfig", pb.ModelConfigRequest(name=model))).config  # type: ignore[no-any-return]

        return await _shared(self._configs, model, fetch)

    # -- inference ---------------------------------------------------------------------------------------------

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (), version: str = ""
    ) -> dict[str, np.ndarray]:
        request = protocol.infer_request(model, inputs, outputs, version)
        return protocol.infer_outputs(await self._call("ModelInfer", request))

    async def classify(
        self, model: str, images: Sequence[ImageLike], top_k: int = 5, *, send_files: bool | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image, best first; images and send_files as in Client.classify."""
        hints = protocol.preprocessing(model, await self.config(model))
        input_name = protocol.image_input(hints, await self.metadata(model))
        # file reads (and resizing, when preprocessing here) stay off the loop
        inputs = await asyncio.to_thread(protocol.classify_inputs, images, hints, input_name, send_files)
        logits = next(iter((await self.infer(model, inputs)).values()))
        probabilities = softmax(logits, axis=1)
        return protocol.rank(probabilities, await self._labels(model, probabilities.shape[1]), top_k)

    async def _labels(self, model: str, count: int) -> list[str]:
        """Labels come from the classification extension, asked once per model with top-k = all classes."""

        async def fetch() -> list[str]:
            probe = protocol.label_probe(model, await self.metadata(model), count)
            return protocol.probe_labels(await self._call("ModelInfer", probe), count)

        return await _shared(self._label_cache, model, fetch)

    async def generate(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> np.ndarray:
        """n images from a generator as uint8 [n, h, w, c]; a conditional one takes `label` (else cycles classes).
        truncation scales the latents (contracts/generation.py); None: the model's default."""
        config = await self.config(model)
        inputs = protocol.generator_inputs(
            await self.metadata(model), n, seed=seed, label=label, classes=protocol.class_count(config)
        )
        request = protocol.infer_request(model, inputs, parameters=protocol.generator_parameters(truncation))
        produced = next(iter(protocol.infer_outputs(await self._call("ModelInfer", request)).values()))
        return protocol.generated_images(produced, config)

    async def generate_png(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> list[bytes]:
        """As generate(), but the server encodes each image as a PNG file (its bytes, ready to write)."""
        config = await self.config(model)
        inputs = protocol.generator_inputs(
            await self.metadata(model), n, seed=seed, label=label, classes=protocol.class_count(config)
        )
        request = protocol.infer_request(model, inputs, parameters=protocol.generator_parameters(truncation, png=True))
        produced = next(iter(protocol.infer_outputs(await self._call("ModelInfer", request)).values()))
        return list(produced)

    async def explain(
        self,
        model: str,
        images: Sequence[ImageLike],
        *,
        patch: int | None = None,
        stride: int | None = None,
        target_class: int | None = None,
        with_png: bool = False,
    ) -> list[Explanation]:
        """As Client.explain; the images' requests run concurrently."""
        hints = protocol.preprocessing(model, await self.config(model))
        if not protocol.takes_files(hints):
            raise ValueError(f"model '{model}' takes no image files (preprocessing input_format); use infer()")
        metadata = await self.metadata(model)
        input_name = protocol.image_input(hints, metadata)
        labels = await self._labels(model, int(metadata.outputs[0].shape[-1]))

        async def one(image: ImageLike) -> Explanation:
            def requests() -> list[pb.ModelInferRequest]:
                return [explain.request(model, image, input_name, patch=patch, stride=stride,
                                        target_class=target_class, png=png)
                        for png in ((False, True) if with_png else (False,))]  # fmt: skip

            asked = await asyncio.to_thread(requests)  # file reads
            found = explain.parse(protocol.infer_outputs(await self._call("ModelInfer", asked[0])), labels)
            if with_png:
                png = explain.png_of(protocol.infer_outputs(await self._call("ModelInfer", asked[1])))
                found = dataclasses.replace(found, png=png)
            return found

        return list(await asyncio.gather(*(one(image) for image in images)))

    async def segment(
        self, model: str, images: Sequence[ImageLike], *, with_mask: bool = True, min_score: float = 0.0
    ) -> list[Segmentation]:
        """As Client.segment; the images' requests run concurrently (the server batches those of one size)."""
        config = await self.config(model)
        hints = protocol.preprocessing(model, config)
        if not protocol.takes_files(hints):
            raise ValueError(f"model '{model}' takes no image files (preprocessing input_format); use infer()")
        input_name = protocol.image_input(hints, await self.metadata(model))
        labels = segment.labels(config)

        async def one(image: ImageLike) -> Segmentation:
            request = await asyncio.to_thread(segment.request, model, image, input_name, with_mask)  # file reads
            return segment.parse(protocol.infer_outputs(await self._call("ModelInfer", request)), labels, min_score)

        return list(await asyncio.gather(*(one(image) for image in images)))

    async def stylize_png(self, model: str, images: Sequence[ImageLike]) -> list[bytes]:
        """As Client.stylize_png: one PNG per image at its own size; the images' requests run concurrently."""
        config = await self.config(model)
        output = stylize.output_name(model, config)
        input_name = protocol.image_input(protocol.preprocessing(model, config), await self.metadata(model))

        async def one(image: ImageLike) -> bytes:
            request = await asyncio.to_thread(stylize.request, model, image, input_name, output)  # file reads
            return stylize.png_of(protocol.infer_outputs(await self._call("ModelInfer", request)), output)

        return list(await asyncio.gather(*(one(image) for image in images)))

    async def stylize(self, model: str, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """As stylize_png(), decoded off the loop: uint8 RGB pixels [h, w, 3] per image."""
        files = await self.stylize_png(model, images)
        return await asyncio.to_thread(lambda: [np.asarray(open_image(png).convert("RGB")) for png in files])


def _shared(
    cache: dict[str, asyncio.Task[T]], key: str, fetch: Callable[[], Coroutine[Any, Any, T]]
) -> asyncio.Future[T]:
    """One fetch per key however many callers wait on it. A caller's cancellation leaves the fetch running for the
    others (shield); a failed or cancelled fetch is dropped, so the next call asks again."""
    task = cache.get(key)
    if task is None:
        task = cache[key] = asyncio.ensure_future(fetch())

        def forget_failure(done: asyncio.Task[T]) -> None:
            if done.cancelled() or done.exception() is not None:
                cache.pop(key, None)

        task.add_done_callback(forget_failure)
    return asyncio.shield(task)
