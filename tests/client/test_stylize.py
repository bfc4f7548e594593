"""`stylize` in the SDK and the CLI against a real server running a style-shaped model (tests/style_models.py):
photos of any size in, a PNG of each photo's own size out; a model of another kind refused before any request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnserve.client.aio_client import AsyncClient
from cnnserve.client.cli import main as cli_main
from cnnserve.client.client import Client
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings
from tests.style_models import served_reference, write_stylizer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    write_stylizer(repo)
    onnx_models.write_classifier(repo)
    with ServerThread(loopback_settings(repo)) as running:
        yield running


def photo(path: Path, height: int, width: int, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def close_to(styled: np.ndarray, pixels: np.ndarray) -> bool:
    """Within one 8-bit step of what the model answers for `pixels`, at their size."""
    expected = served_reference(pixels)[0].transpose(1, 2, 0) * 255
    return styled.shape == expected.shape and float(np.abs(styled.astype(np.float32) - expected).max()) <= 0.501


def test_stylize_answers_each_photo_at_its_own_size(server: ServerThread, tmp_path: Path) -> None:
    sizes = [(45, 70), (16, 16), (9, 33)]
    files = [tmp_path / f"{h}x{w}.png" for h, w in sizes]
    pixels = [photo(f, h, w, i) for i, (f, (h, w)) in enumerate(zip(files, sizes, strict=True))]
    with Client(server.grpc_address) as client:
        styled = client.stylize("stylizer", files)
        pngs = client.stylize_png("stylizer", [pixels[0]])  # pixels, not a file: sent as a PNG
    assert all(close_to(s, p) for s, p in zip(styled, pixels, strict=True))
    assert pngs[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_the_async_client_answers_the_same_concurrently(server: ServerThread, tmp_path: Path) -> None:
    sizes = [(45, 70), (16, 16), (16, 16), (9, 33)]
    pixels = [photo(tmp_path / f"{i}.png", h, w, 10 + i) for i, (h, w) in enumerate(sizes)]

    async def both() -> tuple[list[np.ndarray], list[bytes]]:
        async with AsyncClient(server.grpc_address) as client:
            return await client.stylize("stylizer", pixels), await client.stylize_png("stylizer", [pixels[3]])

    styled, pngs = asyncio.run(both())
    assert [s.shape[:2] for s in styled] == sizes
    assert all(close_to(s, p) for s, p in zip(styled, pixels, strict=True))
    with Client(server.grpc_address) as client:
        assert pngs == client.stylize_png("stylizer", [pixels[3]])  # the same bytes as the blocking client's


def test_a_model_of_another_kind_is_refused(server: ServerThread, tmp_path: Path) -> None:
    with Client(server.grpc_address) as client, pytest.raises(ValueError, match="not a style model"):
        client.stylize("classifier", [np.zeros((4, 4, 3), np.uint8)])


def test_the_cli_writes_one_png_per_photo(server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:  # fmt: skip
    pixels = photo(tmp_path / "cat.png", 30, 50, 3)
    other = photo(tmp_path / "dog.png", 20, 12, 4)
    base = ["stylize", "--url", server.grpc_address, "--model", "stylizer"]
    assert cli_main([*base, str(tmp_path / "cat.png"), "--out", str(tmp_path / "styled.png")]) == 0
    assert close_to(np.asarray(Image.open(tmp_path / "styled.png")), pixels)
    both = [str(tmp_path / "cat.png"), str(tmp_path / "dog.png")]
    assert cli_main([*base, *both, "--out-dir", str(tmp_path / "o")]) == 0
    assert close_to(np.asarray(Image.open(tmp_path / "o" / "dog.styled.png")), other)
    assert "wrote" in capsys.readouterr().out
    assert cli_main([*base, str(tmp_path / "cat.png"), str(tmp_path / "dog.png"), "--out", "x.png"]) == 1
    assert cli_main(["stylize", "--url", server.grpc_address, "--model", "classifier", str(tmp_path / "cat.png")]) == 1
    assert "not a style model" in capsys.readouterr().err
