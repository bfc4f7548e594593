"""The server's own answers as plain data: health (live, ready) and the repository index's entries."""

from __future__ import annotations

from dataclasses import dataclass

from cnnserve.api import grpc_service_pb2 as pb


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    state: str
    reason: str


def model_entries(index: pb.RepositoryIndexResponse) -> list[ModelEntry]:
    return [ModelEntry(m.name, m.version, m.state, m.reason) for m in index.models]
