"""Every operation either door offers, and which of them answer without a bearer token: one table for gRPC and REST.

Each door maps what it received to an operation before asking: gRPC by the full method name (GRPC_METHODS), REST by
the route a request matched (each route is registered with its operation, protocol/rest.py). Neither looks at the
shape of a path, so a path that merely ends in /ready is not a probe. Anything that maps to no operation (an
unknown method or route) needs a token, as every operation not listed open does.
"""

from __future__ import annotations

import enum


class Operation(enum.Enum):
    LIVE = "live"
    READY = "ready"
    MODEL_READY = "model_ready"
    HEALTH = "health"  # grpc.health.v1 Check and Watch
    REFLECTION = "reflection"
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
    TOKEN = "token"  # always needs a token


ACCESS: dict[Operation, Access] = {
    Operation.LIVE: Access.PROBE,
    Operation.READY: Access.PROBE,
    Operation.MODEL_READY: Access.PROBE,
    Operation.HEALTH: Access.PROBE,
    Operation.REFLECTION: Access.PROBE,
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
    "/grpc.health.v1.Health/Watch": Operation.HEALTH,
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


def needs_token(operation: Operation | None, open_health: bool) -> bool:
    """Whether a caller must present a valid token for `operation` (None: no known operation, so it must)."""
    if operation is None:
        return True
    access = ACCESS[operation]
    return access is Access.TOKEN or (access is Access.PROBE and not open_health)
