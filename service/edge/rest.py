"""The HTTP/REST door's listener: the protocol layer's REST routes behind bearer tokens and CORS, on aiohttp.

Same settings as gRPC: TLS and mutual TLS from one SSL context, the same token store, health open to probes when
auth_open_health says so. Request bodies are bounded by max_message_bytes, as gRPC messages are (413 past it).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from cnnserve.service.edge.auth import TokenStore
from cnnserve.service.edge.page_files import is_page_path, page_routes
from cnnserve.service.edge.web import WebListener, start_listener
from cnnserve.service.protocol.rest import RestApi, error_reply, errors_as_json
from cnnserve.service.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes and load balancers call these without a token when auth_open_health is on, as on gRPC.
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
CORS_HEADERS = "Authorization, Content-Type, Inference-Header-Content-Length, Accept"


def build_app(
    settings: Settings, api: RestApi, tokens: TokenStore | None, on_refused: Callable[[], None]
) -> web.Application:
    middlewares: list[Callable[..., Awaitable[web.StreamResponse]]] = []
    if settings.rest_cors_origins:
        middlewares.append(_cors(frozenset(settings.rest_cors_origins)))
    if tokens is not None:
        middlewares.append(_auth(tokens, settings.auth_open_health, on_refused))
    middlewares.append(errors_as_json)
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_message_bytes)
    app.add_routes(api.routes())
    app.add_routes(page_routes())
    return app


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.endswith("/ready")


def _static(path: str) -> bool:
    """The page's own files: a browser fetches them before the page can ask for a token."""
    return is_page_path(path)


Middleware = Callable[..., Awaitable[web.StreamResponse]]


def _auth(tokens: TokenStore, open_health: bool, on_refused: Callable[[], None]) -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        exempt = _static(request.path) or (open_health and _open(request.path))
        if not exempt and not tokens.check_header(request.headers.get("Authorization")):
            on_refused()
            return error_reply(401, "a valid bearer token is required (Authorization: Bearer <token>)")
        return await handler(request)

    return auth


def _cors(origins: frozenset[str]) -> Middleware:
    """Allows the listed origins ('*': any); preflight OPTIONS answered here, before routing and tokens."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and ("*" in origins or origin in origins)
        if request.method == "OPTIONS" and allowed and "Access-Control-Request-Method" in request.headers:
            reply: web.StreamResponse = web.Response(status=204)
            reply.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            reply.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            reply.headers["Access-Control-Max-Age"] = "600"
        else:
            reply = await handler(request)
        if allowed:
            assert origin is not None
            reply.headers["Access-Control-Allow-Origin"] = origin
            reply.headers["Access-Control-Expose-Headers"] = "Inference-Header-Content-Length, Retry-After"
            reply.headers["Vary"] = "Origin"
        return reply

    return cors


async def start_rest_server(
    settings: Settings, app: web.Application, port: int, ssl_context: ssl.SSLContext | None
) -> WebListener:
    return await start_listener(
        app,
        settings.host,
        port,
        ssl_context=ssl_context,
        name="rest",
        keepalive_s=settings.rest_keepalive_s,
        error_reply=error_reply,
    )
