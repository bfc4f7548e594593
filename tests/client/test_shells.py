"""Client and AsyncClient are two shells over one core: every operation the core defines (a public method of
client.core.operations.Operations) is a method of both, with the core's parameters, and each method only runs the
core's plan of its name with its arguments as given. An operation added to the core and missing from a shell, or
a shell method the core lacks, fails here."""

from __future__ import annotations

import asyncio
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import pytest

from cnnserve.client.aio_client import AsyncClient
from cnnserve.client.client import Client
from cnnserve.client.core.operations import Operations
from cnnserve.client.core.steps import Plan

OPERATIONS = sorted(name for name, _ in inspect.getmembers(Operations, inspect.isfunction) if not name.startswith("_"))
OWN = {"close"}
"""What a shell has besides the operations: its channel's lifecycle."""
UNREACHABLE = "127.0.0.1:9"  # channels connect on their first call, which these tests never make


def public_methods(shell: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(shell, inspect.isfunction) if not name.startswith("_")}


def signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function, eval_str=True)


def test_every_operation_is_a_plan() -> None:
    assert {"classify", "generate", "segment", "stylize", "explain", "infer", "health"} <= set(OPERATIONS)
    assert all(inspect.isgeneratorfunction(getattr(Operations, name)) for name in OPERATIONS)


@pytest.mark.parametrize("shell", [Client, AsyncClient])
def test_a_shell_has_exactly_the_core_operations(shell: type) -> None:
    assert public_methods(shell) - OWN == set(OPERATIONS)


@pytest.mark.parametrize("name", OPERATIONS)
def test_both_shells_take_the_core_parameters_and_answer_its_result(name: str) -> None:
    """Names, kinds, defaults and annotations as the core's plan; the return type is what the plan returns; the
    asyncio shell's method is a coroutine function, the blocking shell's a plain one."""
    core = signature(getattr(Operations, name))
    (answer,) = typing.get_args(core.return_annotation)[2:]  # Plan[T] is Generator[Step, Any, T]
    assert core.return_annotation == Plan[answer]  # type: ignore[valid-type]
    for shell in (Client, AsyncClient):
        method = getattr(shell, name)
        assert signature(method).parameters == core.parameters, shell.__name__
        assert signature(method).return_annotation == answer, shell.__name__
    assert inspect.iscoroutinefunction(getattr(AsyncClient, name))
    assert not inspect.iscoroutinefunction(getattr(Client, name))


ANSWER = object()


class RecordingClient(Client):
    """Client with its one I/O seam, _run, replaced: keeps the plan it was given and answers a marker."""

    def __init__(self) -> None:
        super().__init__(UNREACHABLE)
        self.plans: list[Plan[Any]] = []

    def _run(self, plan: Plan[Any]) -> Any:
        self.plans.append(plan)
        return ANSWER


class RecordingAsyncClient(AsyncClient):
    """The same, for the asyncio shell (built inside a running loop, as its channel must be)."""

    def __init__(self) -> None:
        super().__init__(UNREACHABLE)
        self.plans: list[Plan[Any]] = []

    async def _run(self, plan: Plan[Any]) -> Any:
        self.plans.append(plan)
        return ANSWER


def arguments(name: str) -> dict[str, object]:
    """A distinct object per parameter, by name: where each lands in the plan shows how the shell passed it on."""
    return {parameter: object() for parameter in list(signature(getattr(Operations, name)).parameters)[1:]}


def plan_locals(plan: Plan[Any]) -> tuple[types.CodeType, dict[str, Any]]:
    """A plan not yet started: its code, and its frame's locals (so far, the arguments it was called with)."""
    assert isinstance(plan, types.GeneratorType) and plan.gi_frame is not None
    return plan.gi_code, plan.gi_frame.f_locals


def assert_runs_the_plan(name: str, plans: list[Plan[Any]], given: dict[str, object]) -> None:
    (plan,) = plans
    code, frame = plan_locals(plan)
    assert code is getattr(Operations, name).__code__  # the core's plan of the same name
    assert isinstance(frame["self"], Operations)
    assert all(frame[parameter] is value for parameter, value in given.items())  # each argument where it belongs
    plan.close()


@pytest.mark.parametrize("name", OPERATIONS)
def test_a_blocking_shell_method_runs_the_core_plan_of_its_name(name: str) -> None:
    given = arguments(name)
    client = RecordingClient()
    with client:
        assert getattr(client, name)(**given) is ANSWER
    assert_runs_the_plan(name, client.plans, given)


@pytest.mark.parametrize("name", OPERATIONS)
def test_an_asyncio_shell_method_runs_the_core_plan_of_its_name(name: str) -> None:
    given = arguments(name)

    async def call() -> RecordingAsyncClient:
        client = RecordingAsyncClient()
        async with client:
            assert await getattr(client, name)(**given) is ANSWER
        return client

    client = asyncio.run(call())
    assert_runs_the_plan(name, client.plans, given)


def test_a_shell_holds_one_core_for_all_its_operations() -> None:
    """The caches (configs, labels) live in the core object, so every operation of a client must reach the same."""
    client = RecordingClient()
    with client:
        client.config("a")
        client.classify("a", [])
    cores = {id(plan_locals(plan)[1]["self"]) for plan in client.plans}
    assert len(cores) == 1
