"""GRPCInferenceService: each RPC converts the request, calls the model registry, converts the answer back.

Errors: a ServiceError aborts with its own status and message; anything else is logged with its traceback and
answered INTERNAL with a generic message, so internals never reach clients.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cnnserve import __version__
from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.service.errors import FailedPrecondition, NotSupported, ServiceError
from cnnserve.service.protocol import describe, statistics
from cnnserve.service.protocol.inference import InferencePath
from cnnserve.service.registry.registry import ModelManager
from cnnserve.service.scheduling.gate import RequestGate
from cnnserve.service.settings import Settings
from cnnserve.service.wire.encode import grpc_reply

logger = logging.getLogger(__name__)

# Only what really works: perf_analyzer asks ModelStatistics only when "statistics" is listed.
EXTENSIONS = ("classification", "model_configuration", "model_repository", "statistics")
STREAM_MAX_IN_FLIGHT = 128  # per stream: bounds the tasks one client can pile up

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def grpc_code(err: ServiceError) -> grpc.StatusCode:
    return grpc.StatusCode[err.status.name]


def unary(method: Handler[Request, Response]) -> Handler[Request, Response]:
    """Maps exceptions to gRPC statuses for a unary RPC."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except ServiceError as err:
            await context.abort(grpc_code(err), str(err))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            logger.exception("rpc=%s failed unexpectedly", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


def _refusal(message: str) -> Any:  # Any: it stands in for methods of several generated signatures
    """An RPC method that answers UNIMPLEMENTED with `message`."""

    @unary
    async def refuse(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise NotSupported(message)

    return refuse


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, settings: Settings, models: ModelManager, gate: RequestGate, path: InferencePath) -> None:
        self._settings = settings
        self._models = models
        self._gate = gate
        self._path = path

    # -- health and metadata -------------------------------------------------------------------------------

    @unary
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @unary
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self._gate.closed and self._models.all_ready())

    @unary
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        ready = not self._gate.closed and self._models.is_ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @unary
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=self._settings.server_name, version=__version__, extensions=list(EXTENSIONS)
        )

    @unary
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        model = self._models.get(request.name, request.version)
        versions = [m.version for m in self._models.served_models() if m.name == model.name]
        return describe.model_metadata(model.spec, versions)

    @unary
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        model = self._models.get(request.name, request.version)
        labels_file = "labels.txt" if model.spec.labels else None
        return pb.ModelConfigResponse(config=describe.model_config(model.spec, model.provider, labels_file))

    @unary
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        if request.name:
            self._models.get(request.name, request.version)  # NOT_FOUND for unknown names and versions
        selected = [
            m
            for m in self._models.served_models()
            if (not request.name or m.name == request.name)
            and (not request.version or str(m.version) == request.version)
        ]
        return pb.ModelStatisticsResponse(model_stats=[statistics.model_statistics(m) for m in selected])

    # -- repository -------------------------------------------------------------------------------------------

    @unary
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        entries = await self._models.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=e.version, state=str(e.state), reason=e.reason
                )
                for e in entries
            ]
        )

    @unary
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self._require_explicit_mode("load")
        await self._models.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @unary
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self._require_explicit_mode("unload")
        await self._models.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _require_explicit_mode(self, action: str) -> None:
        mode = self._settings.model_control_mode
        if mode != "explicit":
            raise FailedPrecondition(
                f"model {action} is only allowed in 'explicit' model control mode; this server runs in '{mode}'"
            )

    # -- inference --------------------------------------------------------------------------------------------

    @unary
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        result = await self._path.infer(request, _deadline(context))  # _infer's two lines: one coroutine fewer
        return grpc_reply(request.id, result.model_name, result.model_version, result.tensors)

    async def _infer(self, request: pb.ModelInferRequest, deadline: float | None) -> pb.ModelInferResponse:
        result = await self._path.infer(request, deadline)
        return grpc_reply(request.id, result.model_name, result.model_version, result.tensors)

    async def ModelStreamInfer(  # type: ignore[override]  # answers through context.write, not by yielding
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """Runs a stream's requests concurrently; each answer (or its error) is written as it completes.

        Errors travel in `error_message` and never end the stream, as Triton's clients expect.
        """
        write_lock = asyncio.Lock()
        slots = asyncio.Semaphore(STREAM_MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                reply = pb.ModelStreamInferResponse(infer_response=await self._infer(request, _deadline(context)))
            except ServiceError as err:
                reply = pb.ModelStreamInferResponse(error_message=f"{err.status.name}: {err}")
            except Exception:
                logger.exception("rpc=ModelStreamInfer request failed unexpectedly")
                reply = pb.ModelStreamInferResponse(error_message="INTERNAL: internal error; see the server log")
            finally:
                slots.release()
            async with write_lock:
                await context.write(reply)

        try:
            async for request in request_iterator:
                await slots.acquire()
                task = asyncio.create_task(answer(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    # -- extensions this server does not offer ---------------------------------------------------------------------
    # Explicit answers, so a client learns what is missing rather than meeting a bare UNIMPLEMENTED.

    SystemSharedMemoryStatus = _refusal("system shared memory is not supported: send tensors in the request")
    SystemSharedMemoryRegister = _refusal("system shared memory is not supported: send tensors in the request")
    SystemSharedMemoryUnregister = _refusal("system shared memory is not supported: send tensors in the request")
    CudaSharedMemoryStatus = _refusal("CUDA shared memory is not supported: send tensors in the request")
    CudaSharedMemoryRegister = _refusal("CUDA shared memory is not supported: send tensors in the request")
    CudaSharedMemoryUnregister = _refusal("CUDA shared memory is not supported: send tensors in the request")
    TraceSetting = _refusal("tracing is not supported; use the Prometheus metrics on the HTTP port")
    LogSettings = _refusal("log settings cannot be changed at run time; use --log-level")
