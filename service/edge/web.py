"""One aiohttp listener on the server's event loop (the same loop grpc.aio runs on): bind, report the port, close.

Both HTTP ports use it: REST on 8000, metrics and health on 8002. aiohttp gives HTTP/1.1 keep-alive and bounds the
request head (8 KiB a line, 128 headers); bodies are bounded per app (client_max_size). A head aiohttp cannot
parse is answered here, not by aiohttp's default page: 431 when a line is too long, else 400, in the listener's
own error format, without echoing the caller's bytes and logged at INFO (a stranger's garbage is not our error).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024  # request line and each header: a larger head is refused before it is buffered
SHUTDOWN_S = 1.0  # close(): replies being written get this long; everything is answered by the drain before
# After an early answer (408, 413) aiohttp reads and drops the unsent body for this long before hanging up, so the
# answer is not lost to a TCP reset; its 10 s default let a refused client hold the connection that long.
LINGER_S = 1.0
ErrorReply = Callable[[int, str], web.Response]  # (status, message) -> the listener's error response


def text_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


class _Handler(RequestHandler):
    """aiohttp's per-connection protocol with our answer to a request head it could not parse, and a deadline for
    each request head: from the connection's start, or from the first byte of a later request, the whole head must
    arrive within `head_timeout_s` or the connection is closed. aiohttp's keep-alive timer counts a head that
    trickles in as idle time, so alone it lets a client hold a connection for the whole keep-alive period by
    sending a byte now and then; the body has its own bound (rest_timeout_s, protocol/rest.py)."""

    def __init__(self, manager: web.Server, *, error_reply: ErrorReply, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._error_reply = error_reply
        self._head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count  # aiohttp counts each request head it has parsed
        super().data_received(data)
        if self._request_count != heads:
            self._disarm_head_timer()
        elif self._head_timer is None and not self._request_in_progress:
            self._arm_head_timer()  # the first bytes of the next request

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = asyncio.get_running_loop().call_later(self._head_timeout_s, self._head_late)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._request_in_progress and not self._messages:
            logger.info("event=http_head_timeout seconds=%g", self._head_timeout_s)
            self.force_close()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status == 500:  # a handler that raised past every middleware: aiohttp logs the traceback
            return super().handle_error(request, status, exc, message)
        too_long = isinstance(exc, LineTooLong)
        status = 431 if too_long else 400
        logger.info("event=http_bad_request status=%d error=%s", status, type(exc).__name__)
        # The parser never learnt the request's version and leaves HTTP/1.0; this server speaks 1.1.
        request._version = HttpVersion11
        reply = self._error_reply(status, f"request head over {MAX_LINE_BYTES} bytes a line" if too_long
                                  else "malformed HTTP request")  # fmt: skip
        reply.force_close()
        return reply


class _Server(web.Server):
    error_reply: ErrorReply = staticmethod(text_error)  # type: ignore[assignment]
    head_timeout_s: float = 10.0

    def __call__(self) -> RequestHandler:
        return _Handler(
            self, loop=self._loop, error_reply=self.error_reply, head_timeout_s=self.head_timeout_s, **self._kwargs
        )


class _Runner(web.AppRunner):
    def __init__(self, app: web.Application, error_reply: ErrorReply, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._error_reply = error_reply
        self._head_timeout_s = head_timeout_s

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app builds a plain Server; ours differs only in the protocol it makes for each connection.
        server.__class__ = _Server
        server.error_reply = self._error_reply  # type: ignore[attr-defined]
        server.head_timeout_s = self._head_timeout_s  # type: ignore[attr-defined]
        return server


class WebListener:
    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

    async def close(self) -> None:
        """Stop listening and close every connection (idle keep-alive ones too); frees the port."""
        await self._runner.cleanup()


async def start_listener(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    name: str,
    keepalive_s: float = 75.0,
    head_timeout_s: float = 10.0,
    error_reply: ErrorReply = text_error,
) -> WebListener:
    """Serve `app` on host:port (0: an ephemeral port, read it from `.port`); HTTPS with `ssl_context`."""
    runner = _Runner(
        app, error_reply, head_timeout_s, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_S,
        keepalive_timeout=keepalive_s, max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES,
        lingering_time=LINGER_S,
    )  # fmt: skip
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    logger.info("event=%s_listening host=%s port=%d tls=%s", name, host, site.port, ssl_context is not None)
    return WebListener(runner, site.port)
