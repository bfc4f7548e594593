"""The service's exception tree; each class owns the status it is answered with, on every door.

    ServiceError                 (INTERNAL unless a subclass says otherwise)
    +-- InvalidInput             INVALID_ARGUMENT  bad names, dtypes, shapes, byte counts, parameters
    +-- ModelNotFound            NOT_FOUND         unknown model or version
    +-- RegionNotFound           NOT_FOUND         a shared memory region that is not registered
    +-- AlreadyExists            ALREADY_EXISTS    a shared memory region registered under that name already
    +-- ModelNotReady            UNAVAILABLE       known but not loaded, loading, unloading, or server draining
    +-- QueueFull                RESOURCE_EXHAUSTED the model's queue is at max_queue_size
    |   +-- OverBudget           RESOURCE_EXHAUSTED its latency budget would be missed
    +-- DeadlineExceeded         DEADLINE_EXCEEDED the request's deadline passed before it ran
    +-- Cancelled                CANCELLED         the client went away
    +-- NotSupported             UNIMPLEMENTED     a feature this server does not offer (or not in this mode)
    +-- FailedPrecondition       FAILED_PRECONDITION e.g. repository control outside `explicit` mode
    +-- ModelLoadError           INVALID_ARGUMENT  a model that cannot be loaded (bad config, bad file)
    +-- InferenceFailed          INTERNAL          the runtime raised while executing a batch

A status is named as gRPC names it and carries the HTTP status the REST door answers with, so no layer below the
listeners imports a transport. The servicer answers a ServiceError with `context.abort(grpc_code(err), str(err))`;
anything else is logged with its traceback and answered INTERNAL with a generic message, so internals never leak.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """gRPC's status names; each value is the HTTP status that stands for it."""

    INVALID_ARGUMENT = 400
    UNAUTHENTICATED = 401
    NOT_FOUND = 404
    ALREADY_EXISTS = 409
    FAILED_PRECONDITION = 412
    RESOURCE_EXHAUSTED = 429
    CANCELLED = 499  # nginx's "client closed request": the caller is gone, nobody reads it
    INTERNAL = 500
    UNIMPLEMENTED = 501
    UNAVAILABLE = 503
    DEADLINE_EXCEEDED = 504


class ServiceError(Exception):
    status: Status = Status.INTERNAL
    refusal: str | None = None
    """Why a request was refused on arrival, for its trace's event; None for an error that is not a refusal."""


class InvalidInput(ServiceError):
    status = Status.INVALID_ARGUMENT


class ModelNotFound(ServiceError):
    status = Status.NOT_FOUND


class RegionNotFound(ServiceError):
    status = Status.NOT_FOUND


class AlreadyExists(ServiceError):
    status = Status.ALREADY_EXISTS


class ModelNotReady(ServiceError):
    status = Status.UNAVAILABLE


class QueueFull(ServiceError):
    status = Status.RESOURCE_EXHAUSTED
    refusal = "queue_full"


class OverBudget(QueueFull):
    """Refused on arrival: the model's latency budget would be missed (RESOURCE_EXHAUSTED, like a full queue)."""

    refusal = "latency_budget"


class MemoryFull(QueueFull):
    """Refused: the server's byte budget for requests in flight (max_inflight_bytes) lacks this one's bytes."""

    refusal = "byte_budget"


class DeadlineExceeded(ServiceError):
    status = Status.DEADLINE_EXCEEDED
    refusal = "deadline"


class Cancelled(ServiceError):
    status = Status.CANCELLED


class NotSupported(ServiceError):
    status = Status.UNIMPLEMENTED


class FailedPrecondition(ServiceError):
    status = Status.FAILED_PRECONDITION


class ModelLoadError(ServiceError):
    status = Status.INVALID_ARGUMENT


class InferenceFailed(ServiceError):
    status = Status.INTERNAL
