"""The page's files over the REST door (the browser test, tests/page/, drives the page itself): served from the
package with a strict content policy, open without a token while every API call it makes still needs one."""

from __future__ import annotations

import http.client
import re
from pathlib import Path
from typing import Any

from tests import onnx_models

TOKEN = "page-files-token-0123456789"


def get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def test_the_page_and_its_files_are_served_open_and_the_api_stays_guarded(tmp_path: Path, start_server: Any) -> None:
    repo = tmp_path / "repo"
    onnx_models.write_classifier(repo)
    port = start_server(repo, auth_tokens=(TOKEN,)).server.rest_port
    status, headers, body = get(port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    # everything the page loads is its own: no CDN, no inline script
    sources = re.findall(rb'(?:src|href)="([^"]+)"', body)
    assert sources and all(s.startswith(b"/page/") or s == b"data:," for s in sources), sources
    assert b"<script>" not in body
    for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
        status, headers, body = get(port, f"/page/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
    status, _, body = get(port, "/page/../config.json")
    assert status == 404
    status, _, body = get(port, "/page/nope.js")
    assert status == 404 and b"nope.js" in body
    assert get(port, "/v2/models/classifier")[0] == 401
    assert get(port, "/v2/models/classifier", TOKEN)[0] == 200
