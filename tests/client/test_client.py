"""The SDK and CLI against a real server: image files in, labels out; generator out, PNG grid written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnserve.client.cli import main as cli_main
from cnnserve.client.client import Client
from cnnserve.client.errors import ClientError, InvalidArgumentError, NotFoundError, UnavailableError
from cnnserve.client.images import ImageLike
from tests import onnx_models
from tests.conftest import ServerThread


@pytest.fixture
def server(tmp_path: Path, start_server: object) -> ServerThread:
    onnx_models.write_classifier(tmp_path / "repo")
    onnx_models.write_conditional_generator(tmp_path / "repo")
    return start_server(tmp_path / "repo")  # type: ignore[operator,no-any-return]


def write_images(folder: Path, count: int) -> tuple[list[Path], np.ndarray]:
    """Grey 8x8 PNGs (the model wants 4x4: the client resizes) and the tensors the model should see."""
    rng = np.random.default_rng(7)
    paths, tensors = [], []
    hints = onnx_models.CLASSIFIER_PREPROCESSING
    for i in range(count):
        pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        small = np.asarray(Image.fromarray(pixels).resize((4, 4), Image.Resampling.BILINEAR), dtype=np.float32)
        tensors.append(((small / 255 - 0.5) / 0.25)[None])
        paths.append(path)
    assert hints["height"] == 4
    return paths, np.stack(tensors)


def test_classify_reads_preprocessing_from_the_server(server: ServerThread, tmp_path: Path) -> None:
    paths, tensors = write_images(tmp_path, 3)
    expected = onnx_models.classifier_reference(tensors)
    with Client(server.grpc_address) as client:
        ranked = client.classify("classifier", paths, top_k=2)
    for answer, logits in zip(ranked, expected, strict=True):
        assert [label for label, _ in answer] == [f"digit-{i}" for i in np.argsort(-logits)[:2]]
        assert answer[0][1] >= answer[1][1]


def test_generate_returns_uint8_images_of_the_asked_class(server: ServerThread) -> None:
    with Client(server.grpc_address) as client:
        images = client.generate("cgen", 5, seed=3, label=7)
    assert images.dtype == np.uint8 and images.shape == (5, 2, 4, 1)


def test_errors_carry_the_status_and_have_a_type_per_status(server: ServerThread) -> None:
    with Client(server.grpc_address) as client:
        with pytest.raises(NotFoundError) as missing:
            client.metadata("no-such-model")
        with pytest.raises(InvalidArgumentError) as refused:
            client.infer("classifier", {"images": np.zeros((1, 2), np.float32)})
    assert missing.value.code.name == "NOT_FOUND" and "no-such-model" in missing.value.message
    assert refused.value.code.name == "INVALID_ARGUMENT" and "input 'images'" in refused.value.message
    assert isinstance(refused.value, ClientError)
    server.stop()
    with Client(server.grpc_address, timeout=2) as client, pytest.raises(UnavailableError):
        client.health()


def test_cli_classify_json_generate_models_health(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths, _ = write_images(tmp_path, 2)
    url = ["--url", server.grpc_address]
    assert cli_main(["classify", *url, "--model", "classifier", "--json", *map(str, paths)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["file"] for entry in listed] == [str(p) for p in paths]
    assert cli_main(["classify", *url, "--model", "classifier", "--json", "--send", "tensors", *map(str, paths)]) == 0
    assert [e["top"][0]["label"] for e in json.loads(capsys.readouterr().out)] == [e["top"][0]["label"] for e in listed]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert cli_main(["classify", *url, "--model", "classifier", str(tmp_path / "broken.png")]) == 1
    error = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in error and "item 0" in error
    grid = tmp_path / "grid.png"
    assert (
        cli_main(
            ["generate", *url, "--model", "cgen", "-n", "6", "--out", str(grid), "--out-dir", str(tmp_path / "each")]
        )
        == 0
    )
    assert Image.open(grid).size[0] > 0 and len(list((tmp_path / "each").glob("*.png"))) == 6
    assert cli_main(["models", *url]) == 0
    assert "classifier" in capsys.readouterr().out
    assert cli_main(["health", *url]) == 0
    assert cli_main(["health", *url, "--model", "nope"]) == 1


def test_classify_sends_files_when_the_model_takes_them_and_tensors_on_request(
    server: ServerThread, tmp_path: Path
) -> None:
    """The classifier declares input_format "image": by default the files travel as they are and the server decodes
    them; send_files=False preprocesses here. Both reach the model as the same numbers."""
    paths, tensors = write_images(tmp_path, 4)
    expected = onnx_models.classifier_reference(tensors)
    with Client(server.grpc_address) as client:
        as_files = client.classify("classifier", paths, top_k=10)
        as_tensors = client.classify("classifier", paths, top_k=10, send_files=False)
    for files_answer, tensor_answer, logits in zip(as_files, as_tensors, expected, strict=True):
        assert [label for label, _ in files_answer] == [label for label, _ in tensor_answer]
        assert files_answer[0][0] == f"digit-{int(np.argmax(logits))}"
        np.testing.assert_allclose([p for _, p in files_answer], [p for _, p in tensor_answer], atol=1e-5)


def test_generate_png_gives_the_same_pixels_as_generate(server: ServerThread) -> None:
    with Client(server.grpc_address) as client:
        pixels = client.generate("cgen", 3, seed=4, label=2)
        files = client.generate_png("cgen", 3, seed=4, label=2)
    assert len(files) == 3
    for file, image in zip(files, pixels, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(file))), image[..., 0])


@pytest.mark.parametrize("send_files", [True, False], ids=["as-files", "as-tensors"])
def test_classify_takes_paths_bytes_pillow_images_and_pixels(
    server: ServerThread, tmp_path: Path, send_files: bool
) -> None:
    paths, tensors = write_images(tmp_path, 4)
    pixels = np.asarray(Image.open(paths[3]))
    mixed: list[ImageLike] = [paths[0], paths[1].read_bytes(), Image.open(paths[2]), pixels]
    expected = onnx_models.classifier_reference(tensors)
    with Client(server.grpc_address) as client:
        ranked = client.classify("classifier", mixed, top_k=10, send_files=send_files)
    for answer, logits in zip(ranked, expected, strict=True):
        assert [label for label, _ in answer] == [f"digit-{i}" for i in np.argsort(-logits)]
