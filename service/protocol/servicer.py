"""GRPCInferenceService: each RPC converts the request, calls the data plane (dataplane.py), converts the answer back.

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

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.service import tracing
from cnnserve.service.errors import ServiceError
from cnnserve.service.protocol.dataplane import DataPlane
from cnnserve.service.wire.encode import grpc_reply

logger = logging.getLogger(__name__)

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


def _parameter(value: pb.ModelRepositoryParameter) -> object:
    """The value a repository parameter holds (None when it holds none)."""
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _setting(value: pb.LogSettingsRequest.SettingValue) -> object:
    """The value a log setting holds (None when it holds none: the setting stays as it is)."""
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    # -- health and metadata -------------------------------------------------------------------------------

    @unary
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._plane.live())

    @unary
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready())

    @unary
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version))

    @unary
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return self._plane.server_metadata()

    @unary
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return self._plane.model_metadata(request.name, request.version)

    @unary
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        return self._plane.model_config(request.name, request.version)

    @unary
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        return self._plane.model_statistics(request.name, request.version)

    # -- repository -------------------------------------------------------------------------------------------

    @unary
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        return await self._plane.repository_index(ready_only=request.ready)

    @unary
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        parameters = {key: _parameter(value) for key, value in request.parameters.items()}
        await self._plane.load(request.model_name, parameters)
        return pb.RepositoryModelLoadResponse()

    @unary
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self._plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- logging ----------------------------------------------------------------------------------------------

    @unary
    async def LogSettings(self, request: pb.LogSettingsRequest, context: Any) -> pb.LogSettingsResponse:
        changes = {name: _setting(value) for name, value in request.settings.items()}
        return self._plane.log_settings(changes)

    # -- inference --------------------------------------------------------------------------------------------

    @unary
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        if tracing.tracer is not None:
            return await self._traced_infer("ModelInfer", request, context)
        result = await self._plane.infer(request, _deadline(context))  # _infer's two lines: one coroutine fewer
        return grpc_reply(request.id, result.model_name, result.model_version, result.tensors)

    async def _infer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        if tracing.tracer is not None:
            return await self._traced_infer("ModelStreamInfer", request, context)
        result = await self._plane.infer(request, _deadline(context))
        return grpc_reply(request.id, result.model_name, result.model_version, result.tensors)

    async def _traced_infer(self, method: str, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ModelInferResponse:  # fmt: skip
        """An infer inside its request span, a child of the caller's when its metadata carries a `traceparent`."""
        if not self._plane.traces.sample(request.model_name):
            result = await self._plane.infer(request, _deadline(context))
            return grpc_reply(request.id, result.model_name, result.model_version, result.tensors)
        carrier = {k: v for k, v in context.invocation_metadata() or () if k in tracing.CARRIER_KEYS}
        attributes = {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": method}
        with tracing.request(method, carrier, attributes) as span:
            result = await self._plane.infer(request, _deadline(context), span=span)
            span.add_event("answered")  # the outputs are ready; from here to the span's end, the reply's encoding
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
                try:
                    reply = pb.ModelStreamInferResponse(infer_response=await self._infer(request, context))
                except ServiceError as err:
                    reply = pb.ModelStreamInferResponse(error_message=f"{err.status.name}: {err}")
                except Exception:
                    logger.exception("rpc=ModelStreamInfer request failed unexpectedly")
                    reply = pb.ModelStreamInferResponse(error_message="INTERNAL: internal error; see the server log")
                async with write_lock:
                    await context.write(reply)
            finally:
                # Only once the reply is written: a client that never reads then holds its slots, and the stream
                # stops being read, rather than replies piling up in memory without bound.
                slots.release()

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

    # -- shared memory --------------------------------------------------------------------------------------------

    @unary
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        return self._plane.system_shared_memory_status(request.name)

    @unary
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self._plane.register_system_shared_memory(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @unary
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._plane.unregister_system_shared_memory(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @unary
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Any
    ) -> pb.CudaSharedMemoryStatusResponse:
        return self._plane.cuda_shared_memory_status(request.name)

    @unary
    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: Any
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self._plane.register_cuda_shared_memory(request.name)
        return pb.CudaSharedMemoryRegisterResponse()

    @unary
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Any
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self._plane.unregister_cuda_shared_memory(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    # -- traces ---------------------------------------------------------------------------------------------------

    @unary
    async def TraceSetting(self, request: pb.TraceSettingRequest, context: Any) -> pb.TraceSettingResponse:
        changes = {name: list(setting.value) for name, setting in request.settings.items()}
        response = pb.TraceSettingResponse()
        for name, values in self._plane.trace_setting(request.model_name, changes).items():
            response.settings[name].value.extend(values)
        return response
