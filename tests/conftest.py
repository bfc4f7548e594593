"""Shared fixtures: real servers on ephemeral loopback ports, each in its own thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cnnserve.service.edge.server import InferenceServer
from cnnserve.service.settings import Settings


class ServerThread:
    """Runs an InferenceServer on a private event loop so tests can use blocking clients against it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.server = InferenceServer(settings)
        self._thread = threading.Thread(target=self.loop.run_forever, name="server-loop", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def stop(self, grace_s: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        self.call(self.server.stop(grace_s))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.server.rest_port}"

    @property
    def rest_address(self) -> str:
        return f"127.0.0.1:{self.server.rest_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"


def loopback_settings(repo: Path, **overrides: Any) -> Settings:
    return replace(
        Settings(
            model_repository=repo,
            host="127.0.0.1",
            grpc_port=0,
            http_port=0,
            rest_port=0,
            execution_providers=("cpu",),
            grace_period_s=5.0,
        ),
        **overrides,
    )


@pytest.fixture
def start_server() -> Iterator[Any]:
    """Factory: start_server(repo, **settings) -> a running ServerThread, stopped after the test."""
    started: list[ServerThread] = []

    def start(repo: Path, **overrides: Any) -> ServerThread:
        thread = ServerThread(loopback_settings(repo, **overrides)).__enter__()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()
