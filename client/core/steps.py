"""What a plan asks its shell to do. A plan is a generator: it yields a step, is sent that step's result, and returns
the operation's answer; it never touches a channel, so the blocking and the asyncio shells run the same plans.

    Call                one unary RPC; its result is the reply message (errors raise ClientError in the shell)
    tuple of Calls      RPCs that need not wait for each other; the result is their replies, in order
    Work                blocking local work (file reads, image codecs); its result is what the function returns
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from google.protobuf.message import Message

T = TypeVar("T")
R = TypeVar("R", covariant=True)

Service = Literal["inference", "health"]
"""The KServe v2 GRPCInferenceService, or grpc.health.v1.Health."""


@dataclass(frozen=True)
class Call:
    method: str
    """The RPC as the service names it: "ModelInfer", "ModelConfig", "Check", ..."""
    request: Message
    service: Service = "inference"
    shared: bool = False
    """An idempotent read whose reply fills a core cache: a shell that has several calls in flight may send one of
    identical shared calls and give every caller its reply (concurrent first calls for a model ask once)."""


@dataclass(frozen=True)
class Work(Generic[R]):
    """Blocking local work: the blocking shell runs it in place, the asyncio shell in a worker thread, off the loop."""

    run: Callable[[], R]


Step = Call | tuple[Call, ...] | Work[Any]

Plan = Generator[Step, Any, T]
"""An operation that answers T: it yields Steps and is sent each one's result."""
