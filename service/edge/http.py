"""The HTTP listener on the metrics port: GET /metrics, /v2/health/live and /v2/health/ready; nothing else.

A few dozen lines of asyncio instead of a web framework: one request per connection (Connection: close), request
head (and a TLS handshake) bounded to 8 KiB and 10 s, so a slow or hostile client cannot hold the listener. With an
`authorize` check, a request without a valid `Authorization: Bearer` header gets 401.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from cnnserve.service.edge.metrics import Metrics

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT_S = 10.0
TEXT = "text/plain; charset=utf-8"
Reply = tuple[HTTPStatus, str, bytes]  # status, content type, body


class HttpServer:
    def __init__(self, server: asyncio.Server, connections: dict[asyncio.Task[Any], asyncio.StreamWriter]) -> None:
        self._server, self._connections = server, connections
        self.port: int = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening; hang up on connections still sending their request (replies being written finish)."""
        self._server.close()
        # Closing the transport (not cancelling the task) ends a handler cleanly: its read sees end-of-file.
        for writer in list(self._connections.values()):
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()


async def start_http_server(
    host: str,
    port: int,
    *,
    metrics: Metrics,
    live: Callable[[], bool],
    ready: Callable[[], bool],
    ssl_context: ssl.SSLContext | None = None,
    authorize: Callable[[str | None], bool] | None = None,
) -> HttpServer:
    """Listen on host:port (0 = an ephemeral port; read it from `.port`); HTTPS with `ssl_context`; `authorize`
    receives each request's Authorization header (None when absent)."""
    connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}  # handlers reading a request head

    def respond(method: str, path: str, head: bytes) -> Reply:
        if authorize is not None and not authorize(_header(head, b"authorization")):
            return HTTPStatus.UNAUTHORIZED, TEXT, b"a valid bearer token is required\n"
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, TEXT, b"method not allowed\n"
        if path == "/metrics":
            return HTTPStatus.OK, metrics.content_type, metrics.render()
        if path in ("/v2/health/live", "/v2/health/ready"):
            ok = live() if path == "/v2/health/live" else ready()
            return (HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE), TEXT, b""
        return HTTPStatus.NOT_FOUND, TEXT, b"not found\n"

    def answer(head: bytes | None) -> tuple[str, Reply]:
        if head is None:
            return "GET", (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, TEXT, b"request head over 8 KiB\n")
        line = _request_line(head)
        if line is None:
            return "GET", (HTTPStatus.BAD_REQUEST, TEXT, b"bad request\n")
        method, path = line
        try:
            return method, respond(method, path, head)
        except Exception:
            logger.exception("event=http_handler_failed path=%s", path)
            return method, (HTTPStatus.INTERNAL_SERVER_ERROR, TEXT, b"internal error\n")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # the stream server runs each connection in a task of its own
        connections[task] = writer
        try:
            try:
                head: bytes | None = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            except asyncio.LimitOverrunError:
                head = None
            finally:
                del connections[task]  # from here on, close() lets the reply finish
            method, (status, content_type, body) = answer(head)
            head_lines = [
                f"HTTP/1.1 {status.value} {status.phrase}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}",
                "Connection: close",
                *(["Allow: GET, HEAD"] if status is HTTPStatus.METHOD_NOT_ALLOWED else []),
                *(["WWW-Authenticate: Bearer"] if status is HTTPStatus.UNAUTHORIZED else []),
            ]
            writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode("ascii"))
            if method != "HEAD":
                writer.write(body)
            await asyncio.wait_for(writer.drain(), HEAD_TIMEOUT_S)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client went away, never finished its request, stopped reading the reply, or broke TLS
        finally:
            writer.close()

    handshake_s = HEAD_TIMEOUT_S if ssl_context is not None else None
    server = await asyncio.start_server(
        handle, host, port, limit=MAX_HEAD_BYTES, ssl=ssl_context, ssl_handshake_timeout=handshake_s
    )
    http = HttpServer(server, connections)
    logger.info("event=http_listening host=%s port=%d tls=%s", host, http.port, ssl_context is not None)
    return http


def _request_line(head: bytes) -> tuple[str, str] | None:
    """(method, path without query) from an HTTP/1.x request head, or None when malformed."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return None
    return parts[0], parts[1].split("?", 1)[0]


def _header(head: bytes, name: bytes) -> str | None:
    """The value of the first header called `name` (lower case), or None."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None
