"""Bearer-token authentication: the accepted tokens (settings and a token file that is re-read when it changes) and
the gRPC server interceptor that refuses calls without a valid token with UNAUTHENTICATED.

Tokens are kept only as SHA-256 digests and compared with hmac.compare_digest against every accepted digest, so
neither the time taken nor a log line tells anything about them. Which methods answer without a token is decided by
their operation (protocol/operations.py), the table the REST door uses too: health checks and readiness may stay
open by a setting; streams (health Watch, reflection), inference, metadata and repository calls never do.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

from cnnserve.service.protocol.operations import GRPC_METHODS, AccessPolicy
from cnnserve.service.settings import ConfigError

logger = logging.getLogger(__name__)

SCHEME = "bearer"
REFUSAL = "a valid bearer token is required in the 'authorization' metadata"
LOG_EVERY_S = 10.0  # refusals are counted; a line at most this often, so a flood of bad calls cannot flood the log

Metadata = Iterable[tuple[str, str | bytes]]


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


class TokenStore:
    """The accepted tokens. `tokens` are fixed; `token_file` is checked (stat) at every call and re-read when its
    size, mtime or inode changed, so replacing the file rotates tokens at once. A file that cannot be read after
    start-up accepts none of its tokens (fail closed) until it can."""

    def __init__(self, tokens: Sequence[str] = (), token_file: Path | None = None) -> None:
        self._fixed = [_digest(t) for t in tokens if t]
        self._file = token_file
        self._file_digests: list[bytes] = []
        self._stamp: tuple[int, int, int] | None = None
        if token_file is not None:
            try:
                self._reload(os.stat(token_file))
            except OSError as err:
                raise ConfigError(f"auth_token_file {token_file}: {err.strerror or err}") from None
        if not self._digests():
            logger.warning("event=auth_no_tokens every call that needs a token will be refused")

    def check(self, presented: str | bytes) -> bool:
        """True when `presented` is an accepted token; the time taken does not depend on which, or how close."""
        self._refresh()
        wanted = _digest(presented)
        found = False
        for digest in self._digests():  # no early exit: every accepted token is compared
            found |= hmac.compare_digest(wanted, digest)
        return found

    def check_header(self, value: str | bytes | None) -> bool:
        """Checks an `authorization` value of the form "Bearer <token>" (scheme in any case)."""
        if value is None:
            return False
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        return scheme.lower() == SCHEME and bool(token.strip()) and self.check(token.strip())

    def _digests(self) -> list[bytes]:
        return self._fixed + self._file_digests

    def _refresh(self) -> None:
        if self._file is None:
            return
        try:
            stat = os.stat(self._file)
        except OSError as err:
            if self._stamp is not None:
                logger.error("event=auth_token_file_unreadable path=%s error=%s", self._file, err.strerror)
                self._file_digests, self._stamp = [], None
            return
        if (stat.st_size, stat.st_mtime_ns, stat.st_ino) != self._stamp:
            self._reload(stat)

    def _reload(self, stat: os.stat_result) -> None:
        assert self._file is not None
        try:
            lines = self._file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            logger.error("event=auth_token_file_unreadable path=%s error=%s", self._file, type(err).__name__)
            self._file_digests, self._stamp = [], None
            return
        tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        self._file_digests = [_digest(t) for t in tokens]
        first = self._stamp is None
        self._stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        logger.info(
            "event=auth_tokens_%s path=%s tokens=%d", "loaded" if first else "reloaded", self._file, len(tokens)
        )


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


async def _refuse_unary(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)


async def _refuse_stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)


# Request bytes are not even parsed (no deserializer) for a caller without a token.
_REFUSERS = {
    (False, False): grpc.unary_unary_rpc_method_handler(_refuse_unary),
    (False, True): grpc.unary_stream_rpc_method_handler(_refuse_unary),
    (True, False): grpc.stream_unary_rpc_method_handler(_refuse_stream),
    (True, True): grpc.stream_stream_rpc_method_handler(_refuse_stream),
}


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        tokens: TokenStore,
        *,
        policy: AccessPolicy,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        """`policy`: which operations (operations.py) answer without a token."""
        self._tokens, self._policy, self._on_refused = tokens, policy, on_refused
        self._refused_since_log = 0
        self._last_log = 0.0

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if not self._policy.needs_token(GRPC_METHODS.get(method)) or self._tokens.check_header(
            _authorization(handler_call_details.invocation_metadata)
        ):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # no such method: UNIMPLEMENTED, as for anyone
        self._refused(method)
        return _REFUSERS[(bool(handler.request_streaming), bool(handler.response_streaming))]

    def _refused(self, method: str) -> None:
        if self._on_refused is not None:
            self._on_refused()
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            logger.warning("event=unauthenticated refused=%d last_method=%s", self._refused_since_log, method)
            self._refused_since_log, self._last_log = 0, now


def _authorization(metadata: Metadata | None) -> str | bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value
    return None
