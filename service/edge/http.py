"""The listener on the metrics port: GET /metrics, /v2/health/live and /v2/health/ready (as the REST port answers
them); nothing else.

aiohttp (service/edge/web.py) on the server's event loop, as the REST port: keep-alive, the request head bounded to
8 KiB per line (431 past it), no body accepted. With tokens on, what needs one follows the operations table
(protocol/operations.py): the probes and /metrics are open while auth_open_health is, /metrics closed by auth_metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from cnnserve.service.edge.browsers import host_check
from cnnserve.service.edge.metrics import Metrics
from cnnserve.service.edge.web import WebListener, start_listener
from cnnserve.service.protocol.operations import AccessPolicy, Operation

logger = logging.getLogger(__name__)

TEXT = "text/plain"
JSON = "application/json"
HttpServer = WebListener  # the name tests and the server know this listener by


async def start_http_server(
    host: str,
    port: int,
    *,
    metrics: Metrics,
    live: Callable[[], bool],
    ready: Callable[[], bool],
    ssl_context: ssl.SSLContext | None = None,
    authorize: Callable[[str | None], bool] | None = None,
    policy: AccessPolicy | None = None,
    hosts: frozenset[str] | None = None,
    head_timeout_s: float = 10.0,
) -> WebListener:
    """Listen on host:port (0 = an ephemeral port; read it from `.port`); HTTPS with `ssl_context`. With `authorize`
    (which receives each request's Authorization header, None when absent), the operations `policy` says need a
    token get 401 without one. `hosts`: the names requests may address (browsers.py; None: any)."""
    operations: dict[web.AbstractRoute, Operation] = {}

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        operation = operations.get(request.match_info.route)
        closed = policy is None or policy.needs_token(operation)
        if authorize is not None and closed and not authorize(request.headers.get("Authorization")):
            return web.Response(
                status=401,
                text="a valid bearer token is required\n",
                content_type=TEXT,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed:
            return web.Response(
                status=405, text="method not allowed\n", content_type=TEXT, headers={"Allow": "GET, HEAD"}
            )
        except web.HTTPNotFound:
            return web.Response(status=404, text="not found\n", content_type=TEXT)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("event=http_handler_failed path=%s", request.path)
            return web.Response(status=500, text="internal error\n", content_type=TEXT)

    async def scrape(request: web.Request) -> web.Response:
        body, content_type = metrics.render(request.headers.get("Accept", ""))
        reply = web.Response(body=body)
        reply.headers["Content-Type"] = content_type  # with its version parameter, as prometheus_client says
        return reply

    def probe(key: str, check: Callable[[], bool]) -> Callable[[web.Request], Awaitable[web.Response]]:
        """200 or 503, and the REST port's body: {"live": ...} or {"ready": ...} (protocol/rest.py)."""

        async def answer(request: web.Request) -> web.Response:
            ok = check()
            return web.Response(status=200 if ok else 503, text=json.dumps({key: ok}), content_type=JSON)

        return answer

    checks = [] if hosts is None else [host_check(hosts, lambda status, message: web.Response(
        status=status, text=message + "\n", content_type=TEXT))]  # fmt: skip
    app = web.Application(middlewares=[*checks, guard], client_max_size=1024)  # probes and scrapes send no body
    for path, handler, operation in (("/metrics", scrape, Operation.METRICS),
                                     ("/v2/health/live", probe("live", live), Operation.LIVE),
                                     ("/v2/health/ready", probe("ready", ready), Operation.READY)):  # fmt: skip
        resource = app.router.add_resource(path)
        for method in ("HEAD", "GET"):
            operations[resource.add_route(method, handler)] = operation
    return await start_listener(app, host, port, ssl_context=ssl_context, name="http", head_timeout_s=head_timeout_s)
