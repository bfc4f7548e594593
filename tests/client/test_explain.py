"""`explain` in the SDK and the CLI against a real server running a tiny pixel classifier (tests/onnx_models.py):
an image file in, its occlusion heatmap and explained class out, equal to what the server answers for the same
pixels sent as a tensor through tritonclient; the PNG the server draws written by the CLI."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image

from cnnserve.client.aio_client import AsyncClient
from cnnserve.client.cli import main as cli_main
from cnnserve.client.client import Client
from cnnserve.contracts import features
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write_pixel_classifier(repo)
    with ServerThread(loopback_settings(repo)) as running:
        yield running


def digit_file(path: Path, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 4), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def served_explanation(server: ServerThread, pixels: np.ndarray, **parameters: object) -> tuple[np.ndarray, int]:
    images = (pixels.astype(np.float32) / 255)[None, None]
    tensor = triton.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    with triton.InferenceServerClient(server.grpc_address) as client:
        result = client.infer("pixels", [tensor], parameters={"explain": "occlusion", **parameters})
    return result.as_numpy(features.EXPLANATION_OUTPUT)[0], int(result.as_numpy(features.EXPLAINED_CLASS_OUTPUT)[0])


def test_client_explains_files_as_the_server_explains_their_pixels(server: ServerThread, tmp_path: Path) -> None:
    pixels = [digit_file(tmp_path / f"{k}.png", seed=k) for k in range(2)]
    with Client(server.grpc_address) as client:
        found = client.explain("pixels", [tmp_path / "0.png", tmp_path / "1.png"], patch=2, stride=1, with_png=True)
        targeted = client.explain("pixels", [tmp_path / "0.png"], patch=2, stride=1, target_class=3)[0]
    for explanation, grey in zip(found, pixels, strict=True):
        heat, index = served_explanation(server, grey, patch=2, patch_stride=1)
        np.testing.assert_allclose(explanation.heatmap, heat, atol=1e-6)
        assert explanation.class_index == index and explanation.label == f"digit-{index}"
        assert explanation.png is not None and Image.open(io.BytesIO(explanation.png)).size == (4, 4)
        assert explanation.hottest(0.25).sum() == 4 and explanation.heatmap[explanation.hottest(0.25)].min() >= \
            np.sort(explanation.heatmap.ravel())[-4]  # fmt: skip
    assert targeted.class_index == 3
    np.testing.assert_allclose(targeted.heatmap, served_explanation(server, pixels[0], patch=2, patch_stride=1,
                                                                    target_class=3)[0], atol=1e-6)  # fmt: skip


def test_async_client_explains_concurrently(server: ServerThread, tmp_path: Path) -> None:
    files = []
    for k in range(3):
        digit_file(tmp_path / f"{k}.png", seed=10 + k)
        files.append(tmp_path / f"{k}.png")

    async def run() -> list[object]:
        async with AsyncClient(server.grpc_address) as client:
            return list(await client.explain("pixels", files))

    with Client(server.grpc_address) as client:
        expected = client.explain("pixels", files)
    for got, want in zip(asyncio.run(run()), expected, strict=True):
        np.testing.assert_allclose(got.heatmap, want.heatmap)  # type: ignore[attr-defined]


def test_cli_prints_the_class_and_writes_the_servers_picture(server: ServerThread, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    digit_file(tmp_path / "a.png", seed=5)
    code = cli_main(["explain", "--url", server.grpc_address, "--model", "pixels", "--out-dir", str(tmp_path / "out"),
                     str(tmp_path / "a.png")])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "a.png: explains digit-" in printed and "wrote" in printed
    assert Image.open(tmp_path / "out" / "a.explained.png").mode == "RGB"
    args = ["explain", "--url", server.grpc_address, "--model", "pixels", "--json", str(tmp_path / "a.png")]
    assert cli_main(args) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert np.asarray(entry["explanation"]).shape == (4, 4) and entry["label"].startswith("digit-")
