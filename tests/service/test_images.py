"""Encoded images on the wire: PNG/JPEG files in for an image input, PNG files out of a generator, bad files refused.

Real files written by Pillow here, a real server, tritonclient and the generated stubs; expected tensors are computed
in the test with Pillow directly, not with the server's own preprocessing code.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image, ImageOps
from tritonclient.utils import InferenceServerException

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.contracts import style
from cnnserve.service.errors import ModelLoadError, QueueFull
from cnnserve.service.execution.images import ImageWorkers
from cnnserve.service.registry.completion import resolve
from cnnserve.service.registry.model_config import read_config
from cnnserve.service.types import ModelSpec, TensorSpec
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings
from tests.service.test_style import post_file
from tests.style_models import STRIDE, write_stylizer

MAX_PIXELS = 64 * 64
CAP = 32 * 32  # max_pixels in the config of the models named "capped_*"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(repo)
    onnx_models.write_conditional_generator(repo)
    write_stylizer(repo, "capped_stylizer", preprocessing=style.preprocessing(STRIDE, max_pixels=CAP))
    write_stylizer(repo, "roomy_stylizer", preprocessing=style.preprocessing(STRIDE, max_pixels=100 * MAX_PIXELS))
    onnx_models.write_classifier(repo, "capped_classifier",
                                 preprocessing={**onnx_models.CLASSIFIER_PREPROCESSING, "max_pixels": CAP})  # fmt: skip
    with ServerThread(loopback_settings(repo, max_image_pixels=MAX_PIXELS)) as running:
        yield running


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def expected_input(file: bytes) -> np.ndarray:
    """What the classifier should see for a file: grey, bilinear to 4x4, /255, then (x - 0.5) / 0.25."""
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(file)))
    grey = shown.convert("L").resize((4, 4), Image.Resampling.BILINEAR)
    return ((np.asarray(grey, dtype=np.float32) / 255 - 0.5) / 0.25)[None]


def files_input(files: list[bytes], shape: list[int] | None = None) -> triton.InferInput:
    tensor = triton.InferInput("images", shape or [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object).reshape(shape or [len(files)]))
    return tensor


def classify_files(client: triton.InferenceServerClient, files: list[bytes]) -> np.ndarray:
    logits: np.ndarray = client.infer("classifier", [files_input(files)]).as_numpy("logits")
    return logits


NOISE_PNG = encode(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8))  # incompressible pixels


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose pixel data is absent: only the header may be read."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_png_and_jpeg_files_are_decoded_and_preprocessed_like_the_tensor_path(
    client: triton.InferenceServerClient,
) -> None:
    rng = np.random.default_rng(3)
    files = [
        encode(rng.integers(0, 256, (8, 8), dtype=np.uint8)),  # grey PNG, resized on the server
        encode(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)),  # RGB PNG, converted to grey
        encode(rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)),  # RGBA PNG, not square
        encode(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "JPEG"),
    ]
    expected = onnx_models.classifier_reference(np.stack([expected_input(f) for f in files]))
    np.testing.assert_allclose(classify_files(client, files), expected, rtol=1e-5, atol=1e-5)


def test_a_phone_photo_is_seen_the_way_it_is_shown(client: triton.InferenceServerClient) -> None:
    """A JPEG whose EXIF says "turn 90 degrees" (as phones write them) reaches the model turned, not as stored."""
    stored = np.random.default_rng(4).integers(0, 256, (8, 16), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", exif=exif, quality=95)
    turned = onnx_models.classifier_reference(expected_input(buffer.getvalue())[None])
    as_stored = onnx_models.classifier_reference(expected_input(encode(stored))[None])
    answer = classify_files(client, [buffer.getvalue()])
    np.testing.assert_allclose(answer, turned, rtol=1e-4, atol=1e-4)
    assert not np.allclose(answer, as_stored, atol=1e-2)


def test_files_as_n_by_1_and_through_typed_contents(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    files = [encode(np.full((4, 4), v, dtype=np.uint8)) for v in (0, 128, 255)]
    expected = onnx_models.classifier_reference(np.stack([expected_input(f) for f in files]))
    request = pb.ModelInferRequest(model_name="classifier")
    tensor = request.inputs.add(name="images", datatype="BYTES", shape=[3, 1])
    tensor.contents.bytes_contents.extend(files)
    reply = stub.ModelInfer(request)
    logits = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(3, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_files_and_tensors_give_the_same_answer(client: triton.InferenceServerClient) -> None:
    file = encode(np.random.default_rng(5).integers(0, 256, (4, 4), dtype=np.uint8))
    tensor = triton.InferInput("images", [1, 1, 4, 4], "FP32")
    tensor.set_data_from_numpy(expected_input(file)[None])
    from_tensor = client.infer("classifier", [tensor]).as_numpy("logits")
    np.testing.assert_allclose(classify_files(client, [file]), from_tensor, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ([b"", b"not an image at all"], ["item 0", "not a PNG or JPEG"]),
        ([encode(np.zeros((4, 4), np.uint8)), encode(np.zeros((4, 4), np.uint8), "GIF")], ["item 1", "not a PNG"]),
        ([encode(np.zeros((4, 4), np.uint8)), NOISE_PNG[: len(NOISE_PNG) // 2]], ["item 1", "corrupt PNG"]),
        ([encode(np.zeros((80, 80), np.uint8))], ["item 0", "80x80", "max_image_pixels 4096"]),
        ([huge_png_header(100_000, 100_000)], ["item 0", "send a smaller image"]),
    ],
    ids=["empty", "gif", "truncated", "too-many-pixels", "bomb-header"],
)
def test_bad_files_are_refused_naming_the_item(
    client: triton.InferenceServerClient, files: list[bytes], words: list[str]
) -> None:
    with pytest.raises(InferenceServerException) as info:
        classify_files(client, files)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    for word in words:
        assert word in str(info.value.message())
    assert client.is_server_ready()  # and still serving
    assert classify_files(client, [encode(np.zeros((4, 4), np.uint8))]).shape == (1, 10)


def progressive_jpeg(pixels: np.ndarray, extra_scans: int = 0, comment: bytes = b"") -> bytes:
    """A progressive JPEG (Pillow writes 10 scans for RGB) with its last scan repeated `extra_scans` times before
    EOI: libjpeg warns but decodes it, walking every block of the image once more for each repeat."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", progressive=True, comment=comment)
    data = buffer.getvalue()
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")  # scan data stuffs FF as FF 00
    return data[:end] + data[last_scan:end] * extra_scans + data[end:]


def test_a_jpeg_with_thousands_of_scans_is_refused_before_it_is_decoded(tmp_path: Path, start_server: Any) -> None:
    """5,000 scans of a 2048 x 2048 image take libjpeg about 15 s; refused at once on both doors, at the default
    max_jpeg_scans (64), while the same image with an ordinary 10 scans is served."""
    onnx_models.write_classifier(tmp_path)
    running = start_server(tmp_path)
    flat = np.full((2048, 2048, 3), 128, np.uint8)
    bomb = progressive_jpeg(flat, extra_scans=4990)
    with triton.InferenceServerClient(running.grpc_address) as client:
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as info:
            classify_files(client, [bomb])
        assert time.monotonic() - started < 2.0
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "item 0: JPEG with 5000 scans is more than max_jpeg_scans 64" in str(info.value.message())
        started = time.monotonic()
        status, _, body = post_file(running, "classifier", bomb, content_type="image/jpeg")
        assert time.monotonic() - started < 2.0
        assert status == 400 and b"5000 scans" in body
        assert classify_files(client, [progressive_jpeg(flat)]).shape == (1, 10)
        assert post_file(running, "classifier", progressive_jpeg(flat), content_type="image/jpeg")[0] == 200


def test_only_real_scans_count(client: triton.InferenceServerClient) -> None:
    """Scan markers inside a segment's payload (a comment here, an EXIF thumbnail's own scans in a photo) are
    skipped with the segment, so an ordinary progressive JPEG that carries them is not refused."""
    pixels = np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    file = progressive_jpeg(pixels, comment=b"\xff\xda\x00\x08" * 1000)
    assert classify_files(client, [file]).shape == (1, 10)


def rgb_png(height: int, width: int) -> bytes:
    return encode(np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("model", ["capped_stylizer", "capped_classifier"])
def test_a_models_own_max_pixels_refuses_larger_files_on_both_doors(server: ServerThread, model: str) -> None:
    """A padded model refuses by the headers while costing the request (the 4096 x 4096 file is named for the cap,
    not for the 50 M elements it would make), a resized one as it opens the file; both before decoding (a header-only
    PNG is refused for its size, not as cut short), and a file at the cap is served."""
    named = f"more than model '{model}' accepts (max_pixels {CAP} in its config); send a smaller image"
    with triton.InferenceServerClient(server.grpc_address) as client:
        for file, size in ((rgb_png(32, 33), "33x32"), (huge_png_header(4096, 4096), "4096x4096")):
            with pytest.raises(InferenceServerException) as info:
                client.infer(model, [files_input([file])])
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert f"input 'images' item 0: {size} pixels is {named}" in str(info.value.message())
            status, _, body = post_file(server, model, file)
            assert status == 400 and named in json.loads(body)["error"]
        client.infer(model, [files_input([rgb_png(32, 32)])])  # at the cap: served
        assert post_file(server, model, rgb_png(32, 32))[0] == 200


def test_the_servers_max_image_pixels_stays_the_ceiling(client: triton.InferenceServerClient) -> None:
    """A config may state a cap above the server's: the server's max_image_pixels still refuses past it."""
    with pytest.raises(InferenceServerException) as info:
        client.infer("roomy_stylizer", [files_input([rgb_png(80, 80)])])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"80x80 pixels is more than max_image_pixels {MAX_PIXELS}" in str(info.value.message())


def test_a_bad_max_pixels_fails_the_models_load_naming_the_key(tmp_path: Path, start_server: Any) -> None:
    write_stylizer(tmp_path, "bad", preprocessing={**style.preprocessing(STRIDE), "max_pixels": -1})
    write_stylizer(tmp_path, "good", preprocessing=style.preprocessing(STRIDE, max_pixels=CAP))
    running = start_server(tmp_path)
    with triton.InferenceServerClient(running.grpc_address) as client:
        assert client.is_model_ready("good") and not client.is_model_ready("bad")
        reason = {row.name: row.reason for row in client.get_model_repository_index().models}["bad"]
        assert "key 'preprocessing': max_pixels must be a positive integer" in reason, reason


@pytest.mark.parametrize("shape", [[2, 2], [0], [33]], ids=["rank", "empty", "over-max-batch"])
def test_files_in_the_wrong_shape_are_refused(client: triton.InferenceServerClient, shape: list[int]) -> None:
    count = int(np.prod(shape))
    files = [encode(np.zeros((4, 4), np.uint8))] * count
    with pytest.raises(InferenceServerException) as info:
        client.infer("classifier", [files_input(files, shape)])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "encoded images travel as BYTES [n] or [n,1]" in str(info.value.message())


def test_bytes_are_refused_for_a_model_without_an_image_input(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("latent", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([encode(np.zeros((4, 4), np.uint8))], dtype=object))
    with pytest.raises(InferenceServerException) as info:
        client.infer("cgen", [tensor])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expected FP32" in str(info.value.message())


def generator_inputs(n: int) -> tuple[list[triton.InferInput], np.ndarray, np.ndarray]:
    latent = np.random.default_rng(9).standard_normal((n, onnx_models.LATENT)).astype(np.float32)
    classes = np.arange(n, dtype=np.int64) % 10
    tensors = [triton.InferInput("latent", list(latent.shape), "FP32"), triton.InferInput("class", [n], "INT64")]
    tensors[0].set_data_from_numpy(latent)
    tensors[1].set_data_from_numpy(classes)
    return tensors, latent, classes


def test_generator_returns_png_files_when_asked(client: triton.InferenceServerClient) -> None:
    inputs, latent, classes = generator_inputs(5)
    reply = client.infer("cgen", inputs, parameters={"output_format": "png"})
    files = reply.as_numpy("images")
    assert reply.get_output("images").datatype == "BYTES" and files.shape == (5,)
    produced = onnx_models.conditional_generator_reference(latent, classes)  # [5,1,2,4] in [-1,1]
    expected = np.round((produced[:, 0] + 1) / 2 * 255).astype(np.uint8)
    for file, pixels in zip(files, expected, strict=True):
        image = Image.open(io.BytesIO(file))
        assert (image.format, image.mode, image.size) == ("PNG", "L", (4, 2))
        np.testing.assert_array_equal(np.asarray(image), pixels)
    floats = client.infer("cgen", inputs, parameters={"output_format": "tensor"}).as_numpy("images")
    np.testing.assert_allclose(floats, produced, rtol=1e-6)


@pytest.mark.parametrize(
    ("model", "value", "words"),
    [("cgen", "jpeg", 'must be "png" or "tensor"'), ("classifier", "png", "has no image output")],
)
def test_png_output_refusals(client: triton.InferenceServerClient, model: str, value: str, words: str) -> None:
    inputs = generator_inputs(1)[0] if model == "cgen" else [files_input([encode(np.zeros((4, 4), np.uint8))])]
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs, parameters={"output_format": value})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and words in str(info.value.message())


def test_stream_carries_files_too(server: ServerThread) -> None:
    files = [encode(np.full((4, 4), 200, dtype=np.uint8))]
    request = pb.ModelInferRequest(model_name="classifier", id="f")
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(files[0])) + files[0])
    with grpc.insecure_channel(server.grpc_address) as channel:
        replies = list(pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([request])))
    assert replies[0].error_message == "" and replies[0].infer_response.id == "f"


# --- configuration ----------------------------------------------------------------------------------------------

IMAGES = TensorSpec("images", "FP32", (-1, 1, 4, 4))
LOGITS = TensorSpec("logits", "FP32", (-1, 10))


def spec_with(tmp_path: Path, preprocessing: dict[str, object]) -> ModelSpec:
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"max_batch_size": 8, "preprocessing": preprocessing}))
    return resolve(read_config(folder), [IMAGES], [LOGITS], version=1)


def test_image_input_recipe_must_fit_the_graph(tmp_path: Path) -> None:
    good = {**onnx_models.CLASSIFIER_PREPROCESSING}
    image_input = spec_with(tmp_path, good).image_input
    assert image_input is not None and image_input.preprocessing.item_shape == (1, 4, 4)
    cases = [
        ({**good, "height": 5}, "makes NCHW items [1, 5, 4], but input 'images' takes FP32 [-1, 1, 4, 4]"),
        ({**good, "channels": 3, "mean": [0, 0, 0], "std": [1, 1, 1]}, "makes NCHW items [3, 4, 4]"),
        ({**good, "input_format": "video"}, '\'preprocessing.input_format\' must be "image" or "tensor"'),
        ({**good, "input": "nope"}, "'preprocessing.input' must name the image input"),
        ({**good, "std": [0.0]}, "std values must not be 0"),
        ({key: v for key, v in good.items() if key != "width"}, "key 'width' is missing"),
        ({**good, "max_pixels": 0}, "key 'preprocessing': max_pixels must be a positive integer (width x height)"),
        ({**good, "max_pixels": 1024.5}, "max_pixels must be a positive integer (width x height), got 1024.5"),
        ({**good, "max_pixels": "1024"}, "max_pixels must be a positive integer (width x height), got '1024'"),
        ({**good, "max_pixels": True}, "max_pixels must be a positive integer (width x height), got True"),
    ]
    for preprocessing, words in cases:
        with pytest.raises(ModelLoadError) as info:
            spec_with(tmp_path, preprocessing)
        assert words in str(info.value), (preprocessing, str(info.value))


def test_the_image_pool_queue_is_bounded() -> None:
    """Past the threads and MAX_WAITING_JOBS waiting, the next job is refused at once (QueueFull:
    RESOURCE_EXHAUSTED / 429); once jobs finish, new ones are taken again."""

    async def main() -> None:
        workers = ImageWorkers(max_pixels=1, max_jpeg_scans=1, threads=1, max_waiting=2)
        release = threading.Event()
        held = [asyncio.ensure_future(workers.run(release.wait, 5)) for _ in range(3)]  # 1 running, 2 waiting
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull, match="2 jobs wait for its 1 threads"):
            await workers.run(release.wait, 5)
        release.set()
        await asyncio.gather(*held)
        await asyncio.sleep(0.01)  # the threads' done callbacks reach the loop
        assert workers.jobs == 0
        assert await workers.run(len, b"taken") == 5
        workers.close()

    asyncio.run(main())
