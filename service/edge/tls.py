"""TLS for both listeners from the same PEM files: gRPC server credentials and the HTTP port's ssl.SSLContext.

With a client CA both require a client certificate that CA signed (mutual TLS). Files are read once, at start;
a file that is missing or unreadable stops the start-up with a message naming it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from cnnserve.service.settings import ConfigError, Settings


def grpc_credentials(settings: Settings) -> grpc.ServerCredentials:
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    key, chain = _read(settings.tls_key_file, "tls_key_file"), _read(settings.tls_cert_file, "tls_cert_file")
    client_ca = (
        None if settings.tls_client_ca_file is None else _read(settings.tls_client_ca_file, "tls_client_ca_file")
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def http_context(settings: Settings) -> ssl.SSLContext:
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2+, the library's secure defaults
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_client_ca_file is not None:
            context.load_verify_locations(cafile=settings.tls_client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"TLS files {settings.tls_cert_file}, {settings.tls_key_file}: {err}") from None
    return context


def _read(path: Path, setting: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{setting} {path}: {err.strerror or err}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{setting} {path}: not a PEM file")
    return data
