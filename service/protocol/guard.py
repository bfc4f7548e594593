"""Malformed request bytes are the caller's fault: handlers that parse every request message themselves and
answer one that is not a valid protobuf of the method's type with INVALID_ARGUMENT.

Left to gRPC, such a message is answered UNKNOWN with the parser's exception text; here it gets the status every
other bad input gets, and the parser's words stay in the server. The cost is one Python call per message around
the same C++ parser.

Streaming calls (ModelStreamInfer, health Watch, reflection) are also counted per connection: a stream lasts as long
as its caller likes, so past `max_streams_per_connection` open on one connection the next is refused with
RESOURCE_EXHAUSTED, and no one connection holds the server-wide call limit. gRPC's own per-connection setting
(grpc.max_concurrent_streams) is not enforced by grpcio's server: five streams ran on one connection limited to two.
Unary calls end by themselves and are not counted, which keeps the hot path (ModelInfer) as it was.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

logger = logging.getLogger(__name__)

Parse = Callable[[bytes], Any]


class StreamsPerConnection:
    """Streaming calls open on each connection (by gRPC's peer address, one per TCP connection), at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def enter(self, peer: str) -> bool:
        """Counts one more stream on `peer`'s connection; False (nothing counted) when it holds `limit` already."""
        held = self._open.get(peer, 0)
        if held >= self.limit:
            return False
        self._open[peer] = held + 1
        return True

    def leave(self, peer: str) -> None:
        held = self._open.pop(peer) - 1
        if held:
            self._open[peer] = held


def guarded_service(
    service: Any, servicer: object, messages: Any, streams: StreamsPerConnection | None = None
) -> grpc.GenericRpcHandler:
    """The generic handler for `service` (a ServiceDescriptor) whose methods parse their own request bytes, and whose
    streaming methods count against `streams`.

    Built once at registration, so the per-call cost is one parse inside the handler's own coroutine (an
    interceptor would add a coroutine and a handler lookup to every call). `messages` is the generated module
    holding the request and response classes.
    """
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_type = getattr(messages, method.input_type.name)
        response_type = getattr(messages, method.output_type.name)
        make = _MAKERS[(method.client_streaming, method.server_streaming)]
        plain = make(
            getattr(servicer, method.name),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
        guarded = _guarded(plain, f"/{service.full_name}/{method.name}")
        streaming = method.client_streaming or method.server_streaming
        handlers[method.name] = _counted(guarded, streams) if streams is not None and streaming else guarded
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


_MAKERS = {  # (request_streaming, response_streaming) -> how grpc builds such a handler
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The same handler taking raw bytes: it parses them itself, so a parse failure is answered INVALID_ARGUMENT."""
    parse: Parse = handler.request_deserializer
    streaming_in, streaming_out = bool(handler.request_streaming), bool(handler.response_streaming)
    behavior = {
        (False, False): handler.unary_unary,
        (False, True): handler.unary_stream,
        (True, False): handler.stream_unary,
        (True, True): handler.stream_stream,
    }[(streaming_in, streaming_out)]

    async def parsed(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return parse(raw)
        except Exception as err:
            logger.info("event=malformed_request method=%s bytes=%d error=%s", method, len(raw), type(err).__name__)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid protobuf message for {method}"
            )

    async def requests(received: Any, context: grpc.aio.ServicerContext) -> Any:
        if not streaming_in:
            return await parsed(received, context)

        async def each() -> AsyncIterator[Any]:
            async for raw in received:
                yield await parsed(raw, context)

        return each()

    # Response-streaming behaviours are either async generators or coroutines that call context.write.
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):

        async def generator(received: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for reply in behavior(await requests(received, context), context):
                yield reply

        wrapped = generator
    elif streaming_in:

        async def coroutine(received: Any, context: grpc.aio.ServicerContext) -> Any:
            return await behavior(await requests(received, context), context)

        wrapped = coroutine
    else:  # the hot path (ModelInfer): parsed inline, one coroutine frame fewer per call than through requests()

        async def unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except Exception:
                request = await parsed(raw, context)  # logs and aborts
            return await behavior(request, context)

        wrapped = unary
    make = _MAKERS[(streaming_in, streaming_out)]
    return make(wrapped, request_deserializer=None, response_serializer=handler.response_serializer)


def _counted(handler: grpc.RpcMethodHandler, streams: StreamsPerConnection) -> grpc.RpcMethodHandler:
    """A streaming handler that holds one of its connection's stream slots while it runs."""
    streaming_in = bool(handler.request_streaming)
    behavior = handler.stream_stream if streaming_in else handler.unary_stream

    async def admitted(context: grpc.aio.ServicerContext) -> str:
        peer: str = context.peer()
        if not streams.enter(peer):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this connection already holds {streams.limit} streaming calls (max_streams_per_connection); "
                "end one, or open another connection",
            )
        return peer

    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):

        async def generator(received: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            peer = await admitted(context)
            try:
                async for reply in behavior(received, context):
                    yield reply
            finally:
                streams.leave(peer)

        wrapped = generator
    else:

        async def coroutine(received: Any, context: grpc.aio.ServicerContext) -> Any:
            peer = await admitted(context)
            try:
                return await behavior(received, context)
            finally:
                streams.leave(peer)

        wrapped = coroutine
    make = _MAKERS[(streaming_in, True)]
    return make(wrapped, request_deserializer=None, response_serializer=handler.response_serializer)
