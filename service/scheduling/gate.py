"""The admission gate: counts requests in progress and closes for draining at shutdown.

Separate from the batcher because a request is "accepted" from the moment its handler starts (decode included),
and shutdown must wait for every accepted request, whichever model it is for.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from cnnserve.service.errors import ModelNotReady


class RequestGate:
    def __init__(self) -> None:
        self._in_progress = 0
        self._admitted = 0
        self._closed = False
        self._idle: asyncio.Event | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_progress(self) -> int:
        return self._in_progress

    @property
    def admitted(self) -> int:
        """Requests admitted since start: with `in_progress`, what shutdown tells about the work it accepted."""
        return self._admitted

    def admit(self) -> RequestGate:
        """`with gate.admit():` around a request's whole handling. A plain context manager (no generator, no
        coroutine): it runs on every request."""
        if self._closed:
            raise ModelNotReady("server is shutting down: not accepting new requests")
        return self

    def __enter__(self) -> None:
        self._in_progress += 1
        self._admitted += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
                 ) -> None:  # fmt: skip
        self._in_progress -= 1
        if self._in_progress == 0 and self._idle is not None:
            self._idle.set()

    def close(self) -> None:
        self._closed = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Waits until no admitted request remains; False when the timeout came first."""
        if self._in_progress == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
