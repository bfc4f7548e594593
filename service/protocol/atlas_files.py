"""The REST door's atlas files: `GET /v2/models/{model}[/versions/{version}]/atlas/{file}` answers a plain file of a
loaded version's `atlas/` folder (contracts/features.py), PNG or JSON, and nothing outside that folder."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web

from cnnserve.contracts.features import ATLAS_DIR, ATLAS_PARAMETER
from cnnserve.service.errors import ModelNotFound
from cnnserve.service.registry.registry import ModelManager

CONTENT_TYPES = {".png": "image/png", ".json": "application/json"}
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # one name, no folder: what the publisher writes


class AtlasFiles:
    def __init__(self, models: ModelManager) -> None:
        self._models = models

    async def get(self, request: web.Request) -> web.Response:
        name, version = request.match_info["model"], request.match_info.get("version", "")
        served = self._models.get(name, version)  # ModelNotFound (404) or ModelNotReady (503)
        if ATLAS_PARAMETER not in served.spec.parameters:
            raise ModelNotFound(f"model '{name}' version {served.version} has no atlas (config parameter "
                                f"'{ATLAS_PARAMETER}')")  # fmt: skip
        file = request.match_info["file"]
        content_type = CONTENT_TYPES.get(Path(file).suffix)
        if not FILE_NAME.fullmatch(file) or content_type is None or ".." in file:
            raise ModelNotFound(f"model '{name}' version {served.version}: no atlas file {file!r} (atlas files are "
                                f"one name ending in {', '.join(CONTENT_TYPES)})")  # fmt: skip
        body = await asyncio.to_thread(self._read, name, served.version, file)
        return web.Response(body=body, content_type=content_type)

    def _read(self, name: str, version: int, file: str) -> bytes:
        """The file's bytes; ModelNotFound unless it is a plain file inside the version's atlas folder once every
        symlink is resolved. Runs in a worker thread: it touches the disk."""
        folder = self._models.repository.model_dir(name) / str(version) / ATLAS_DIR
        missing = ModelNotFound(f"model '{name}' version {version} has no atlas file {file!r}")
        try:
            root, path = folder.resolve(strict=True), (folder / file).resolve(strict=True)
        except OSError:
            raise missing from None
        if not root.is_relative_to(self._models.repository.root) or path.parent != root or not path.is_file():
            raise missing
        return path.read_bytes()
