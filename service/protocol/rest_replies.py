"""How every REST answer is written: JSON documents, protobuf messages as Triton's REST JSON, and errors as
{"error": message} with their status and the headers that status calls for (Retry-After, WWW-Authenticate)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from google.protobuf.message import Message

from cnnserve.service.errors import ServiceError, Status
from cnnserve.service.protocol import rest_codec

logger = logging.getLogger(__name__)

JSON = "application/json"
RETRY_AFTER_S = "1"  # a full queue drains in milliseconds to seconds; Retry-After takes whole seconds

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_reply(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type=JSON)


def error_reply(status: int, message: str) -> web.Response:
    reply = web.Response(body=rest_codec.error_body(message), status=status, content_type=JSON)
    if status == Status.RESOURCE_EXHAUSTED.value:
        reply.headers["Retry-After"] = RETRY_AFTER_S
    if status == Status.UNAUTHENTICATED.value:
        reply.headers["WWW-Authenticate"] = "Bearer"
    return reply


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as {"error": ...}: ours with their status, aiohttp's own (404, 405, 413) with theirs."""
    try:
        return await handler(request)
    except ServiceError as err:
        return error_reply(err.status.value, str(err))
    except web.HTTPException as err:
        if err.status < 400:
            raise
        detail = err.text or ""  # aiohttp's own say "404: Not Found"; ours and 413's say what happened
        reply = error_reply(err.status, detail if detail and not detail.startswith(f"{err.status}:") else err.reason)
        if "Allow" in err.headers:
            reply.headers["Allow"] = err.headers["Allow"]
        if err.status in (408, 413):  # the rest of that body is not worth waiting for: hang up after the answer
            reply.force_close()
        return reply
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("event=rest_handler_failed path=%s", request.path)
        return error_reply(500, "internal error; see the server log")


def message_dict(message: Message) -> dict[str, Any]:
    """A protobuf message as Triton's REST JSON: proto field names, 64-bit integers as numbers (json_format would
    write them as strings, which tritonclient.http hands to callers unchanged), enums by name."""
    out: dict[str, Any] = {}
    for f in message.DESCRIPTOR.fields:
        value = getattr(message, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            out[f.name] = {k: _field_value(value_field, v) for k, v in value.items()}
        elif f.is_repeated:
            out[f.name] = [_field_value(f, v) for v in value]
        elif f.containing_oneof is not None or f.message_type is not None:
            if message.HasField(f.name):
                out[f.name] = _field_value(f, value)
        else:
            out[f.name] = _field_value(f, value)
    return out


def _field_value(f: Any, value: Any) -> Any:
    if f.message_type is not None:
        return message_dict(value)
    if f.enum_type is not None:
        return f.enum_type.values_by_number[value].name
    return value
