"""What a web page can make a visitor's browser send, and the REST door's answers to it.

A page on any site can POST to the server without the browser asking first (no CORS preflight) when the body is a
form or text/plain, or carries no Content-Type, and can read the answer when DNS rebinding puts the server's address
behind the page's own name. Three checks, each before any route runs:

- **Body types.** A POST body must say it is JSON, the binary extension's octet-stream, or a PNG/JPEG file, or say
  nothing (tritonclient.http sends no Content-Type): anything else gets 415. One exception: a form type from a client
  that names no origin, which no browser is; libcurl declares it by default, and so Triton's C++ client and
  perf_analyzer do for their non-infer POSTs.
- **Origin.** Browsers name the page's origin on every cross-origin POST; non-browser clients send none. A POST from
  an origin that is neither the server's own nor one of `rest_cors_origins` gets 403, so a body without a type from
  another site is refused too.
- **Host.** A server bound to loopback answers only requests addressed to a loopback name: a rebound name
  (`evil.example` resolving to 127.0.0.1) gets 400, so a page on it can neither read models nor run them. A server
  bound to a network address is reached by names it cannot know (`rest_allowed_hosts` lists them to check); there,
  tokens are the guard.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from cnnserve.service.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[..., Awaitable[web.StreamResponse]]
ErrorReply = Callable[[int, str], web.Response]

BODY_TYPES = ("application/json", "application/octet-stream", "image/png", "image/jpeg")
FORM = "application/x-www-form-urlencoded"
LOOPBACK_NAMES = ("localhost",)


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The host names requests may be addressed to; None: any."""
    if settings.rest_allowed_hosts:
        return frozenset(h.lower() for h in settings.rest_allowed_hosts)
    return None if not is_loopback(settings.host) else frozenset()  # empty: loopback names only


def is_loopback(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def host_check(allowed: frozenset[str], error_reply: ErrorReply) -> Middleware:
    """400 for a request addressed to a name not in `allowed` (when empty: not a loopback name)."""

    @web.middleware
    async def host(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = (request.url.host or "").lower()
        if not (name in allowed if allowed else is_loopback(name)):
            return error_reply(400, f"this server does not answer to the host name {name[:64]!r}; "
                                    "address it by a name it is configured for (rest_allowed_hosts)")  # fmt: skip
        return await handler(request)

    return host


def post_checks(cors_origins: frozenset[str], error_reply: ErrorReply) -> Middleware:
    """415 for a POST body of another type, 403 for a POST from another site's page (see the module's words)."""

    @web.middleware
    async def checks(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST":
            return await handler(request)
        declared = request.headers.get("Content-Type")
        origin = request.headers.get("Origin")
        if declared is not None and request.content_type not in _accepted(origin):
            return error_reply(415, f"request body of type {request.content_type[:64]!r} is not accepted; send "
                                    f"{', '.join(BODY_TYPES)}")  # fmt: skip
        if origin is not None and not _same_origin(request, origin) and not _listed(origin, cors_origins):
            return error_reply(403, f"requests from pages at {origin[:100]!r} are refused; the server lists the "
                                    "origins it serves in rest_cors_origins")  # fmt: skip
        return await handler(request)

    return checks


def _accepted(origin: str | None) -> tuple[str, ...]:
    """The body types a POST may declare. A client that names no origin is no browser (browsers name one on every
    POST), so the form type libcurl sends by default is taken from it: Triton's C++ HTTP client, perf_analyzer's
    included, declares its load, unload and shared-memory bodies so."""
    return BODY_TYPES if origin is not None else (*BODY_TYPES, FORM)


def _same_origin(request: web.Request, origin: str) -> bool:
    return origin == f"{request.scheme}://{request.host}"


def _listed(origin: str, cors_origins: frozenset[str]) -> bool:
    return "*" in cors_origins or origin in cors_origins
