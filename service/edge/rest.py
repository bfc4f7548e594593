"""The HTTP/REST door's listener: the protocol layer's REST routes behind bearer tokens and CORS, on aiohttp.

Same settings as gRPC: TLS and mutual TLS from one SSL context, the same token store, and the same table of which
operations answer without a token (protocol/operations.py), looked up by the route a request matched. Request
bodies are bounded by max_message_bytes, as gRPC messages are (413 past it). What a web page could make a browser
send is checked first (browsers.py): the Host, the POST body's type and its origin.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from cnnserve.service.edge.auth import TokenStore
from cnnserve.service.edge.browsers import allowed_hosts, host_check, post_checks
from cnnserve.service.edge.page_files import page_routes
from cnnserve.service.edge.web import WebListener, start_listener
from cnnserve.service.protocol.operations import AccessPolicy, Operation
from cnnserve.service.protocol.rest import RestApi, Route
from cnnserve.service.protocol.rest_replies import error_reply, errors_as_json
from cnnserve.service.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[..., Awaitable[web.StreamResponse]]
RouteOperations = dict[web.AbstractRoute, Operation]  # each registered route -> the operation it performs
CORS_HEADERS = "Authorization, Content-Type, Inference-Header-Content-Length, Accept"


def build_app(
    settings: Settings, api: RestApi, tokens: TokenStore | None, on_refused: Callable[[], None]
) -> web.Application:
    operations: RouteOperations = {}
    middlewares: list[Middleware] = []
    hosts = allowed_hosts(settings)
    if hosts is not None:
        middlewares.append(host_check(hosts, error_reply))
    if settings.rest_cors_origins:
        middlewares.append(_cors(frozenset(settings.rest_cors_origins)))
    middlewares.append(post_checks(frozenset(settings.rest_cors_origins), error_reply))
    if tokens is not None:
        middlewares.append(_auth(tokens, AccessPolicy.of(settings), on_refused, operations))
    middlewares.append(errors_as_json)
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_message_bytes)
    page = [Route(d.method, d.path, d.handler, Operation.PAGE) for d in page_routes()]
    for route in [*api.routes(), *page]:
        operations.update(_register(app.router, route))
    return app


def _register(router: web.UrlDispatcher, route: Route) -> RouteOperations:
    """Adds `route` (a GET also answers HEAD, as aiohttp's add_get does) and tells which operation each added
    aiohttp route performs."""
    resource = router.add_resource(route.path)
    methods = ("HEAD", "GET") if route.method == "GET" else (route.method,)
    return {resource.add_route(method, route.handler): route.operation for method in methods}


def _auth(
    tokens: TokenStore, policy: AccessPolicy, on_refused: Callable[[], None], operations: RouteOperations
) -> Middleware:
    """Asks operations.py about the operation of the route the request matched. A request that matched no route
    performs no operation and is answered 404 or 405 with or without a token, as gRPC answers an unknown method
    UNIMPLEMENTED to anyone: the routes are the published protocol, and nothing runs."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return await handler(request)  # aiohttp's handler for a failed match raises that 404 or 405
        operation = operations.get(request.match_info.route)  # None (never registered here): a token, to fail closed
        if policy.needs_token(operation) and not tokens.check_header(request.headers.get("Authorization")):
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
        head_timeout_s=settings.rest_head_timeout_s,
        error_reply=error_reply,
    )
