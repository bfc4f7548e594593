"""cnnserve.service.edge.http against a real listener on 127.0.0.1:0, with urllib and raw sockets as clients."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cnnserve.service.edge.http import HttpServer, start_http_server
from cnnserve.service.edge.metrics import Metrics


class Flags:
    def __init__(self) -> None:
        self.live = True
        self.ready = False


def with_server(test: Callable[[HttpServer, Metrics, Flags], Awaitable[None]]) -> None:
    async def main() -> None:
        metrics, flags = Metrics(gpu=False), Flags()
        server = await start_http_server(
            "127.0.0.1", 0, metrics=metrics, live=lambda: flags.live, ready=lambda: flags.ready
        )
        try:
            await test(server, metrics, flags)
        finally:
            await server.close()

    asyncio.run(main())


async def get(server: HttpServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A blocking urllib request, run off the loop that serves it."""

    def call() -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers), err.read()

    return await asyncio.to_thread(call)


async def raw(server: HttpServer, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    await writer.wait_closed()
    return reply


def test_metrics_endpoint_serves_parsable_prometheus_text() -> None:
    async def test(server: HttpServer, metrics: Metrics, flags: Flags) -> None:
        metrics.for_model("digits", "1").observe_request("success", 0.003)
        status, headers, body = await get(server, "/metrics")
        assert status == 200
        assert headers["Content-Type"] == metrics.content_type
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        (sample,) = families["cnnserve_requests"].samples[:1]
        assert sample.labels == {"model": "digits", "version": "1", "outcome": "success"} and sample.value == 1
        assert "process_cpu_seconds" in families

    with_server(test)


def test_health_endpoints_follow_the_callbacks() -> None:
    async def test(server: HttpServer, metrics: Metrics, flags: Flags) -> None:
        assert (await get(server, "/v2/health/live"))[0] == 200
        assert (await get(server, "/v2/health/ready"))[0] == 503
        flags.ready = True
        assert (await get(server, "/v2/health/ready"))[0] == 200
        flags.live = flags.ready = False
        assert (await get(server, "/v2/health/live"))[0] == 503
        assert (await get(server, "/v2/health/ready?verbose=1"))[0] == 503

    with_server(test)


def test_unknown_paths_and_methods_are_refused() -> None:
    async def test(server: HttpServer, metrics: Metrics, flags: Flags) -> None:
        assert (await get(server, "/v2/models"))[0] == 404
        status, headers, _ = await get(server, "/metrics", method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        status, headers, body = await get(server, "/metrics", method="HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0

    with_server(test)


def test_oversized_and_malformed_requests_are_refused() -> None:
    async def test(server: HttpServer, metrics: Metrics, flags: Flags) -> None:
        huge = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * 9000 + b"\r\n\r\n"
        assert (await raw(server, huge)).startswith(b"HTTP/1.1 431 ")
        assert (await raw(server, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metr")
        writer.write_eof()  # hung up half-way: nothing to answer
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
        assert (await get(server, "/v2/health/live"))[0] == 200  # still serving

    with_server(test)


def test_a_failing_callback_answers_500_and_the_server_keeps_going() -> None:
    async def main() -> None:
        def broken() -> bool:
            raise RuntimeError("readiness check broke")

        server = await start_http_server("127.0.0.1", 0, metrics=Metrics(gpu=False), live=lambda: True, ready=broken)
        try:
            assert (await get(server, "/v2/health/ready"))[0] == 500
            assert (await get(server, "/v2/health/live"))[0] == 200
        finally:
            await server.close()

    asyncio.run(main())


def test_close_ends_idle_connections_and_frees_the_port() -> None:
    async def main() -> None:
        server = await start_http_server(
            "127.0.0.1", 0, metrics=Metrics(gpu=False), live=lambda: True, ready=lambda: True
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\n")  # never finishes its head
        await writer.drain()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(server.close(), timeout=2)
        assert await asyncio.wait_for(reader.read(), timeout=2) == b""
        writer.close()
        refused: Any = None
        try:
            await asyncio.open_connection("127.0.0.1", server.port)
        except OSError as err:
            refused = err
        assert refused is not None

    asyncio.run(main())
