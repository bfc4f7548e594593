"""The page at `/`: one HTML file, its script and its style, shipped inside the package (service/edge/page/) and
served by the REST door with no build step and nothing from elsewhere. The files are open to everyone, like any
static page; the API calls the page makes carry the tab's token when the server wants one.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

PAGE_PREFIX = "/page/"
FILES = {"page.js": "text/javascript", "page.css": "text/css"}
# Everything from this origin only; images the script builds from fetched blobs; no inline code, no frames.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip


def page_routes() -> list[web.RouteDef]:
    folder = resources.files("cnnserve.service.edge") / "page"
    index = (folder / "index.html").read_bytes()
    assets = {name: ((folder / name).read_bytes(), content_type) for name, content_type in FILES.items()}

    async def page(request: web.Request) -> web.Response:
        return _reply(index, "text/html")

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound(text=f"no page file {request.match_info['name']!r}")
        return _reply(*found)

    return [web.get("/", page), web.get(PAGE_PREFIX + "{name}", asset)]


def _reply(body: bytes, content_type: str) -> web.Response:
    reply = web.Response(body=body, content_type=content_type, charset="utf-8")
    reply.headers["Content-Security-Policy"] = POLICY
    reply.headers["X-Content-Type-Options"] = "nosniff"
    reply.headers["Cache-Control"] = "no-cache"  # a new server version's page is fetched, not a stale one
    return reply
