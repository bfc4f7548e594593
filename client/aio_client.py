"""The asyncio flavour of the SDK: Client's methods as coroutines over one grpc.aio channel.

    async with AsyncClient("127.0.0.1:8001") as client:
        ranked = await client.classify("digits_cnn", ["seven.png"])      # [[("7", 0.998), ...]]
        batches = await asyncio.gather(*(client.generate("cdcgan_digits", 4, label=d) for d in range(10)))

Build it inside the running event loop (a grpc.aio channel belongs to the loop it was made on). This is the asyncio
shell: every method runs the plan of the same name from client.core.operations, as Client does, so both flavours
answer alike; here the calls a plan asks together go out at once and its file work runs off the loop.
"""

from __future__ import annotations

import asyncio
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
from cnnserve.client.core.segment import Segmentation
from cnnserve.client.core.server import Health, ModelEntry
from cnnserve.client.core.steps import Call, Plan, Service, Work
from cnnserve.client.errors import ClientError
from cnnserve.client.images import ImageLike

T = TypeVar("T")

_CallKey = tuple[Service, str, bytes]


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
        self._stubs: dict[Service, Any] = {
            "inference": pb_grpc.GRPCInferenceServiceStub(self._channel),
            "health": health_pb2_grpc.HealthStub(self._channel),
        }
        self._operations = Operations()
        # Shared calls in flight: concurrent first calls for a model share one ModelConfig call and one label probe.
        self._in_flight: dict[_CallKey, asyncio.Task[Any]] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _run(self, plan: Plan[T]) -> T:
        """Every operation passes here: each step the plan yields is awaited and its result sent back."""
        result: Any = None
        while True:
            try:
                step = plan.send(result)
            except StopIteration as done:
                answer: T = done.value
                return answer
            if isinstance(step, Work):
                result = await asyncio.to_thread(step.run)
            elif isinstance(step, Call):
                result = await self._send(step)
            else:
                result = tuple(await asyncio.gather(*(self._send(call) for call in step)))

    async def _send(self, call: Call) -> Any:
        if not call.shared:
            return await self._rpc(call)
        key = (call.service, call.method, call.request.SerializeToString(deterministic=True))
        task = self._in_flight.get(key)
        if task is None:
            task = self._in_flight[key] = asyncio.ensure_future(self._rpc(call))
            task.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(task)  # a caller's cancellation leaves the call running for the others
        finally:
            # The first caller back forgets the call; its plan fills the core's cache before anything else runs
            # (no await between here and plan.send), so a later caller finds either the call or the cache. After
            # a failure the next caller asks again.
            if self._in_flight.get(key) is task:
                del self._in_flight[key]

    async def _rpc(self, call: Call) -> Any:
        stub = self._stubs[call.service]
        try:
            return await getattr(stub, call.method)(call.request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise ClientError.from_rpc(err) from None

    # -- server ----------------------------------------------------------------------------------------------

    async def health(self) -> Health:
        return await self._run(self._operations.health())

    async def health_check(self, service: str = "ready") -> bool:
        """grpc.health.v1 Check; "" is liveness, "ready" readiness, a model name that model's readiness."""
        return await self._run(self._operations.health_check(service))

    async def models(self) -> list[ModelEntry]:
        return await self._run(self._operations.models())

    async def metadata(self, model: str, version: str = "") -> pb.ModelMetadataResponse:
        return await self._run(self._operations.metadata(model, version))

    async def config(self, model: str) -> pb.ModelConfig:
        """As Client.config: asked once per model, however many callers ask at once."""
        return await self._run(self._operations.config(model))

    # -- inference ---------------------------------------------------------------------------------------------

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = (), version: str = ""
    ) -> dict[str, np.ndarray]:
        return await self._run(self._operations.infer(model, inputs, outputs, version))

    async def classify(
        self, model: str, images: Sequence[ImageLike], top_k: int = 5, *, send_files: bool | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image, best first; images and send_files as in Client.classify."""
        return await self._run(self._operations.classify(model, images, top_k, send_files=send_files))

    async def generate(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> np.ndarray:
        """As Client.generate: n images as uint8 [n, h, w, c]."""
        return await self._run(self._operations.generate(model, n, seed=seed, label=label, truncation=truncation))

    async def generate_png(
        self, model: str, n: int, *, seed: int | None = None, label: int | None = None, truncation: float | None = None
    ) -> list[bytes]:
        """As generate(), but the server encodes each image as a PNG file (its bytes, ready to write)."""
        return await self._run(self._operations.generate_png(model, n, seed=seed, label=label, truncation=truncation))

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
        return await self._run(
            self._operations.explain(
                model, images, patch=patch, stride=stride, target_class=target_class, with_png=with_png
            )
        )

    async def segment(
        self, model: str, images: Sequence[ImageLike], *, with_mask: bool = True, min_score: float = 0.0
    ) -> list[Segmentation]:
        """As Client.segment; the images' requests run concurrently (the server batches those of one size)."""
        return await self._run(self._operations.segment(model, images, with_mask=with_mask, min_score=min_score))

    async def stylize_png(self, model: str, images: Sequence[ImageLike]) -> list[bytes]:
        """As Client.stylize_png: one PNG per image at its own size; the images' requests run concurrently."""
        return await self._run(self._operations.stylize_png(model, images))

    async def stylize(self, model: str, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """As stylize_png(), decoded off the loop: uint8 RGB pixels [h, w, 3] per image."""
        return await self._run(self._operations.stylize(model, images))


def _retrieve(done: asyncio.Task[Any]) -> None:
    """A shared call's failure is its callers' to raise; retrieved here so that one whose callers all left is not
    logged as never retrieved."""
    if not done.cancelled():
        done.exception()
