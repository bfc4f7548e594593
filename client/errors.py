"""Client exceptions: every failed call carries the gRPC status and the server's message."""

from __future__ import annotations

import grpc


class ClientError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> ClientError:
        return cls(err.code(), err.details() or "")  # type: ignore[attr-defined]
