"""Overload of a real `cnnserve serve` process: clients offer several times what the model can run, in rounds.

The queue stays at its bound, the excess is refused at once with RESOURCE_EXHAUSTED, the accepted requests are
answered correctly at the model's full rate with a p99 latency that the queue bound implies (not one that grows with
the overload, as an unbounded queue's would), resident memory does not grow from round to round, and a SIGTERM in
the middle of the overload loses no accepted request.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from cnnserve.api import grpc_service_pb2 as pb
from tests import onnx_models
from tests.service.processes import ServerProcess, scrape

# The model's max_batch_size and max_queue_size (items). Small, so that 4x its capacity is a rate the Python client
# in this process can offer on time even on a busy 2-core machine.
MAX_BATCH, QUEUE_ITEMS = 2, 4
OVERLOAD = 4.0  # offered rate / measured capacity
ROUND_S, ROUNDS = 1.5, 4
INFER = "/inference.GRPCInferenceService/ModelInfer"
IMAGES = np.random.default_rng(0).standard_normal((16, 1, 1, 4, 4)).astype(np.float32)  # 16 different requests
REFERENCE = [onnx_models.classifier_reference(image) for image in IMAGES]
BUDGET_MS = 150  # the budgeted twin's latency_budget_ms: room for ~4 batches of ~30 ms, and the RPC around them
PAYLOADS = {
    model: [
        pb.ModelInferRequest(
            model_name=model,
            inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=[1, 1, 4, 4])],
            raw_input_contents=[image.tobytes()],
        ).SerializeToString()
        for image in IMAGES
    ]
    for model in ("slow", "slow_budget")
}


sent: collections.Counter[str] = collections.Counter()  # every ModelInfer of this module, by status name


@dataclass(frozen=True)
class Outcome:
    sent_s: float  # since the round began
    latency_s: float
    code: grpc.StatusCode
    correct: bool


@dataclass(frozen=True)
class Round:
    outcomes: list[Outcome]
    queue_samples: list[float]
    duration_s: float
    batch_s: float  # the model's mean time per batch during the round (server metrics)
    busy: float  # share of the round the model spent running batches (server metrics)

    def of(self, code: grpc.StatusCode) -> list[Outcome]:
        return [o for o in self.outcomes if o.code == code]

    def percentile_ms(self, code: grpc.StatusCode, q: float) -> float:
        return float(np.percentile([o.latency_s for o in self.of(code)], q) * 1000)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("repo")
    # ~1.6 ms per step on these machines: ~30 ms a batch, so ~60 items/s at most on its one session thread.
    onnx_models.write_slow_classifier(
        repo, work=20, max_batch_size=MAX_BATCH,
        dynamic_batching={"max_queue_delay_us": 1000, "max_queue_size": QUEUE_ITEMS},
    )  # fmt: skip
    # Its twin with the default queue bound (1,024 items, far more than it can answer in time) and a latency budget.
    onnx_models.write_slow_classifier(
        repo, name="slow_budget", work=20, max_batch_size=MAX_BATCH,
        dynamic_batching={"max_queue_delay_us": 1000, "latency_budget_ms": BUDGET_MS},
    )  # fmt: skip
    process = ServerProcess(repo, grace_s=10.0)
    try:
        process.wait_ready()
        yield process
    finally:
        process.close()


def infer_time(http_url: str, model: str = "slow") -> tuple[float, float]:
    return (
        scrape(http_url, "cnnserve_compute_infer_duration_seconds_sum", model=model),
        scrape(http_url, "cnnserve_compute_infer_duration_seconds_count", model=model),
    )


async def offer(server: ServerProcess, rate: float, duration_s: float, *, on_the_way: float | None = None,
                model: str = "slow") -> Round:  # fmt: skip
    """Open-loop load: a request every 1/rate seconds whatever the answers, for duration_s. With `on_the_way`,
    SIGTERM is sent that many seconds in."""
    loop = asyncio.get_running_loop()
    payloads = PAYLOADS[model]
    before = await asyncio.to_thread(infer_time, server.http_url, model)
    outcomes: list[Outcome] = []
    queue_samples: list[float] = []
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(INFER)
        began = loop.time()

        async def one(index: int) -> None:
            sent_at = loop.time()
            try:
                reply = await call(payloads[index % len(payloads)], timeout=30)
            except grpc.aio.AioRpcError as err:
                outcomes.append(Outcome(sent_at - began, loop.time() - sent_at, err.code(), False))
                return
            logits = np.frombuffer(pb.ModelInferResponse.FromString(reply).raw_output_contents[0], np.float32)
            correct = np.allclose(logits.reshape(1, 10), REFERENCE[index % len(payloads)], rtol=1e-5, atol=1e-5)
            outcomes.append(Outcome(sent_at - began, loop.time() - sent_at, grpc.StatusCode.OK, bool(correct)))

        async def sample_queue() -> None:
            while loop.time() - began < duration_s:
                try:
                    depth = await asyncio.to_thread(scrape, server.http_url, "cnnserve_queue_items", model=model)
                except (OSError, http.client.HTTPException):
                    return  # the server stopped listening (SIGTERM round)
                queue_samples.append(depth)
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample_queue())
        signalled = False
        tasks = []
        for index in range(int(rate * duration_s)):
            await asyncio.sleep(max(0.0, began + index / rate - loop.time()))
            if on_the_way is not None and not signalled and loop.time() - began >= on_the_way:
                server.proc.send_signal(signal.SIGTERM)
                signalled = True
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)
        await sampler
        sent.update(o.code.name for o in outcomes)
        elapsed = loop.time() - began
    stopping = on_the_way is not None  # its HTTP port closes before the process exits: no metrics to read
    after = before if stopping else await asyncio.to_thread(infer_time, server.http_url, model)
    busy_s, batches = after[0] - before[0], after[1] - before[1]
    return Round(outcomes, queue_samples, elapsed, busy_s / batches if batches else float("nan"), busy_s / elapsed)


async def capacity_of(server: ServerProcess, duration_s: float = 1.0) -> float:
    """Requests per second the server answers when just enough clients keep its queue busy and (almost) nothing
    is refused (closed loop: each client sends its next request when its last one is answered)."""
    loop = asyncio.get_running_loop()
    answered = 0
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(INFER)
        end = loop.time() + duration_s

        async def client(index: int) -> None:
            nonlocal answered
            while loop.time() < end:
                try:
                    await call(PAYLOADS["slow"][index], timeout=30)
                except grpc.aio.AioRpcError as err:
                    sent[err.code().name] += 1
                    continue
                sent["OK"] += 1
                answered += 1

        began = loop.time()
        await asyncio.gather(*(client(i) for i in range(QUEUE_ITEMS)))
        return answered / (loop.time() - began)


def test_overload_is_refused_at_once_while_accepted_requests_keep_their_latency(server: ServerProcess) -> None:
    capacity = asyncio.run(capacity_of(server))
    rate = OVERLOAD * capacity
    rss: list[int] = []
    rounds: list[Round] = []
    for _ in range(ROUNDS):
        rounds.append(asyncio.run(offer(server, rate, ROUND_S)))
        rss.append(server.rss_bytes())

    print(f"\ncapacity {capacity:.0f} req/s (1 item each, batches of <= {MAX_BATCH}, queue {QUEUE_ITEMS} items); "
          f"offered {rate:.0f} req/s")  # fmt: skip
    for number, r in enumerate(rounds, 1):
        accepted, refused = r.of(grpc.StatusCode.OK), r.of(grpc.StatusCode.RESOURCE_EXHAUSTED)
        bound_s = (QUEUE_ITEMS / MAX_BATCH + 2) * r.batch_s  # a full queue ahead, the running batch, its own
        accepted_p50, accepted_p99 = (r.percentile_ms(grpc.StatusCode.OK, q) for q in (50, 99))
        refused_p50, refused_p99 = (r.percentile_ms(grpc.StatusCode.RESOURCE_EXHAUSTED, q) for q in (50, 99))
        print(
            f"round {number}: offered {len(r.outcomes) / r.duration_s:.0f}/s, accepted "
            f"{len(accepted) / r.duration_s:.0f}/s (p50 {accepted_p50:.0f} ms, p99 {accepted_p99:.0f} ms; bound "
            f"{bound_s * 1000:.0f} ms at {r.batch_s * 1000:.1f} ms a batch, model busy {r.busy:.0%}), refused "
            f"{len(refused)} (p50 {refused_p50:.1f} ms, p99 {refused_p99:.1f} ms), queue max "
            f"{max(r.queue_samples):.0f}, rss {rss[number - 1] / 2**20:.1f} MiB"
        )
        assert {o.code for o in r.outcomes} <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all(o.correct for o in accepted)
        assert len(refused) > len(r.outcomes) / 2  # most of a 4x overload is turned away...
        assert r.busy > 0.7  # ...while the model runs batch after batch (the refusals do not starve it)
        assert max(r.queue_samples) <= QUEUE_ITEMS and max(r.queue_samples) >= QUEUE_ITEMS / 2  # full, never over
        # Latency of accepted requests: what the queue bound implies, with room for a busy shared 2-core machine; an
        # unbounded queue would be seconds behind by now (3x the capacity queued for every second of overload).
        assert accepted_p99 < 1000 * (2 * bound_s + 0.2)
        # Refused at once, never after a wait in the queue. Relative: on a shared 2-core machine a starved client
        # loop delays every answer it reads, refusals included.
        assert refused_p50 < accepted_p50 / 2
    growth = rss[-1] - rss[0]
    print(f"rss after round 1 {rss[0] / 2**20:.1f} MiB, after round {ROUNDS} {rss[-1] / 2**20:.1f} MiB")
    assert growth < 8 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over {ROUNDS - 1} rounds"


def test_a_latency_budget_holds_the_accepted_p99_under_overload_at_nearly_full_throughput(
    server: ServerProcess,
) -> None:
    """The budgeted twin has room for 1,024 items, which at ~60 items/s would be 17 s of queue: the budget, not the
    bound, keeps the accepted requests' latency, by refusing at once what its batch-time estimates say would miss.

    Its throughput is judged against the twin without a budget offered the same overload in the rounds between:
    the no-budget capacity under the same load. Offering 4x costs the 2 cores what a closed loop of 4 clients does
    not (the client's 300 sends a second, the server's refusals), which slows every batch by ~8%; a CI run once
    measured 84% of the closed-loop figure while the model was busy 90% of the time."""
    capacity = asyncio.run(capacity_of(server))  # closed loop, of the twin without a budget: sizes the offer
    rate = OVERLOAD * capacity
    rss: list[int] = []
    rounds: list[Round] = []
    unbudgeted: list[Round] = []  # the twin with a 4-item queue: always full, so always at its capacity
    ok, room = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
    refused_before = scrape(server.http_url, "cnnserve_refused_requests_total", model="slow_budget", reason="budget")
    for _ in range(ROUNDS):
        unbudgeted.append(asyncio.run(offer(server, rate, ROUND_S)))
        rounds.append(asyncio.run(offer(server, rate, ROUND_S, model="slow_budget")))
        rss.append(server.rss_bytes())
    full_rate = sum(len(r.of(ok)) for r in unbudgeted) / sum(r.duration_s for r in unbudgeted)
    print(
        f"\nclosed-loop capacity {capacity:.0f} req/s; offered {rate:.0f} req/s; without a budget accepted "
        f"{full_rate:.0f}/s (model busy {np.mean([r.busy for r in unbudgeted]):.0%}); budget {BUDGET_MS} ms"
    )
    for number, r in enumerate(rounds, 1):
        accepted, refused = r.of(ok), r.of(room)
        accepted_p50, accepted_p99 = (r.percentile_ms(ok, q) for q in (50, 99))
        refused_p50, refused_p99 = (r.percentile_ms(room, q) for q in (50, 99))
        throughput = len(accepted) / r.duration_s
        print(
            f"round {number}: accepted {throughput:.0f}/s ({throughput / full_rate:.0%} of no-budget; p50 "
            f"{accepted_p50:.0f} ms, p99 {accepted_p99:.0f} ms), refused {len(refused)} (p50 {refused_p50:.1f} ms, "
            f"p99 {refused_p99:.1f} ms), queue max {max(r.queue_samples):.0f}, model busy {r.busy:.0%}, "
            f"rss {rss[number - 1] / 2**20:.1f} MiB"
        )
        assert {o.code for o in r.outcomes} <= {ok, room}
        assert all(o.correct for o in accepted)
        assert refused_p50 < 25 and refused_p50 < accepted_p50 / 2  # refused at once, in milliseconds
        assert max(r.queue_samples) < 4 * BUDGET_MS / 1000 * capacity  # a few batches, never the 1,024 it allows
    # Over every round's accepted requests (~400: a round's ~100 make its p99 its second-slowest answer).
    accepted_ms = [o.latency_s * 1000 for r in rounds for o in r.of(ok)]
    pooled_p99 = float(np.percentile(accepted_ms, 99))
    pooled_throughput = len(accepted_ms) / sum(r.duration_s for r in rounds)
    print(
        f"all rounds: accepted p99 {pooled_p99:.0f} ms, {pooled_throughput / full_rate:.0%} of the no-budget "
        f"rate, {pooled_throughput / capacity:.0%} of the closed-loop capacity"
    )
    # Measured on an idle 2-core machine: 123, 134 and 149 ms against 150. The 10% is for a shared CI machine, where
    # another process's burst lands between a prediction and its answer; docs/latency-budget.md states the figures.
    assert pooled_p99 <= 1.1 * BUDGET_MS
    assert pooled_throughput >= 0.9 * full_rate
    refused_after = scrape(server.http_url, "cnnserve_refused_requests_total", model="slow_budget", reason="budget")
    assert refused_after - refused_before == sum(len(r.of(room)) for r in rounds)  # every refusal was the budget's
    assert scrape(server.http_url, "cnnserve_batch_time_estimate_seconds", model="slow_budget", batch_size="2") > 0
    growth = rss[-1] - rss[0]
    assert growth < 8 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over {ROUNDS - 1} rounds"


def test_sigterm_in_the_middle_of_an_overload_loses_no_accepted_request(server: ServerProcess) -> None:
    """Lost = requests the server admitted (its own count, logged at exit) that did not come back answered or
    refused for room; it must be 0. What the server never admitted is refused for the shutdown: UNAVAILABLE while
    the listener drains, or CANCELLED by gRPC for a call that reached it as the listener itself closed."""
    signal_s = 0.5
    final = asyncio.run(offer(server, rate=250.0, duration_s=1.5, on_the_way=signal_s))
    assert server.wait_exit(15) == 0, server.log()
    stopped = re.search(r"event=stopped drained=(\w+) admitted=(\d+) unfinished=(\d+)", server.log())
    assert stopped is not None, server.log()
    assert stopped[1] == "True" and stopped[3] == "0"
    ok, room = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
    admitted_by_server, came_back = int(stopped[2]), sent["OK"] + sent["RESOURCE_EXHAUSTED"]
    lost = admitted_by_server - came_back
    after_signal = [o for o in final.of(ok) if o.sent_s + o.latency_s > signal_s]
    shutdown = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    print(
        f"\nSIGTERM under overload: {len(final.outcomes)} requests, {len(final.of(ok))} answered "
        f"({len(after_signal)} after the signal), {len(final.of(room))} refused for room, "
        f"{len([o for o in final.outcomes if o.code in shutdown])} refused for the shutdown "
        f"({len(final.of(grpc.StatusCode.CANCELLED))} of them CANCELLED as the listener closed); over the server's "
        f"life it admitted {admitted_by_server}, {came_back} came back answered or refused for room: lost {lost}"
    )
    assert lost == 0
    assert all(o.correct for o in final.of(ok))
    assert set(sent) <= {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "CANCELLED"}, sent
    assert after_signal, "the drain was over before the signal: it proved nothing"
    assert final.of(grpc.StatusCode.UNAVAILABLE), "no request came after the signal"
