"""AsyncClient against a real server: the same answers as Client, errors with their status, concurrent callers apart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.client import images
from cnnserve.client.aio_client import AsyncClient
from cnnserve.client.client import Client
from cnnserve.client.errors import ClientError
from tests import onnx_models
from tests.client.test_client import write_images
from tests.conftest import ServerThread


@pytest.fixture
def server(tmp_path: Path, start_server: object) -> ServerThread:
    onnx_models.write_classifier(tmp_path / "repo")
    onnx_models.write_conditional_generator(tmp_path / "repo")
    return start_server(tmp_path / "repo")  # type: ignore[operator,no-any-return]


def test_server_calls(server: ServerThread) -> None:
    async def calls() -> None:
        async with AsyncClient(server.grpc_address) as client:
            health = await client.health()
            assert health.live and health.ready
            assert await client.health_check("") and await client.health_check() and await client.health_check("cgen")
            assert {entry.name for entry in await client.models()} == {"classifier", "cgen"}
            assert [t.name for t in (await client.metadata("cgen")).inputs] == ["latent", "class"]
            assert (await client.config("classifier")).max_batch_size == 32

    asyncio.run(calls())


def test_classify_gives_the_sync_answer(server: ServerThread, tmp_path: Path) -> None:
    paths, tensors = write_images(tmp_path, 6)
    with Client(server.grpc_address) as sync_client:
        expected = sync_client.classify("classifier", paths, top_k=3)

    async def classify() -> tuple[list[list[tuple[str, float]]], list[list[list[tuple[str, float]]]]]:
        async with AsyncClient(server.grpc_address) as client:
            together = await client.classify("classifier", paths, top_k=3)
        # A fresh client, every file its own concurrent call: they share one config fetch and one label probe.
        async with AsyncClient(server.grpc_address) as client:
            apart = await asyncio.gather(*(client.classify("classifier", [path], top_k=3) for path in paths))
        return together, apart

    together, apart = asyncio.run(classify())
    assert together == expected
    assert [answer[0] for answer in apart] == expected
    top = np.argsort(-onnx_models.classifier_reference(tensors), axis=1)[:, 0]
    assert [answer[0][0] for answer in together] == [f"digit-{i}" for i in top]


def test_generate_shape_dtype_and_seed(server: ServerThread) -> None:
    async def generate() -> list[np.ndarray]:
        async with AsyncClient(server.grpc_address) as client:
            return list(
                await asyncio.gather(
                    client.generate("cgen", 5, seed=3, label=7),
                    client.generate("cgen", 5, seed=3, label=7),
                    client.generate("cgen", 5, seed=4, label=7),
                )
            )

    first, again, other = asyncio.run(generate())
    assert first.dtype == np.uint8 and first.shape == (5, 2, 4, 1)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    with Client(server.grpc_address) as sync_client:
        assert np.array_equal(first, sync_client.generate("cgen", 5, seed=3, label=7))
    latent = np.random.default_rng(3).standard_normal((5, onnx_models.LATENT)).astype(np.float32)
    reference = images.to_uint8(onnx_models.conditional_generator_reference(latent, np.full(5, 7)))
    assert np.abs(first.astype(np.int16) - reference).max() <= 1  # ONNX Runtime's tanh against numpy's


def test_infer_round_trip(server: ServerThread) -> None:
    batch = np.random.default_rng(1).standard_normal((3, 1, 4, 4)).astype(np.float32)

    async def infer() -> dict[str, np.ndarray]:
        async with AsyncClient(server.grpc_address) as client:
            return await client.infer("classifier", {"images": batch}, outputs=["logits"])

    outputs = asyncio.run(infer())
    assert list(outputs) == ["logits"] and outputs["logits"].dtype == np.float32
    np.testing.assert_allclose(outputs["logits"], onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)


def test_errors_carry_the_status(server: ServerThread) -> None:
    async def failures() -> list[ClientError]:
        caught = []
        async with AsyncClient(server.grpc_address) as client:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: client.metadata("no-such-model"),
                lambda: client.generate("no-such-model", 2),
                lambda: client.infer("classifier", {"images": np.zeros((2, 1, 4, 4), dtype=np.float64)}),
                lambda: client.infer("classifier", {"images": np.zeros((2, 3, 4, 4), dtype=np.float32)}),
            ]
            for call in calls:
                with pytest.raises(ClientError) as info:
                    await call()
                caught.append(info.value)
        return caught

    caught = asyncio.run(failures())
    assert [err.code for err in caught] == [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    assert all(err.message for err in caught)


def test_concurrent_calls_each_get_their_own_answer(server: ServerThread) -> None:
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((1 + i % 4, 1, 4, 4)).astype(np.float32) for i in range(24)]

    async def infer_all() -> list[dict[str, np.ndarray]]:
        async with AsyncClient(server.grpc_address) as client:
            return list(await asyncio.gather(*(client.infer("classifier", {"images": b}) for b in batches)))

    answers = asyncio.run(infer_all())
    for batch, answer in zip(batches, answers, strict=True):
        np.testing.assert_allclose(answer["logits"], onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)


def test_files_or_tensors_and_png_output_match_the_sync_client(server: ServerThread, tmp_path: Path) -> None:
    paths, _ = write_images(tmp_path, 3)
    with Client(server.grpc_address) as sync_client:
        expected = sync_client.classify("classifier", paths, top_k=1, send_files=False)
        expected_pngs = sync_client.generate_png("cgen", 4, seed=11)

    async def run() -> tuple[list[list[tuple[str, float]]], list[bytes]]:
        async with AsyncClient(server.grpc_address) as client:
            return (
                await client.classify("classifier", paths, top_k=1, send_files=True),
                await client.generate_png("cgen", 4, seed=11),
            )

    ranked, pngs = asyncio.run(run())
    assert [r[0][0] for r in ranked] == [e[0][0] for e in expected]
    assert pngs == expected_pngs and all(png.startswith(b"\x89PNG") for png in pngs)


def test_concurrent_first_calls_share_one_label_probe(server: ServerThread, tmp_path: Path) -> None:
    """Six classify calls at once from a fresh client: six requests and one label probe reach the model (the
    labels cache lives in the core, the call in flight is shared by the asyncio shell)."""
    paths, _ = write_images(tmp_path, 6)

    async def classify_apart() -> None:
        async with AsyncClient(server.grpc_address) as client:
            await asyncio.gather(*(client.classify("classifier", [path], top_k=1) for path in paths))

    asyncio.run(classify_apart())
    channel = grpc.insecure_channel(server.grpc_address)
    try:
        request = pb.ModelStatisticsRequest(name="classifier")
        [stats] = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(request, timeout=10).model_stats
    finally:
        channel.close()
    assert stats.inference_stats.success.count == len(paths) + 1
