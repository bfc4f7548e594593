"""`segment` in the SDK and the CLI against a real server running a segmenter-shaped model (tests/onnx_models.py):
image files of any size in, detections in the file's own pixels and a mask of its size out, picture written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnserve.client.aio_client import AsyncClient
from cnnserve.client.cli import main as cli_main
from cnnserve.client.client import Client
from cnnserve.contracts import segmentation
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

LABELS = [segmentation.BACKGROUND, *map(str, range(10))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write_segmenter(repo, work=1, dim=8)
    with ServerThread(loopback_settings(repo)) as running:
        yield running


def scene(path: Path, height: int, width: int, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def expected(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """The mask and row 0's class the test model answers for these pixels, at their own size."""
    scaled = pixels.astype(np.float32) * np.float32(1 / 255)  # as the recipe scales them
    reference = onnx_models.segmenter_reference(scaled[None, None])
    return reference[segmentation.MASK][0], int(reference[segmentation.CLASSES][0, 0])


def test_segment_answers_in_each_files_own_pixels(server: ServerThread, tmp_path: Path) -> None:
    sizes = [(45, 70), (16, 16)]
    files = [tmp_path / f"{h}x{w}.png" for h, w in sizes]
    pixels = [scene(f, h, w, i) for i, (f, (h, w)) in enumerate(zip(files, sizes, strict=True))]
    with Client(server.grpc_address) as client:
        results = client.segment("segmenter", files)
        boxes_only = client.segment("segmenter", files[:1], with_mask=False)[0]
    for result, image, (height, width) in zip(results, pixels, sizes, strict=True):
        mask, class_index = expected(image)
        assert result.labels == tuple(LABELS)
        assert result.mask is not None and result.mask.shape == (height, width)
        np.testing.assert_array_equal(result.mask, mask)
        (found,) = result.detections  # the padded rows (score 0) are dropped
        assert found.box == (0.0, 0.0, float(width), float(height))  # clipped back from the padded 72 x 48
        assert found.class_index == class_index and found.label == LABELS[class_index]
        assert found.score == pytest.approx(0.9)
    assert boxes_only.mask is None and boxes_only.detections == results[0].detections


def test_async_segment_matches_the_sync_client(server: ServerThread, tmp_path: Path) -> None:
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    scene(files[0], 24, 40, 1)
    scene(files[1], 24, 40, 2)

    async def both() -> list[object]:
        async with AsyncClient(server.grpc_address) as client:
            return list(await client.segment("segmenter", files))

    with Client(server.grpc_address) as client:
        sync = client.segment("segmenter", files)
    for got, want in zip(asyncio.run(both()), sync, strict=True):
        assert got.detections == want.detections  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got.mask, want.mask)  # type: ignore[attr-defined]


def test_cli_segment_prints_boxes_and_writes_the_overlay(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "scene.png"
    pixels = scene(file, 45, 70, 3)
    out = tmp_path / "overlay.png"
    assert cli_main(["segment", "--url", server.grpc_address, "--model", "segmenter", "--out", str(out),
                     str(file)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    _, class_index = expected(pixels)
    assert f"{file}: 1 found" in printed and f"{LABELS[class_index]:<10} 0.900  box x 0-70  y 0-45" in printed
    with Image.open(out) as picture:
        assert picture.mode == "RGB" and picture.size == (70 * 6, 45 * 6)  # enlarged until the short side >= 256
    assert cli_main(["segment", "--url", server.grpc_address, "--model", "segmenter", "--json", str(file)]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["detections"][0]["box"] == [0.0, 0.0, 70.0, 45.0]


def test_cli_segment_refuses_one_out_for_several_files(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, f in enumerate(files):
        scene(f, 8, 8, i)
    argv = ["segment", "--url", server.grpc_address, "--model", "segmenter", "--out", str(tmp_path / "x.png")]
    assert cli_main([*argv, *map(str, files)]) == 1
    assert "--out takes one file; use --out-dir" in capsys.readouterr().err
