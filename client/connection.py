"""How the SDK, the CLI and `cnnserve bench` reach a server: TLS credentials, bearer token, message limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class Connection:
    credentials: grpc.ChannelCredentials | None = None
    """TLS credentials; None: plaintext."""
    metadata: tuple[tuple[str, str], ...] = ()
    """Sent with every call (the bearer token)."""
    options: tuple[tuple[str, int], ...] = ()
    """gRPC channel options (message size limits)."""

    @classmethod
    def build(
        cls,
        *,
        max_message_bytes: int = 256 * 1024 * 1024,
        tls: bool = False,
        root_certificates: Path | str | None = None,
        certificate_chain: Path | str | None = None,
        private_key: Path | str | None = None,
        token: str | None = None,
    ) -> Connection:
        """`tls` (implied by any certificate file): verify the server against `root_certificates` (PEM file; the
        system's roots when None); `certificate_chain` + `private_key` (PEM files): present a client certificate
        (mutual TLS); `token`: sent as "authorization: Bearer <token>" on every call; `max_message_bytes`: the
        largest message either way (-1: no limit)."""
        return cls(
            channel_credentials(tls, root_certificates, certificate_chain, private_key),
            token_metadata(token),
            channel_options(max_message_bytes),
        )

    def channel(self, url: str) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(url, options=self.options)
        return grpc.secure_channel(url, self.credentials, options=self.options)

    def aio_channel(self, url: str) -> grpc.aio.Channel:
        """Build it inside the running event loop: a grpc.aio channel belongs to the loop it was made on."""
        if self.credentials is None:
            return grpc.aio.insecure_channel(url, options=self.options)
        return grpc.aio.secure_channel(url, self.credentials, options=self.options)


def channel_options(max_message_bytes: int) -> tuple[tuple[str, int], ...]:
    return (("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes))


def channel_credentials(
    tls: bool = False,
    root_certificates: Path | str | None = None,
    certificate_chain: Path | str | None = None,
    private_key: Path | str | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files, or None for plaintext (no TLS asked for and no file given)."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together (mutual TLS)")
    if not (tls or root_certificates is not None or certificate_chain is not None):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(root_certificates),
        private_key=_read(private_key),
        certificate_chain=_read(certificate_chain),
    )


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries a bearer token (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def _read(path: Path | str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
