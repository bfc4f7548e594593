"""The REST door's atlas files: a loaded version's atlas/ folder over HTTP, its 404s, traversal refused, tokens."""

from __future__ import annotations

import http.client
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cnnserve.contracts.features import ATLAS_DIR, ATLAS_INDEX, ATLAS_PARAMETER
from tests import onnx_models
from tests.conftest import ServerThread

TOKEN = "tok-atlas-5b7e1c90d2"
INDEX = {"model": "classifier", "image_size": [4, 4], "top_k": 9, "layers": []}


def sprite_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8, 4), 200).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """`classifier` (versions 1 and 2, each with its own atlas) and `plain` (no atlas); a secret beside them."""
    repo = tmp_path / "repo"
    for version in (1, 2):
        onnx_models.write_classifier(
            repo,
            version=version,
            version_policy={"all": {}},
            parameters={ATLAS_PARAMETER: f"{ATLAS_DIR}/{ATLAS_INDEX}"},
        )
        atlas = repo / "classifier" / str(version) / ATLAS_DIR
        atlas.mkdir()
        (atlas / ATLAS_INDEX).write_text(json.dumps({**INDEX, "version": version}))
        (atlas / "block1-optimised.png").write_bytes(sprite_png())
    onnx_models.write_classifier(repo, name="plain")
    (tmp_path / "secret.json").write_text('{"secret": true}')
    os.symlink(tmp_path / "secret.json", repo / "classifier" / "2" / ATLAS_DIR / "link.json")
    return repo


def get(server: ServerThread, path: str, token: str | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, the path sent exactly as written (no client-side normalising)."""
    host, port = server.rest_address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        reply = connection.getresponse()
        return reply.status, reply.getheader("Content-Type", ""), reply.read()
    finally:
        connection.close()


def test_a_version_serves_its_atlas_index_and_sprites(repo: Path, start_server: Any) -> None:
    server = start_server(repo)
    for path, version in [("/v2/models/classifier/versions/1/atlas/index.json", 1),
                          ("/v2/models/classifier/atlas/index.json", 2)]:  # fmt: skip  # no version: the newest
        status, content_type, body = get(server, path)
        assert status == 200 and content_type.startswith("application/json")
        assert json.loads(body) == {**INDEX, "version": version}
    status, content_type, body = get(server, "/v2/models/classifier/versions/2/atlas/block1-optimised.png")
    assert (status, content_type) == (200, "image/png")
    assert body == sprite_png() and Image.open(io.BytesIO(body)).size == (8, 4)


def test_the_config_says_the_model_has_an_atlas(repo: Path, start_server: Any) -> None:
    server = start_server(repo)
    status, _, body = get(server, "/v2/models/classifier/config")
    assert status == 200
    assert json.loads(body)["parameters"][ATLAS_PARAMETER] == {"string_value": f"{ATLAS_DIR}/{ATLAS_INDEX}"}
    _, _, plain = get(server, "/v2/models/plain/config")
    assert ATLAS_PARAMETER not in json.loads(plain)["parameters"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nobody/atlas/index.json",  # no such model
        "/v2/models/classifier/versions/7/atlas/index.json",  # no such version
        "/v2/models/classifier/atlas/missing.png",  # no such file
        "/v2/models/classifier/atlas/model.onnx",  # not an atlas file type
        "/v2/models/plain/atlas/index.json",  # a model without an atlas
        "/v2/models/classifier/atlas/link.json",  # a symlink out of the folder
    ],
)
def test_what_is_not_an_atlas_file_is_404_with_an_error(repo: Path, start_server: Any, path: str) -> None:
    status, content_type, body = get(start_server(repo), path)
    assert status == 404 and content_type.startswith("application/json")
    assert json.loads(body)["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/classifier/atlas/../config.json",
        "/v2/models/classifier/atlas/..%2Fconfig.json",
        "/v2/models/classifier/atlas/%2E%2E%2F%2E%2E%2Fsecret.json",
        "/v2/models/classifier/versions/2/atlas/..%2F..%2F..%2Fsecret.json",
        "/v2/models/classifier/atlas/%2Fetc%2Fpasswd",
        "/v2/models/classifier/atlas/..",
    ],
)
def test_traversal_out_of_the_atlas_folder_is_refused(repo: Path, start_server: Any, path: str) -> None:
    status, _, body = get(start_server(repo), path)
    assert status in (400, 404)
    assert b'"secret": true' not in body and b"max_batch_size" not in body  # neither file's content


def test_with_tokens_on_an_atlas_file_needs_the_token(repo: Path, start_server: Any) -> None:
    server = start_server(repo, auth_tokens=(TOKEN,))
    path = "/v2/models/classifier/atlas/block1-optimised.png"
    assert get(server, path)[0] == 401
    assert get(server, path, token="not-the-token")[0] == 401
    assert get(server, path, token=TOKEN)[:2] == (200, "image/png")
