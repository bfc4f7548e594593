"""One byte budget for every request being read, decoded or queued, on both doors.

Each request holds a reservation from the moment it is costed until it is answered: the REST door reserves a body's
declared length before reading it, and the request path tops that up to what the inputs take decoded (the number
checked against max_request_tensor_bytes, files at their decoded size) before anything is decoded. A reservation
that would take the total past the budget is refused at once with RESOURCE_EXHAUSTED / 429, so a burst of large
requests waits in its clients, not in this process's memory.

Runs on the event loop only: the counts are plain integers.
"""

from __future__ import annotations

from types import TracebackType

from cnnserve.service.errors import MemoryFull


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        """Bytes reserved by requests now in progress."""
        self.refused = 0

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """One request's share of the budget; released on exit from `with`, or by release() (either may come twice)."""

    __slots__ = ("_budget", "bytes")

    def __init__(self, budget: MemoryBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def hold_at_least(self, wanted: int) -> None:
        """Raises the reservation to `wanted` bytes; MemoryFull (a QueueFull), with nothing more held, when the budget
        lacks them."""
        more = wanted - self.bytes
        if more <= 0:
            return
        budget = self._budget
        if budget.held + more > budget.limit:
            budget.refused += 1
            raise MemoryFull(
                f"server memory for requests in flight is in use: this request needs {wanted} bytes and "
                f"{budget.limit - budget.held + self.bytes} of max_inflight_bytes {budget.limit} are free; retry "
                "shortly or send smaller requests"
            )
        budget.held += more
        self.bytes = wanted

    def release(self) -> None:
        self._budget.held -= self.bytes
        self.bytes = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
                 ) -> None:  # fmt: skip
        self.release()
