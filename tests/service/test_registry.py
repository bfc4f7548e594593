"""The registry of loaded models: loading, failures, statistics, poll-mode swaps, explicit control, draining."""

from __future__ import annotations

import asyncio
import inspect
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from cnnserve.service.errors import ModelLoadError, ModelNotFound, ModelNotReady, ServiceError
from cnnserve.service.execution.runtime import Runtime
from cnnserve.service.registry.registry import ModelManager
from cnnserve.service.registry.served import NoObserver, ServedModel
from cnnserve.service.scheduling.batcher import BatchRecord
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec, ModelState
from tests import onnx_models
from tests.service.graphs import conv_any_size, write_config


def settings(repo: Path, **overrides: Any) -> Settings:
    return Settings(model_repository=repo, execution_providers=("cuda", "cpu"), **overrides)


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def run(manager: ModelManager, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await manager.start()
        try:
            await body()
        finally:
            await manager.stop()

    asyncio.run(main())


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await holds(condition):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    return await result if inspect.isawaitable(result) else result


async def served(model: ServedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One request as the protocol layer makes it (protocol/inference.py): timed, its outcome reported to the model."""
    started, outcome = time.monotonic(), "success"
    try:
        return await model.infer(inputs)
    except ServiceError as err:
        outcome = err.status.name.lower()
        raise
    finally:
        model.observe_request(outcome, time.monotonic() - started)


async def index_of(manager: ModelManager) -> dict[tuple[str, str], tuple[ModelState, str]]:
    return {(e.name, e.version): (e.state, e.reason) for e in await manager.index()}


async def has_row(manager: ModelManager, key: tuple[str, str], state: ModelState | None = None) -> bool:
    row = (await index_of(manager)).get(key)
    return row is not None and state in (None, row[0])


async def no_rows(manager: ModelManager, name: str) -> bool:
    return all(e.name != name for e in await manager.index())


def test_a_failed_warm_up_leaves_estimates_to_the_batches_that_run(tmp_path: Path) -> None:
    """Nothing measured at load: the served model predicts nothing until batches run, then learns from them."""
    runtime = Runtime(conv_any_size(tmp_path / "model.onnx"))
    spec = ModelSpec("m", "onnxruntime_onnx", 8, runtime.inputs, runtime.outputs)
    runtime.warm_up(spec)  # H and W guessed as 1: too small for the 3x3 kernel
    assert runtime.warm_up_times == {}
    served = ServedModel(spec, 1, runtime)
    assert served.batch_time_estimates == {}

    async def two_runs() -> None:
        for _ in range(2):
            await served.infer({"images": np.zeros((1, 1, 5, 5), np.float32)})
        await served.close()

    asyncio.run(two_runs())
    assert set(served.batch_time_estimates) == {1}


def test_models_load_and_a_corrupt_one_takes_none_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx_models.write_classifier(tmp_path)
    onnx_models.write_conditional_generator(tmp_path)
    onnx_models.write_corrupt(tmp_path)
    conv_any_size(tmp_path / "warmup_fails" / "1" / "model.onnx")  # 3x3 kernel: the 2x2 images below cannot run
    write_config(tmp_path / "warmup_fails", max_batch_size=8, inputs=[{"name": "images", "dims": [-1, 1, 2, 2]}])
    events: list[tuple[str, int, bool]] = []
    manager = ModelManager(settings(tmp_path), on_model_event=lambda m, up: events.append((m.name, m.version, up)))

    async def body() -> None:
        assert manager.is_ready("classifier") and manager.is_ready("cgen", "1")
        assert not manager.is_ready("broken")
        assert not manager.all_ready()  # the broken one was meant to load
        index = await index_of(manager)
        assert index[("classifier", "1")] == (ModelState.READY, "")
        assert index[("broken", "1")][0] == ModelState.UNAVAILABLE and "model.onnx" in index[("broken", "1")][1]
        # The server's own warm-up data fails there: a warning, and the model serves what its graph accepts.
        assert index[("warmup_fails", "1")] == (ModelState.READY, "")
        assert "event=warmup_failed model=warmup_fails:1" in caplog.text
        ready = [(e.name, e.version) for e in await manager.index(ready_only=True)]
        assert ready == [("cgen", "1"), ("classifier", "1"), ("warmup_fails", "1")]
        assert sorted(events) == [("cgen", 1, True), ("classifier", 1, True), ("warmup_fails", 1, True)]
        model = manager.get("classifier")
        assert (model.name, model.version, model.provider) == ("classifier", 1, "CPUExecutionProvider")
        assert model.spec.max_batch_size == 32 and model.spec.labels[3] == "digit-3"
        for call, error in [
            (lambda: manager.get("nope"), ModelNotFound),
            (lambda: manager.get("classifier", "7"), ModelNotFound),
            (lambda: manager.get("classifier", "one"), ModelNotFound),
            (lambda: manager.get("classifier", "\u00b9"), ModelNotFound),  # "¹".isdigit(); int() refuses it
            (lambda: manager.get("classifier", "1" * 5000), ModelNotFound),  # past int()'s digit limit
            (lambda: manager.get("broken"), ModelNotReady),
            (lambda: manager.get("broken", "1"), ModelNotReady),
        ]:
            with pytest.raises(error):
                call()

    with caplog.at_level(logging.WARNING):
        run(manager, body)
    assert ("classifier", 1, False) in events  # unloaded at stop


def test_infer_matches_onnxruntime_and_fills_statistics(tmp_path: Path) -> None:
    onnx_models.write_classifier(tmp_path, dynamic_batching={"max_queue_delay_us": 20000})
    onnx_models.write_conditional_generator(tmp_path)
    batches: list[BatchRecord] = []
    computes: list[tuple[float, float, float]] = []
    factory_calls: list[tuple[str, int]] = []

    class Recorder(NoObserver):
        def observe_batch(self, record: BatchRecord) -> None:
            batches.append(record)
            if record.compute is not None:
                computes.append((record.compute.input_s, record.compute.infer_s, record.compute.output_s))

    def observer(name: str, version: int) -> Recorder:
        factory_calls.append((name, version))
        return Recorder()

    manager = ModelManager(settings(tmp_path), observer_factory=observer)

    async def body() -> None:
        assert sorted(factory_calls) == [("cgen", 1), ("classifier", 1)]
        requests = [images(n, seed=n) for n in (1, 2, 1, 3, 1, 1)]
        model = manager.get("classifier", "1")
        answers = await asyncio.gather(*(served(model, {"images": r}) for r in requests))
        for request, answer in zip(requests, answers, strict=True):
            np.testing.assert_allclose(
                answer["logits"], onnx_models.classifier_reference(request), rtol=1e-5, atol=1e-5
            )

        stats = model.stats
        assert stats.success.count == len(requests) and stats.success.ns > 0 and stats.fail.count == 0
        assert stats.inference_count == 9
        assert stats.execution_count < len(requests)  # requests shared batches
        assert stats.queue.count == len(requests)
        assert stats.compute_infer.count == len(requests) and stats.compute_infer.ns > 0
        assert sum(b.count for b in stats.batch_stats.values()) == stats.execution_count
        assert sum(size * b.count for size, b in stats.batch_stats.items()) == 9
        assert stats.last_inference_ms > 0
        assert sum(b.items for b in batches) == 9 and len(computes) == stats.execution_count

        with pytest.raises(Exception):  # noqa: B017 - wrong dtype; counted as a failure
            await served(model, {"images": images(1).astype(np.float64)})
        assert stats.fail.count == 1

        path = tmp_path / "cgen" / "1" / "model.onnx"
        direct = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        latent = np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32)
        classes = np.arange(5, dtype=np.int64)
        # A served model takes what clients send: the per-item scalar with its unit axis (describe.py).
        answer = await manager.get("cgen").infer({"latent": latent, "class": classes[:, np.newaxis]})
        np.testing.assert_array_equal(answer["images"], direct.run(None, {"latent": latent, "class": classes})[0])

    run(manager, body)


def test_one_request_record_feeds_statistics_and_the_observer(tmp_path: Path) -> None:
    """observe_request is the one per-request record: ModelStatistics and the observer count the same requests with
    the same seconds; a refusal that never reached the model (validation, before infer) moves the observer only."""
    onnx_models.write_classifier(tmp_path)
    outcomes: list[tuple[str, float]] = []

    class Recorder(NoObserver):
        def observe_request(self, outcome: str, seconds: float, trace_id: str | None = None) -> None:
            outcomes.append((outcome, seconds))

    manager = ModelManager(settings(tmp_path), observer_factory=lambda name, version: Recorder())

    async def body() -> None:
        model = manager.get("classifier")
        stats = model.stats
        await served(model, {"images": images(2)})
        assert model.observer.track_inflight() is not None  # the protocol layer's in-flight count, kept
        assert (stats.success.count, stats.fail.count, outcomes[-1][0]) == (1, 0, "success")
        assert stats.success.ns == int(outcomes[-1][1] * 1e9)  # one clock for both
        model.observe_request("invalid_argument", 0.001)  # refused by decode: the model never saw it
        assert (stats.success.count, stats.fail.count, outcomes[-1]) == (1, 0, ("invalid_argument", 0.001))
        with pytest.raises(ServiceError):  # reached the model: its batcher refused it
            await served(model, {"images": images(33)})  # past max_batch_size 32
        assert (stats.success.count, stats.fail.count, outcomes[-1][0]) == (1, 1, "invalid_argument")
        assert stats.inference_count == 2 and len(outcomes) == 3
        assert [o for o, _ in outcomes] == ["success", "invalid_argument", "invalid_argument"]

    run(manager, body)


def test_poll_mode_swaps_in_new_versions_and_keeps_serving_through_failures(tmp_path: Path) -> None:
    onnx_models.write_classifier(tmp_path, seed=1)
    manager = ModelManager(settings(tmp_path, model_control_mode="poll", poll_interval_s=0.05))
    errors: list[BaseException] = []
    answered = 0

    async def traffic() -> None:  # requests in flight across every swap
        nonlocal answered
        while True:
            try:
                await manager.get("classifier").infer({"images": images(2)})
                answered += 1
            except Exception as err:  # a ready version exists throughout: no request may fail
                errors.append(err)
            await asyncio.sleep(0.001)

    def logits_of(version: int) -> np.ndarray:
        return onnx_models.classifier_reference(images(2), seed=version)

    async def body() -> None:
        load = asyncio.create_task(traffic())
        first = manager.get("classifier")
        onnx_models.write_classifier(tmp_path, version=2, seed=2)  # a new version appears
        await until(lambda: manager.get("classifier").version == 2)
        answer = await manager.get("classifier").infer({"images": images(2)})
        np.testing.assert_allclose(answer["logits"], logits_of(2), rtol=1e-5, atol=1e-5)
        assert not manager.is_ready("classifier", "1")  # latest-1 policy: version 1 retired
        with pytest.raises(ModelNotReady):
            await first.infer({"images": images(1)})  # drained and closed

        (tmp_path / "classifier" / "3").mkdir()
        (tmp_path / "classifier" / "3" / "model.onnx").write_bytes(b"not onnx")  # a broken newer version
        await until(lambda: has_row(manager, ("classifier", "3")))
        await until(lambda: has_row(manager, ("classifier", "3"), ModelState.UNAVAILABLE))
        assert manager.get("classifier").version == 2 and manager.all_ready()
        assert (await index_of(manager))[("classifier", "2")] == (ModelState.READY, "")

        onnx_models.write_classifier(tmp_path, version=3, seed=3)  # fixed: it replaces version 2
        await until(lambda: manager.is_ready("classifier", "3") and not manager.is_ready("classifier", "2"))

        served = manager.get("classifier")
        write_config(tmp_path / "classifier", max_batch_size=4, labels_file="labels.txt")  # config change reloads
        await until(lambda: manager.get("classifier") is not served)
        assert manager.get("classifier").spec.max_batch_size == 4

        onnx_models.write_conditional_generator(tmp_path)  # a new model
        await until(lambda: manager.is_ready("cgen"))
        shutil.rmtree(tmp_path / "cgen")  # and its removal
        await until(lambda: no_rows(manager, "cgen"))  # unloaded, drained, forgotten
        with pytest.raises(ModelNotFound):
            manager.get("cgen")

        load.cancel()
        await asyncio.gather(load, return_exceptions=True)
        assert not errors and answered > 0

    run(manager, body)


def test_a_removed_version_is_unloaded(tmp_path: Path) -> None:
    onnx_models.write_classifier(tmp_path, version=1, version_policy={"all": {}})
    onnx_models.write_classifier(tmp_path, version=2, version_policy={"all": {}})
    manager = ModelManager(settings(tmp_path, model_control_mode="poll", poll_interval_s=0.05))

    async def body() -> None:
        assert manager.is_ready("classifier", "1") and manager.is_ready("classifier", "2")
        shutil.rmtree(tmp_path / "classifier" / "2")
        await until(lambda: not manager.is_ready("classifier", "2"))
        assert manager.get("classifier").version == 1

    run(manager, body)


def test_explicit_mode_loads_and_unloads_on_request(tmp_path: Path) -> None:
    onnx_models.write_classifier(tmp_path)
    onnx_models.write_conditional_generator(tmp_path)
    onnx_models.write_corrupt(tmp_path)
    manager = ModelManager(settings(tmp_path, model_control_mode="explicit", startup_models=("classifier",)))

    async def body() -> None:
        assert manager.is_ready("classifier") and manager.all_ready()
        with pytest.raises(ModelNotReady):
            manager.get("cgen")  # on disk, not loaded
        assert (await index_of(manager))[("cgen", "")] == (ModelState.UNAVAILABLE, "not loaded")

        await manager.load("cgen")
        assert manager.is_ready("cgen", "1")
        await manager.unload("classifier")
        assert not manager.is_ready("classifier")
        assert (await index_of(manager))[("classifier", "1")] == (ModelState.UNAVAILABLE, "unloaded")
        await manager.load("classifier")
        assert manager.is_ready("classifier")

        for name, error in [("nope", ModelNotFound), ("../etc", ModelNotFound), ("broken", ModelLoadError)]:
            with pytest.raises(error):
                await manager.load(name)
        assert not manager.all_ready()  # "broken" was asked for and is not there
        await manager.unload("broken")
        assert manager.all_ready()
        with pytest.raises(ModelNotFound):
            await manager.unload("nope")

    run(manager, body)


@pytest.mark.parametrize("how", ["stop", "unload"])
def test_queued_requests_finish_before_sessions_are_released(tmp_path: Path, how: str) -> None:
    onnx_models.write_classifier(tmp_path, dynamic_batching={"max_queue_delay_us": 300_000, "wait_when_idle": True})
    manager = ModelManager(settings(tmp_path, model_control_mode="explicit", startup_models=("classifier",)))

    async def main() -> None:
        await manager.start()
        model: ServedModel = manager.get("classifier")
        pending = [asyncio.create_task(model.infer({"images": images(1, seed=i)})) for i in range(5)]
        await asyncio.sleep(0.01)
        assert model.queued_items == 5  # still waiting for batch-mates
        await (manager.stop() if how == "stop" else manager.unload("classifier"))
        answers = [t.result() for t in pending]  # every accepted request was answered
        for i, answer in enumerate(answers):
            np.testing.assert_allclose(
                answer["logits"], onnx_models.classifier_reference(images(1, seed=i)), rtol=1e-5, atol=1e-5
            )
        assert not manager.is_ready("classifier")
        assert manager.all_ready() is (how == "unload")  # an unloaded model is no longer meant to be loaded
        with pytest.raises(ModelNotReady):
            await model.infer({"images": images(1)})
        await manager.stop()

    asyncio.run(main())
