"""Client exceptions: every failed call carries the gRPC status and the server's message.

ClientError                    any failed call: .code (grpc.StatusCode), .message (the server's words)
+-- InvalidArgumentError       INVALID_ARGUMENT: the request is wrong; do not retry it as is
+-- NotFoundError              NOT_FOUND: no such model or version
+-- UnavailableError           UNAVAILABLE: not ready, draining, or unreachable; retry later or elsewhere
+-- ResourceExhaustedError     RESOURCE_EXHAUSTED: the model's queue is full; back off and retry
+-- DeadlineExceededError      DEADLINE_EXCEEDED: the timeout passed before the answer
+-- UnauthenticatedError       UNAUTHENTICATED: no token, or one the server does not accept
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> ClientError:
        code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
        return _BY_CODE.get(code, ClientError)(code, err.details() or "")  # type: ignore[attr-defined]


class InvalidArgumentError(ClientError):
    pass


class NotFoundError(ClientError):
    pass


class UnavailableError(ClientError):
    pass


class ResourceExhaustedError(ClientError):
    pass


class DeadlineExceededError(ClientError):
    pass


class UnauthenticatedError(ClientError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}
