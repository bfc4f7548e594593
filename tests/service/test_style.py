"""A style model served image to image (contracts/style.py): files of any size padded to the stride and the answer
cropped back, PNG out on gRPC (output_format) and REST (Accept: image/png) or the raw tensor, same-size requests
batched together and different sizes never failing for it, and bad input refused.

The model is tests/style_models.write_stylizer (real ONNX, its answer computable in numpy: served_reference).
"""

from __future__ import annotations

import http.client
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings
from tests.service.test_segmentation import concurrently, stats
from tests.style_models import served_reference, stylizer_reference, write_stylizer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    write_stylizer(repo)
    # the same graph, waiting for batch-mates, so that concurrent requests are seen to merge (or not)
    write_stylizer(repo, "waiting", dynamic_batching={"max_queue_delay_us": 300_000, "wait_when_idle": True})
    onnx_models.write_classifier(repo)
    with ServerThread(loopback_settings(repo)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_address) as c:
        yield c


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_file(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def files_input(files: list[bytes]) -> Any:
    tensor = triton.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object))
    return tensor


def assert_png_of(data: bytes, tensor: np.ndarray) -> None:
    """`data` is an RGB PNG of `tensor` [1, 3, h, w] in [0, 1], each value within one 8-bit step (the 2x2 means
    here fall on exact halves, which float32 rounds either way)."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == tensor.shape[:1:-1]
    expected = np.clip(tensor[0], 0, 1).transpose(1, 2, 0) * 255
    assert np.abs(np.asarray(image).astype(np.float32) - expected).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("size", [(70, 45), (16, 16), (9, 33), (1, 1)])
def test_a_file_of_any_size_comes_back_at_its_size(client: triton.InferenceServerClient, size: tuple[int, int]
                                                   ) -> None:  # fmt: skip
    pixels = photo(*size)
    result = client.infer("stylizer", [files_input([png_file(pixels)])])
    out = result.as_numpy("stylized")
    assert out.shape == (1, 3, *size) and out.dtype == np.float32
    np.testing.assert_allclose(out, served_reference(pixels), atol=1e-6)


def test_grpc_sends_png_files_on_output_format_png(client: triton.InferenceServerClient) -> None:
    pixels = photo(30, 50, 2)
    result = client.infer("stylizer", [files_input([png_file(pixels)])], parameters={"output_format": "png"})
    [data] = result.as_numpy("stylized").reshape(-1)
    assert Image.open(io.BytesIO(data)).size == (50, 30)
    assert_png_of(data, served_reference(pixels))


def test_a_tensor_in_gets_the_tensor_out(client: triton.InferenceServerClient) -> None:
    images = np.random.default_rng(3).random((2, 3, 8, 12)).astype(np.float32)
    tensor = triton.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    np.testing.assert_allclose(client.infer("stylizer", [tensor]).as_numpy("stylized"), stylizer_reference(images),
                               atol=1e-6)  # fmt: skip


def test_requests_of_one_size_share_a_batch(server: ServerThread) -> None:
    sized = [photo(24, 40, seed) for seed in range(3)]
    with triton.InferenceServerClient(server.grpc_address) as c:
        before = stats(c, "waiting").execution_count
        results = concurrently([lambda p=p: c.infer("waiting", [files_input([png_file(p)])]) for p in sized])
        assert stats(c, "waiting").execution_count - before == 1  # one merged batch
    for pixels, result in zip(sized, results, strict=True):  # each caller gets its own answer
        np.testing.assert_allclose(result.as_numpy("stylized"), served_reference(pixels), atol=1e-6)


def test_requests_of_different_sizes_never_fail_for_it(server: ServerThread) -> None:
    sizes = [(16, 16), (24, 40), (9, 33), (24, 40), (70, 45), (16, 16)]
    sized = [photo(*s, seed=i) for i, s in enumerate(sizes)]
    with triton.InferenceServerClient(server.grpc_address) as c:
        before = stats(c, "waiting").execution_count
        results = concurrently([lambda p=p: c.infer("waiting", [files_input([png_file(p)])]) for p in sized])
        batches = stats(c, "waiting").execution_count - before
    assert len(set(sizes)) <= batches <= len(sizes)  # never two sizes in one batch (merging: the test above)
    for pixels, result in zip(sized, results, strict=True):
        np.testing.assert_allclose(result.as_numpy("stylized"), served_reference(pixels), atol=1e-6)


def post_file(server: ServerThread, model: str, data: bytes, accept: str | None = None,
              content_type: str = "image/png") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=10)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=data, headers=headers)
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def test_rest_answers_an_image_body_with_a_png_or_the_tensor(server: ServerThread) -> None:
    pixels = photo(70, 45, 6)
    expected = served_reference(pixels)
    status, headers, body = post_file(server, "stylizer", png_file(pixels), accept="image/png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert_png_of(body, expected)
    status, headers, body = post_file(server, "stylizer", png_file(pixels))
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    [output] = json.loads(body)["outputs"]
    assert output["name"] == "stylized" and output["shape"] == [1, 3, 70, 45]
    np.testing.assert_allclose(np.asarray(output["data"], np.float32).reshape(1, 3, 70, 45), expected, atol=1e-6)


def test_a_jpeg_and_a_grey_file_are_taken_as_rgb(client: triton.InferenceServerClient) -> None:
    grey = photo(12, 20, 7)[..., 0]
    result = client.infer("stylizer", [files_input([png_file(grey)])])
    np.testing.assert_allclose(result.as_numpy("stylized"), served_reference(np.repeat(grey[..., None], 3, 2)),
                               atol=1e-6)  # fmt: skip
    buffer = io.BytesIO()
    Image.fromarray(photo(12, 20, 8)).save(buffer, format="JPEG")
    assert client.infer("stylizer", [files_input([buffer.getvalue()])]).as_numpy("stylized").shape == (1, 3, 12, 20)


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "parameters", "named"),
    [
        (lambda: [files_input([b"not an image at all"])], {}, "not a PNG or JPEG"),
        (lambda: [files_input([png_file(photo(16, 16)), png_file(photo(8, 8))])], {}, "share one size"),
        (lambda: [files_input([png_file(photo(16, 16))])], {"output_format": "gif"}, "output_format"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_problem(client: triton.InferenceServerClient, inputs: Any,
                                                          parameters: dict[str, Any], named: str) -> None:  # fmt: skip
    with pytest.raises(InferenceServerException) as info:
        client.infer("stylizer", inputs(), parameters=parameters or None)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and named in str(info.value)


def test_a_tensor_off_the_stride_is_refused(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("images", [1, 3, 9, 12], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 9, 12), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("stylizer", [tensor])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "stride 4" in str(info.value)


def test_rest_refuses_bad_bodies(server: ServerThread) -> None:
    status, _, body = post_file(server, "stylizer", b"\x89PNG but truncated", accept="image/png")
    assert status == 400 and b"error" in body
    status, _, body = post_file(server, "stylizer", png_file(photo(8, 8)), content_type="image/gif")
    assert status == 415 and b"image/gif" in body


def test_too_many_pixels_are_refused(tmp_path: Path, start_server: Any) -> None:
    write_stylizer(tmp_path)
    running = start_server(tmp_path, max_image_pixels=100)
    with triton.InferenceServerClient(running.grpc_address) as c, pytest.raises(InferenceServerException) as info:
        c.infer("stylizer", [files_input([png_file(photo(16, 16))])])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "max_image_pixels" in str(info.value)
    status, _, _ = post_file(running, "stylizer", png_file(photo(16, 16)), accept="image/png")
    assert status == 400


def test_the_config_states_the_task_and_the_style_image(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("stylizer").config
    assert config.parameters["task"].string_value == "style_transfer"
    assert config.parameters["style_image"].string_value == "style.png"
    assert config.parameters["stride"].string_value == "4"
