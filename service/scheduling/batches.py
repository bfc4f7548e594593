"""What the batcher's batches are made of: a queued request, how a request is measured (its items, and what it may
merge with), the outputs a batch computes, and each request's share of them. Plain data and functions on the event
loop; the batcher (batcher.py) decides when they run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from cnnserve.service.errors import InferenceFailed, InvalidInput

Tensors = dict[str, np.ndarray]
OutputNames = frozenset[str] | None
"""The outputs a request (or a batch) needs; None: all of them (the cheapest path: nothing to choose)."""


class Request:
    """One request waiting in the batcher's queue, or running in a batch."""

    __slots__ = (
        "deadline",
        "due",
        "enqueued",
        "future",
        "inputs",
        "items",
        "outputs",
        "predicted",
        "queued",
        "signature",
        "trace",
    )

    def __init__(self, inputs: Tensors, items: int, signature: object, deadline: float | None,
                 outputs: OutputNames, budget: float | None = None) -> None:  # fmt: skip
        self.inputs, self.items, self.signature, self.deadline = inputs, items, signature, deadline
        self.outputs = outputs
        self.future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        self.enqueued = time.monotonic()
        self.queued = True  # False once taken into a batch or removed
        self.trace: object = None  # the request's trace context, for the batch's record (batcher.BatchRecord)
        self.predicted = 0.0  # seconds from enqueued to answered, as admission predicted it (0: no prediction)
        # When it must be answered: its budget, or its own deadline when sooner; None without a budget.
        self.due = None if budget is None else min(self.enqueued + budget, deadline or float("inf"))


def measure(inputs: Tensors, max_batch_size: int, model: str) -> tuple[int, object]:
    """A request's items (its leading dimension; 1 for a model that does not batch) and its signature: requests merge
    only with requests of the same names, dtypes and per-item shapes. InvalidInput when it cannot be batched."""
    if not inputs:
        raise InvalidInput(f"model '{model}': a request needs at least one input")
    if len(inputs) == 1:  # most models: no sort, no set of dims
        ((key, value),) = inputs.items()
        signature: object = (key, value.dtype.str, value.shape[1:])
        if max_batch_size == 0:
            return 1, signature
        items, mixed = (value.shape[0] if value.ndim else 0), False
    else:
        signature = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        if max_batch_size == 0:
            return 1, signature
        dims = {v.shape[0] if v.ndim else 0 for v in inputs.values()}
        items, mixed = dims.pop(), bool(dims)
    if mixed or items < 1:
        raise InvalidInput(f"model '{model}': inputs need one shared batch dimension >= 1")
    if items > max_batch_size:
        raise InvalidInput(f"model '{model}': batch of {items} exceeds max_batch_size {max_batch_size}")
    return items, signature


def union(batch: Sequence[Request]) -> OutputNames:
    """What a batch computes: every output one of its requests asked for (None as soon as one asked for all)."""
    first = batch[0].outputs
    if len(batch) == 1 or first is None:
        return first
    wanted = set(first)
    for r in batch[1:]:
        if r.outputs is None:
            return None
        wanted |= r.outputs
    return frozenset(wanted)


def share_out(batch: Sequence[Request], outputs: Tensors, wanted: OutputNames, total: int, batches: bool,
              model: str) -> None:  # fmt: skip
    """Answer each request of a batch that computed `wanted` with its own rows of the outputs it asked for.
    `batches`: False for a model that does not batch (its one request takes the outputs whole)."""
    if not batches:
        answer(batch[0].future, outputs)
        return
    if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
        raise InferenceFailed(f"model '{model}': outputs do not have the batch's {total} rows")
    alone = len(batch) == 1
    start = 0
    for r in batch:
        end = start + r.items
        own = outputs if r.outputs is None or r.outputs == wanted else _only(outputs, r.outputs)
        answer(r.future, own if alone else {k: v[start:end] for k, v in own.items()})
        start = end


def _only(outputs: Tensors, names: frozenset[str]) -> Tensors:
    return {k: v for k, v in outputs.items() if k in names}


# A future already done was answered, or its caller went away (cancelled): nothing to do then.
def answer(future: asyncio.Future[Tensors], outputs: Tensors) -> None:
    if not future.done():
        future.set_result(outputs)


def fail(future: asyncio.Future[Tensors], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
