"""Every operation either door offers, and which of them answer without a bearer token: one table for gRPC and REST.

Each door maps what it received to an operation before asking: gRPC by the full method name (GRPC_METHODS), REST by
the route a request matched (each route is registered with its operation, protocol/rest.py). Neither looks at the
shape of a path, so a path that merely ends in /ready is not a probe. Anything that maps to no operation (an
unknown method or route) needs a token, as every operation not listed open does.

Streams stay behind the token: a health Watch or a reflection stream is held open for as long as its caller likes,
and each holds one of the server's concurrent-call slots, so open streams would let a caller without a token take the
capacity token holders are served from. Probes need none of them: Kubernetes' gRPC probe and grpc_health_probe
call Check, a unary call that ends at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cnnserve.service.settings import Settings


class Operation(enum.Enum):
    LIVE = "live"
    READY = "ready"
    MODEL_READY = "model_ready"
    HEALTH = "health"  # grpc.health.v1 Check
    HEALTH_WATCH = "health_watch"  # grpc.health.v1 Watch: a stream
    REFLECTION = "reflection"  # a stream
    METRICS = "metrics"  # GET /metrics on the metrics port
    PAGE = "page"  # the page's own files (service/edge/page_files.py)
    SERVER_METADATA = "server_metadata"
    MODEL_METADATA = "model_metadata"
    MODEL_CONFIG = "model_config"
    MODEL_STATISTICS = "model_statistics"
    REPOSITORY_INDEX = "repository_index"
    LOAD = "load"
    UNLOAD = "unload"
    INFER = "infer"
    MODEL_OPERATION = "model_operation"  # POST .../{operation}: an infer with what a model's kind implies
    MODEL_FILE = "model_file"  # GET .../{operation}/{file}: a file a model's kind serves beside it
    SHARED_MEMORY = "shared_memory"
    TRACE = "trace"
    LOG_SETTINGS = "log_settings"


class Access(enum.Enum):
    PUBLIC = "public"  # never needs a token: a browser fetches the page before it can ask for one
    PROBE = "probe"  # needs no token while auth_open_health is on: probes learn only whether the server is up
    SCRAPE = "scrape"  # as PROBE, unless auth_metrics puts it behind the token (metric names tell model names)
    TOKEN = "token"  # always needs a token


ACCESS: dict[Operation, Access] = {
    Operation.LIVE: Access.PROBE,
    Operation.READY: Access.PROBE,
    Operation.MODEL_READY: Access.PROBE,
    Operation.HEALTH: Access.PROBE,
    Operation.HEALTH_WATCH: Access.TOKEN,
    Operation.REFLECTION: Access.TOKEN,
    Operation.METRICS: Access.SCRAPE,
    Operation.PAGE: Access.PUBLIC,
    Operation.SERVER_METADATA: Access.TOKEN,
    Operation.MODEL_METADATA: Access.TOKEN,
    Operation.MODEL_CONFIG: Access.TOKEN,
    Operation.MODEL_STATISTICS: Access.TOKEN,
    Operation.REPOSITORY_INDEX: Access.TOKEN,
    Operation.LOAD: Access.TOKEN,
    Operation.UNLOAD: Access.TOKEN,
    Operation.INFER: Access.TOKEN,
    Operation.MODEL_OPERATION: Access.TOKEN,
    Operation.MODEL_FILE: Access.TOKEN,
    Operation.SHARED_MEMORY: Access.TOKEN,
    Operation.TRACE: Access.TOKEN,
    Operation.LOG_SETTINGS: Access.TOKEN,
}

_INFERENCE = "/inference.GRPCInferenceService/"
GRPC_METHODS: dict[str, Operation] = {
    "/grpc.health.v1.Health/Check": Operation.HEALTH,
    "/grpc.health.v1.Health/Watch": Operation.HEALTH_WATCH,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Operation.REFLECTION,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Operation.REFLECTION,
    **{
        _INFERENCE + method: operation
        for method, operation in (
            ("ServerLive", Operation.LIVE),
            ("ServerReady", Operation.READY),
            ("ModelReady", Operation.MODEL_READY),
            ("ServerMetadata", Operation.SERVER_METADATA),
            ("ModelMetadata", Operation.MODEL_METADATA),
            ("ModelConfig", Operation.MODEL_CONFIG),
            ("ModelStatistics", Operation.MODEL_STATISTICS),
            ("RepositoryIndex", Operation.REPOSITORY_INDEX),
            ("RepositoryModelLoad", Operation.LOAD),
            ("RepositoryModelUnload", Operation.UNLOAD),
            ("ModelInfer", Operation.INFER),
            ("ModelStreamInfer", Operation.INFER),
            ("SystemSharedMemoryStatus", Operation.SHARED_MEMORY),
            ("SystemSharedMemoryRegister", Operation.SHARED_MEMORY),
            ("SystemSharedMemoryUnregister", Operation.SHARED_MEMORY),
            ("CudaSharedMemoryStatus", Operation.SHARED_MEMORY),
            ("CudaSharedMemoryRegister", Operation.SHARED_MEMORY),
            ("CudaSharedMemoryUnregister", Operation.SHARED_MEMORY),
            ("TraceSetting", Operation.TRACE),
            ("LogSettings", Operation.LOG_SETTINGS),
        )
    },
}


@dataclass(frozen=True)
class AccessPolicy:
    """Which operations answer without a token on this server: decided once from its settings."""

    open_health: bool = True
    """Probe operations need no token (settings.auth_open_health)."""
    open_metrics: bool = True
    """The scrape needs no token while probes need none (false: settings.auth_metrics)."""

    @classmethod
    def of(cls, settings: Settings) -> AccessPolicy:
        return cls(open_health=settings.auth_open_health, open_metrics=not settings.auth_metrics)

    def needs_token(self, operation: Operation | None) -> bool:
        """Whether a caller must present a valid token for `operation` (None: no known operation, so it must)."""
        if operation is None:
            return True
        access = ACCESS[operation]
        if access is Access.PUBLIC:
            return False
        if access is Access.PROBE:
            return not self.open_health
        if access is Access.SCRAPE:
            return not (self.open_health and self.open_metrics)
        return True
