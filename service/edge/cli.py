"""`cnnserve serve`: flags over CNNSERVE_* environment variables, then run the server until signalled."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cnnserve.service.protocol import log_settings
from cnnserve.service.settings import CONTROL_MODES, ConfigError, Settings


def comma_list(text: str) -> tuple[str, ...]:
    """A flag's comma-separated values; empty items (a trailing comma) are dropped."""
    return tuple(item for item in text.split(",") if item)


def boolean(text: str) -> bool:
    """A flag's true/false value, as Triton's boolean flags take it (--allow-client-shm=true)."""
    value = text.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnserve serve",
        description="Serve a model repository over gRPC and HTTP/REST (Open Inference Protocol). "
        "Every flag can also be set by CNNSERVE_<FLAG> (upper case, '-' as '_').",
    )
    p.add_argument("--model-repository", type=Path, help="model repository folder (default: model_repository)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0: every interface)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8001; 0 = any free port)")
    p.add_argument("--http-port", type=int, help="HTTP metrics/health port (default 8002; -1 = off)")
    p.add_argument("--rest-port", type=int, help="HTTP/REST inference port (default 8000; 0 = any free; -1 = off)")
    p.add_argument(
        "--rest-cors-origins",
        type=comma_list,
        help="comma-separated origins allowed to call the REST port from a browser ('*': any)",
    )
    p.add_argument(
        "--rest-allowed-hosts",
        type=comma_list,
        help="comma-separated host names HTTP requests may address (default: loopback names on a loopback bind)",
    )
    p.add_argument("--max-rest-json-bytes", type=int, help="largest JSON part of a REST request (413 past it)")
    p.add_argument("--rest-timeout-s", type=float, help="time a REST client may take to send its body")
    p.add_argument("--rest-head-timeout-s", type=float, help="time an HTTP client may take to send a request head")
    p.add_argument("--rest-keepalive-s", type=float, help="idle keep-alive REST connections close after this")
    p.add_argument("--model-control-mode", choices=CONTROL_MODES, help="none | poll | explicit (default none)")
    p.add_argument("--poll-interval-s", type=float, help="repository rescan interval in poll mode")
    p.add_argument("--startup-models", type=comma_list, help="comma-separated models to load at start in explicit mode")
    p.add_argument("--max-message-bytes", type=int, help="largest gRPC message, sent or received")
    p.add_argument("--execution-providers", type=comma_list, help="provider preference, e.g. cuda,cpu")
    p.add_argument("--grace-period-s", type=float, help="drain time allowed on SIGTERM")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING ...")
    p.add_argument("--event-loop", choices=("auto", "asyncio"), help="auto: uvloop where installed (default)")
    security = p.add_argument_group("security (README: Security)")
    security.add_argument("--tls-cert-file", type=Path, help="PEM server certificate chain: gRPC and HTTP use TLS")
    security.add_argument("--tls-key-file", type=Path, help="PEM private key of --tls-cert-file")
    security.add_argument(
        "--tls-client-ca-file",
        type=Path,
        help="PEM CA bundle: clients must present a certificate it signed (mutual TLS)",
    )
    security.add_argument(
        "--allow-insecure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve plaintext when no TLS files are given (default: allowed, logged as a warning)",
    )
    security.add_argument(
        "--auth-token-file",
        type=Path,
        help="bearer tokens, one a line, re-read on change (tokens can also come from "
        "CNNSERVE_AUTH_TOKENS; there is no flag for them, to keep them out of process lists)",
    )
    security.add_argument(
        "--auth-open-health",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with tokens on, leave health checks and /metrics open (default: yes)",
    )
    security.add_argument(
        "--auth-metrics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with tokens on, /metrics needs the token even while health checks are open (default: no)",
    )
    p.add_argument(
        "--trace",
        type=boolean,
        nargs="?",
        const=True,
        metavar="true|false",
        help="OpenTelemetry traces of inference requests, sent where the OTEL_* variables say (default: false)",
    )
    security.add_argument(
        "--allow-client-shm",
        type=boolean,
        nargs="?",
        const=True,
        metavar="true|false",
        help="let clients register system shared memory regions for inputs and outputs (Triton's flag; default: false)",
    )
    security.add_argument("--max-elements-per-request", type=int, help="most tensor elements in one request")
    security.add_argument("--max-request-tensor-bytes", type=int, help="most bytes a request's decoded inputs take")
    security.add_argument("--max-inflight-bytes", type=int, help="most bytes all requests in progress may hold")
    security.add_argument("--max-concurrent-streams", type=int, help="most gRPC calls served at once")
    security.add_argument(
        "--max-streams-per-connection", type=int, help="most streaming gRPC calls one connection holds open"
    )
    security.add_argument("--max-image-pixels", type=int, help="largest PNG/JPEG (width x height) an image input takes")
    security.add_argument("--max-jpeg-scans", type=int, help="most scans a JPEG file may hold (progressive JPEGs)")
    security.add_argument("--max-explain-copies", type=int, help="most occluded copies one explain request makes")
    return p


def settings_from_args(argv: Sequence[str], env: dict[str, str] | None = None) -> Settings:
    args = build_parser().parse_args(list(argv))
    return Settings.from_env(os.environ if env is None else env, **vars(args))


def main(argv: Sequence[str]) -> int:
    try:
        settings = settings_from_args(argv)
    except ValueError as err:
        raise SystemExit(f"cnnserve serve: {err}") from None
    logging.basicConfig(level=settings.log_level.upper(), format=log_settings.LOG_FORMAT)
    from cnnserve.service.edge.server import serve  # onnxruntime is imported only once settings are valid

    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            runner.run(serve(settings))
    except ConfigError as err:  # a TLS or token file that cannot be used: one line, no traceback
        raise SystemExit(f"cnnserve serve: {err}") from None
    return 0


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "auto":
        try:
            import uvloop
        except ImportError:
            return None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None
