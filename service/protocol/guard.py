"""Malformed request bytes are the caller's fault: handlers that parse every request message themselves and
answer one that is not a valid protobuf of the method's type with INVALID_ARGUMENT.

Left to gRPC, such a message is answered UNKNOWN with the parser's exception text; here it gets the status every
other bad input gets, and the parser's words stay in the server. The cost is one Python call per message around
the same C++ parser.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

logger = logging.getLogger(__name__)

Parse = Callable[[bytes], Any]


def guarded_service(service: Any, servicer: object, messages: Any) -> grpc.GenericRpcHandler:
    """The generic handler for `service` (a ServiceDescriptor) whose methods parse their own request bytes.

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
        handlers[method.name] = _guarded(plain, f"/{service.full_name}/{method.name}")
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
