"""Faults on a live server: broken models beside good ones, new versions arriving in `poll` mode under load, and
clients that go away in the middle of a request. (SIGTERM under load: test_lifecycle.py and test_overload.py.)"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.service.graphs import write_config


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def infer_request(model: str, batch: np.ndarray, version: str = "") -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        model_version=version,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=list(batch.shape))],
        raw_input_contents=[batch.tobytes()],
    )


def logits_of(reply: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(-1, 10)


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def index(stub: pb_grpc.GRPCInferenceServiceStub) -> dict[tuple[str, str], tuple[str, str]]:
    reply = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5)
    return {(m.name, m.version): (m.state, m.reason) for m in reply.models}


@pytest.fixture
def channel() -> Iterator[Callable[[str], grpc.Channel]]:
    """Factory: channel(address), closed after the test."""
    opened: list[grpc.Channel] = []

    def open_channel(address: str) -> grpc.Channel:
        opened.append(grpc.insecure_channel(address))
        return opened[-1]

    yield open_channel
    for c in opened:
        c.close()


def test_broken_files_and_wrong_configs_leave_the_other_models_serving(
    tmp_path: Path, start_server: Any, channel: Callable[[str], grpc.Channel]
) -> None:
    onnx_models.write_classifier(tmp_path)
    onnx_models.write_corrupt(tmp_path, name="corrupt")  # model.onnx is not ONNX
    onnx_models.write_classifier(tmp_path, name="contradicts")  # config says 3 channels, the graph 1
    write_config(tmp_path / "contradicts", max_batch_size=8, inputs=[{"name": "images", "dims": [-1, 3, 4, 4]}])
    onnx_models.write_classifier(tmp_path, name="unreadable")
    (tmp_path / "unreadable" / "config.json").write_text('{"max_batch_size": 8,')  # cut short
    onnx_models.write_classifier(tmp_path, name="empty")
    os.remove(tmp_path / "empty" / "1" / "model.onnx")  # a config and no version
    server = start_server(tmp_path)
    stub = pb_grpc.GRPCInferenceServiceStub(channel(server.grpc_address))

    batch = images(3, seed=1)
    reply = stub.ModelInfer(infer_request("classifier", batch), timeout=10)
    np.testing.assert_allclose(logits_of(reply), onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
    rows = index(stub)
    assert rows[("classifier", "1")] == ("READY", "")
    for name in ("corrupt", "contradicts", "unreadable", "empty"):
        state, reason = next(row for (model, _), row in rows.items() if model == name)
        assert state == "UNAVAILABLE" and reason, name  # refused, with the reason
        code = grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(infer_request(name, batch), timeout=5)
        assert refused.value.code() == code
    assert not stub.ServerReady(pb.ServerReadyRequest()).ready  # they were meant to load: not every model is up
    assert stub.ModelReady(pb.ModelReadyRequest(name="classifier")).ready


class Traffic:
    """Clients calling the model back to back from threads; every answer is checked against the versions that
    may serve it, every failure is kept."""

    def __init__(self, address: str, model: str, seeds: dict[str, int], clients: int = 3) -> None:
        self.address, self.model, self.seeds = address, model, seeds
        self.answered: dict[str, int] = dict.fromkeys(seeds, 0)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self, client: int) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            count = 0
            while not self._stop.is_set():
                batch = images(1 + count % 3, seed=client * 100_000 + count)
                count += 1
                try:
                    reply = stub.ModelInfer(infer_request(self.model, batch), timeout=10)
                except grpc.RpcError as err:
                    self.failures.append(f"{err.code().name}: {err.details()}")
                    continue
                seed = self.seeds.get(reply.model_version)
                expected = None if seed is None else onnx_models.classifier_reference(batch, seed=seed)
                if expected is None or not np.allclose(logits_of(reply), expected, rtol=1e-5, atol=1e-5):
                    self.failures.append(f"wrong answer from version {reply.model_version!r}")
                    continue
                self.answered[reply.model_version] += 1


def test_poll_mode_keeps_serving_through_a_broken_version_and_swaps_in_a_good_one_under_load(
    tmp_path: Path, start_server: Any, channel: Callable[[str], grpc.Channel]
) -> None:
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    onnx_models.write_classifier(repo, seed=1)
    server = start_server(repo, model_control_mode="poll", poll_interval_s=0.05)
    stub = pb_grpc.GRPCInferenceServiceStub(channel(server.grpc_address))
    with Traffic(server.grpc_address, "classifier", seeds={"1": 1, "2": 2}) as traffic:
        wait_for(lambda: traffic.answered["1"] >= 20)

        # A broken version 2 appears: it fails to load, version 1 keeps serving every request.
        broken = repo / "classifier" / "2" / "model.onnx"
        broken.parent.mkdir()
        broken.write_bytes(b"not an onnx model")
        wait_for(lambda: index(stub).get(("classifier", "2"), ("", ""))[0] == "UNAVAILABLE")
        served_before = traffic.answered["1"]
        wait_for(lambda: traffic.answered["1"] >= served_before + 20)
        assert index(stub)[("classifier", "1")] == ("READY", "") and traffic.answered["2"] == 0

        # A good version 2 is put in place (written aside, renamed in): it replaces version 1, no request fails.
        onnx_models.write_classifier(staging, version=2, seed=2)
        os.replace(staging / "classifier" / "2" / "model.onnx", broken)
        wait_for(lambda: traffic.answered["2"] >= 20)
        assert ("classifier", "1") not in index(stub)  # retired once version 2 served (latest-1 policy)
    print(f"\nanswered by version: {traffic.answered}, failed: {len(traffic.failures)}")
    assert not traffic.failures, traffic.failures[:5]


def all_admitted(stub: pb_grpc.GRPCInferenceServiceStub, count: int) -> bool:
    """`count` concurrent cheap calls all get past gRPC's concurrent-call limit."""
    calls = [stub.ModelReady.future(pb.ModelReadyRequest(name="slow"), timeout=5) for _ in range(count)]
    try:
        return all(call.result().ready for call in calls)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
            return False
        raise


def idle(app: Any) -> bool:
    """No request in progress anywhere: admitted, queued or running."""
    model = app.models.get("slow")
    return bool(app.gate.in_progress == 0 and model.queued_items == 0 and model.in_flight_requests == 0)


def test_clients_that_go_away_mid_request_give_their_slots_back(
    tmp_path: Path, start_server: Any, channel: Callable[[str], grpc.Channel]
) -> None:
    """Requests cancelled by their clients while queued or running, and streams dropped mid-request: afterwards no
    request is counted in progress, the queue is empty, and a full queue's worth of new requests is accepted."""
    # 150 steps: ~0.1 s a batch on a fast day (2026-12-06; at 15 the six requests were done between two polls)
    onnx_models.write_slow_classifier(
        tmp_path, work=150, max_batch_size=2, dynamic_batching={"max_queue_delay_us": 0, "max_queue_size": 4}
    )
    server = start_server(tmp_path, max_concurrent_streams=8)
    app = server.server

    for round_ in range(3):
        stub = pb_grpc.GRPCInferenceServiceStub(channel(server.grpc_address))
        # Unary calls cancelled while queued or running, and calls whose deadline passes first.
        pending = [stub.ModelInfer.future(infer_request("slow", images(1, seed=i))) for i in range(6)]
        pending += [stub.ModelInfer.future(infer_request("slow", images(1, seed=i)), timeout=0.03) for i in range(2)]
        wait_for(lambda: app.gate.in_progress >= 4)
        for future in pending[:6]:
            future.cancel()
        # Streams that sent a request and then vanish with their channel (the client process "dies").
        for i in range(3):
            dying = grpc.insecure_channel(server.grpc_address)
            stream = pb_grpc.GRPCInferenceServiceStub(dying).ModelStreamInfer(
                iter([infer_request("slow", images(1, seed=50 + i))]), timeout=30
            )
            del stream
            dying.close()
        wait_for(lambda: idle(app), timeout_s=10)
        # gRPC frees its own concurrent-call slots a moment after our handlers finish: wait until a full set of
        # max_concurrent_streams calls is admitted again (a leaked slot would make this time out).
        wait_for(partial(all_admitted, stub, 8), timeout_s=10)

        # Every slot is free again: a running request and the queue's full worth (4 items) are accepted, and as
        # many calls as max_concurrent_streams held before fit again.
        batches = [images(1, seed=1000 + round_ * 10 + i) for i in range(5)]
        answers = [stub.ModelInfer.future(infer_request("slow", b), timeout=30) for b in batches]
        for future, batch in zip(answers, batches, strict=True):
            np.testing.assert_allclose(
                logits_of(future.result()), onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5
            )
    assert app.gate.in_progress == 0
