"""The service's exception tree; each class owns the gRPC status it is answered with.

    ServiceError                 (INTERNAL unless a subclass says otherwise)
    +-- InvalidInput             INVALID_ARGUMENT  bad names, dtypes, shapes, byte counts, parameters
    +-- ModelNotFound            NOT_FOUND         unknown model or version
    +-- ModelNotReady            UNAVAILABLE       known but not loaded, loading, unloading, or server draining
    +-- QueueFull                RESOURCE_EXHAUSTED the model's queue is at max_queue_size
    +-- DeadlineExceeded         DEADLINE_EXCEEDED the request's deadline passed before it ran
    +-- Cancelled                CANCELLED         the client went away
    +-- NotSupported             UNIMPLEMENTED     a feature this server does not offer (or not in this mode)
    +-- FailedPrecondition       FAILED_PRECONDITION e.g. repository control outside `explicit` mode
    +-- ModelLoadError           INVALID_ARGUMENT  a model that cannot be loaded (bad config, bad file)
    +-- InferenceFailed          INTERNAL          the runtime raised while executing a batch

The servicer answers a ServiceError with `context.abort(err.code, str(err))`; anything else is logged with its
traceback and answered INTERNAL with a generic message, so internals never leak to clients.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class ModelNotReady(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class QueueFull(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ServiceError):
    code = grpc.StatusCode.CANCELLED


class NotSupported(ServiceError):
    code = grpc.StatusCode.UNIMPLEMENTED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ModelLoadError(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class InferenceFailed(ServiceError):
    code = grpc.StatusCode.INTERNAL
