"""Server settings: one frozen, typed object built once at start-up from CLI flags over CNNSERVE_* variables.

No other module reads the environment; `Settings.from_env(mapping)` lets tests pass a plain dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "CNNSERVE_"
CONTROL_MODES = ("none", "poll", "explicit")


class ConfigError(ValueError):
    """A setting that passed validation but cannot be used at start-up: a TLS or token file missing or unreadable."""


@dataclass(frozen=True)
class Settings:
    model_repository: Path = Path("model_repository")
    """Folder of models: <name>/config.json, <name>/<version>/model.onnx."""
    host: str = "127.0.0.1"
    """Address every listener binds to. Loopback by default, so a laptop's `make run` serves only itself; the
    container images and the Kubernetes manifests set 0.0.0.0 (every interface) explicitly."""
    grpc_port: int = 8001
    """gRPC port (Open Inference Protocol, health, reflection); 0 picks a free one."""
    http_port: int = 8002
    """HTTP port for /metrics and /v2/health/{live,ready}; 0 picks a free one, -1 turns it off."""
    rest_port: int = 8000
    """HTTP/REST port (KServe v2 REST with Triton's extensions, as Triton's 8000); 0 picks a free one, -1 turns it
    off."""
    rest_cors_origins: tuple[str, ...] = ()
    """Origins (e.g. https://app.example) a browser page may call the REST port from; "*" allows any; empty: CORS
    off, so browsers refuse cross-origin calls."""
    rest_allowed_hosts: tuple[str, ...] = ()
    """Host names (as in the Host header, no port) HTTP requests may be addressed to; empty: loopback names when the
    server binds loopback (a page on a rebound DNS name cannot reach it), any name otherwise."""
    max_rest_json_bytes: int = 4 * 1024 * 1024
    """Largest JSON part of a REST request (the whole body without the binary extension), 413 past it: JSON is
    parsed on the event loop at about 5 ms a MiB and builds a Python object per number, so it gets a tight bound;
    tensors of any size travel in binary (tritonclient.http's default) or as files."""
    rest_timeout_s: float = 60.0
    """How long a REST client may take to send its request body; a slower one is cut off (a slow client cannot hold
    a connection and a buffer for ever). Idle keep-alive connections close after rest_keepalive_s."""
    rest_head_timeout_s: float = 10.0
    """How long an HTTP client may take to send a request's head (line and headers), from its first byte or the
    connection's start; a slower one is disconnected, so trickled heads cannot hold connections (slowloris)."""
    rest_keepalive_s: float = 75.0
    """Idle time after which a keep-alive REST connection is closed."""
    model_control_mode: str = "none"
    """none: load all at start; poll: also watch the folder; explicit: RepositoryModelLoad/Unload only."""
    poll_interval_s: float = 5.0
    """How often `poll` mode rescans the repository."""
    startup_models: tuple[str, ...] = ()
    """In `explicit` mode, models loaded at start (empty: none)."""
    max_message_bytes: int = 256 * 1024 * 1024
    """Largest gRPC message received or sent; larger ones fail with RESOURCE_EXHAUSTED."""
    execution_providers: tuple[str, ...] = ("cuda", "cpu")
    """Preference order of ONNX Runtime execution providers; the first that works for a model is used."""
    grace_period_s: float = 30.0
    """On SIGTERM/SIGINT, how long accepted requests may take to finish before the process exits."""
    log_level: str = "INFO"
    trace: bool = False
    """OpenTelemetry traces of inference requests (docs/tracing.md). Off by default: off, no span object is made.
    Where they go, and which are kept, is OpenTelemetry's own environment: OTEL_TRACES_EXPORTER (otlp, console,
    none), OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT and _PROTOCOL, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER[_ARG]."""
    event_loop: str = "auto"
    """auto: uvloop where installed (it cut the server's CPU per request by about an eighth here), else asyncio;
    asyncio: the standard loop."""
    server_name: str = "cnnserve"

    # -- security: transport, callers, limits (README "Security") ---------------------------------------------------
    tls_cert_file: Path | None = None
    """PEM certificate chain of the server; with tls_key_file, gRPC and HTTP speak TLS only."""
    tls_key_file: Path | None = None
    """PEM private key matching tls_cert_file."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS), on gRPC and HTTP."""
    allow_insecure: bool = True
    """Without TLS files, serve plaintext (logged as a WARNING at start); false makes a missing TLS setup a start-up
    error. True by default so `make run` and local use need no certificates."""
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    """Bearer tokens accepted in the `authorization` metadata (CNNSERVE_AUTH_TOKENS, comma-separated; no flag, so
    they never show in a process list). Never logged."""
    auth_token_file: Path | None = None
    """File of bearer tokens, one a line ('#' comments); re-read when it changes, so a token removed from it (rotated)
    stops working at once. Tokens here and in auth_tokens are all accepted; either turns authentication on."""
    auth_open_health: bool = True
    """With authentication on, health checks (grpc.health.v1 Check, ServerLive/Ready, ModelReady, the HTTP probes)
    and /metrics stay open without a token; false puts them behind it too. Inference, repository calls and streams
    (health Watch, reflection) always need one."""
    auth_metrics: bool = False
    """With authentication on, /metrics needs the token even while the probes are open (its labels name every
    model and version)."""
    allow_client_shm: bool = False
    """Triton's system shared memory extension (docs/shared-memory.md): clients register POSIX shared memory objects
    of the server's own user (/dev/shm) and name them for inputs and outputs, which then skip the network. Off by
    default, as Triton's --allow-client-shm: a client allowed it can make the server read and write any shared
    memory object of the server's user. Registration needs a token like inference; off, every shared memory call
    answers UNIMPLEMENTED / 501 saying how to turn it on."""
    max_elements_per_request: int = 16 * 1024 * 1024
    """Most tensor elements one request may declare, summed over its inputs (checked before anything is allocated)."""
    max_request_tensor_bytes: int = 256 * 1024 * 1024
    """Most memory a request's decoded inputs may take; each BYTES element counts its length plus the object
    holding it, so a tensor of millions of empty strings cannot make the server allocate without bound."""
    max_inflight_bytes: int = 1024 * 1024 * 1024
    """Most bytes all requests in progress may hold at once, on both doors: each is charged from the moment it is
    costed (a REST body before it is read) until it is answered, at what its inputs take decoded; the next one that
    does not fit is refused with RESOURCE_EXHAUSTED / 429 at once. At least max_request_tensor_bytes."""
    max_concurrent_streams: int = 1024
    """Most gRPC calls (HTTP/2 streams) served at once, server-wide; the next is refused with RESOURCE_EXHAUSTED."""
    max_streams_per_connection: int = 128
    """Most streaming gRPC calls (ModelStreamInfer, health Watch, reflection) one connection may hold open at once;
    the next is refused with RESOURCE_EXHAUSTED, so no one connection holds the server-wide limit with streams."""
    grpc_connection_idle_s: float = 300.0
    """A gRPC connection with no call open for this long is closed (GOAWAY; clients reconnect on their next call)."""
    grpc_connection_age_s: float = 3600.0
    """A gRPC connection older than this is asked to go (GOAWAY) and gets grpc_connection_age_grace_s to finish
    its calls: long-lived connections cannot pin a client to one replica, or hold a stream for ever."""
    grpc_connection_age_grace_s: float = 300.0
    """After grpc_connection_age_s, how long calls already open may still run before the connection is closed."""
    max_image_pixels: int = 4096 * 4096
    """Largest PNG/JPEG (width x height) an image input decodes; read from the file's header, so a larger one is
    refused (INVALID_ARGUMENT) before any pixel is decoded."""
    max_jpeg_scans: int = 64
    """Most scans a JPEG file may hold; counted before any pixel is decoded, a file with more is refused
    (INVALID_ARGUMENT). libjpeg walks all of an image's coefficients once per scan, so decode time grows with the
    count (about 12 ms a scan at 4096 x 4096); encoders write 1 (baseline) or 4-10 (progressive)."""
    max_explain_copies: int = 2048
    """Most occluded copies one explain request may make (items x patch positions); past it, INVALID_ARGUMENT
    naming the count. A 16x16 digit at the default patch and stride makes 49, a 224x224 image at patch 16 and
    stride 8 makes 729; the copies run as batches through the model's own queue, a chunk at a time."""

    def __post_init__(self) -> None:
        if self.event_loop not in ("auto", "asyncio"):
            raise ValueError(f"event_loop must be 'auto' or 'asyncio', got {self.event_loop!r}")
        if self.model_control_mode not in CONTROL_MODES:
            raise ValueError(
                f"model_control_mode must be one of {', '.join(CONTROL_MODES)}, got {self.model_control_mode!r}"
            )
        for name in ("grpc_port", "http_port", "rest_port"):
            port = getattr(self, name)
            if not -1 <= port <= 65535:
                raise ValueError(f"{name} must be a port number 0-65535 (or -1 for off), got {port}")
        if self.max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {self.max_message_bytes}")
        if self.poll_interval_s <= 0 or self.grace_period_s < 0:
            raise ValueError("poll_interval_s must be > 0 and grace_period_s >= 0")
        for name in (
            "max_elements_per_request",
            "max_request_tensor_bytes",
            "max_concurrent_streams",
            "max_image_pixels",
            "max_jpeg_scans",
            "max_rest_json_bytes",
            "rest_timeout_s",
            "rest_keepalive_s",
            "rest_head_timeout_s",
            "max_explain_copies",
            "max_inflight_bytes",
            "max_streams_per_connection",
            "grpc_connection_idle_s",
            "grpc_connection_age_s",
            "grpc_connection_age_grace_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_inflight_bytes < self.max_request_tensor_bytes:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least max_request_tensor_bytes "
                f"({self.max_request_tensor_bytes}), or a request the limits allow could never run"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both, or neither for plaintext")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        if not self.tls and not self.allow_insecure:
            raise ValueError(
                "plaintext refused (allow_insecure is false): give tls_cert_file and tls_key_file, "
                "or set allow_insecure to serve without TLS"
            )

    @property
    def tls(self) -> bool:
        """Whether the listeners speak TLS."""
        return self.tls_cert_file is not None

    @property
    def auth(self) -> bool:
        """Whether calls need a bearer token."""
        return bool(self.auth_tokens) or self.auth_token_file is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from CNNSERVE_<FIELD> variables (upper case), then `overrides` (CLI flags) on top."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    default = f.default
    if default is None and "Path" in str(f.type):
        return Path(raw)
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(default, Path):
            return Path(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{f.name.upper()}: cannot read {raw!r} as {type(default).__name__}") from None
    return raw
