"""One aiohttp listener on the server's event loop (the same loop grpc.aio runs on): bind, report the port, close.

Both HTTP ports use it: REST on 8000, metrics and health on 8002. aiohttp gives HTTP/1.1 keep-alive and bounds the
request head (line and header sizes); bodies are bounded per app (client_max_size).
"""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 8 * 1024  # request line and each header: a larger head is refused before it is buffered
SHUTDOWN_S = 1.0  # close(): replies being written get this long; everything is answered by the drain before


class WebListener:
    def __init__(self, runner: web.AppRunner, site: web.TCPSite, port: int) -> None:
        self._runner, self._site = runner, site
        self.port = port

    async def close(self) -> None:
        """Stop listening and close every connection (idle keep-alive ones too); frees the port."""
        await self._runner.cleanup()


async def start_listener(
    app: web.Application, host: str, port: int, *, ssl_context: ssl.SSLContext | None, name: str,
    keepalive_s: float = 75.0,
) -> WebListener:
    """Serve `app` on host:port (0: an ephemeral port, read it from `.port`); HTTPS with `ssl_context`."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_S,
        keepalive_timeout=keepalive_s, max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES,
    )  # fmt: skip
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    server = site._server  # aiohttp keeps the bound socket here; port 0 needs it read back
    sockets = getattr(server, "sockets", None)  # asyncio's or uvloop's Server: both have them
    assert sockets, "TCPSite.start() binds before it returns"
    bound: int = sockets[0].getsockname()[1]
    logger.info("event=%s_listening host=%s port=%d tls=%s", name, host, bound, ssl_context is not None)
    return WebListener(runner, site, bound)
