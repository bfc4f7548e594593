"""Occlusion explanations served: the heatmap and explained class against a numpy reference written out here, over
gRPC (request parameter explain) and REST (/explain, JSON and PNG, tensor and file bodies); bad parameters, the
copies limit, models that are not classifiers, deadlines; and explain requests sharing the queue fairly.

The models are tests/onnx_models' linear classifiers on 4x4 images (real ONNX), whose scores numpy computes exactly.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from PIL import Image
from tritonclient.utils import InferenceServerException

from cnnserve.contracts import features
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

MAX_COPIES = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write_pixel_classifier(repo)  # takes [0, 1] pixels: the fill 0 is black
    onnx_models.write_classifier(repo)  # takes normalised tensors: black is (0 - 0.5) / 0.25
    onnx_models.write_pixel_generator(repo)
    onnx_models.write_slow_classifier(repo, work=24)
    with ServerThread(loopback_settings(repo, max_explain_copies=MAX_COPIES)) as running:
        yield running


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def logits(images: np.ndarray) -> np.ndarray:
    """Both classifiers' answer on pixels: "pixels" normalises them in its graph, "classifier" takes them so."""
    return onnx_models.classifier_reference((images - 0.5) / 0.25)


def reference(images: np.ndarray, patch: int, stride: int, fill: float, target: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(heatmaps [n, 4, 4], classes [n]) of pixels by the definition: each pixel the mean drop of the class's
    probability over the patches covering it; positions every stride, the last flush with the edge."""

    def probabilities(x: np.ndarray) -> np.ndarray:
        return softmax(logits(x).astype(np.float64))

    size = images.shape[-1]
    positions = sorted(set(range(0, size - patch + 1, stride)) | {size - patch})
    maps, classes = [], []
    for image in images:
        base = probabilities(image[None])[0]
        k = int(np.argmax(base)) if target is None else target
        total, count = np.zeros((size, size)), np.zeros((size, size))
        for top in positions:
            for left in positions:
                occluded = image.copy()
                occluded[:, top : top + patch, left : left + patch] = fill
                drop = base[k] - probabilities(occluded[None])[0, k]
                total[top : top + patch, left : left + patch] += drop
                count[top : top + patch, left : left + patch] += 1
        maps.append(total / count)
        classes.append(k)
    return np.asarray(maps), np.asarray(classes)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 4, 4), dtype=np.float32)


def explain_grpc(client: triton.InferenceServerClient, model: str, images: np.ndarray, outputs: list[str] | None = None,
                 **parameters: Any) -> triton.InferResult:  # fmt: skip
    tensor = triton.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    wanted = [triton.InferRequestedOutput(name) for name in outputs] if outputs is not None else None
    return client.infer(model, [tensor], outputs=wanted, parameters={"explain": "occlusion", **parameters})


def post(server: ServerThread, path: str, body: bytes, headers: dict[str, str] | None = None
         ) -> tuple[int, str, bytes]:  # fmt: skip
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def json_body(images: np.ndarray, **parameters: Any) -> bytes:
    tensor = {"name": "images", "datatype": "FP32", "shape": list(images.shape), "data": images.reshape(-1).tolist()}
    return json.dumps({"inputs": [tensor], "parameters": parameters}).encode()


def png_file(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the answer ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("patch", "stride"), [(2, 1), (3, 2), (features.DEFAULT_PATCH, features.DEFAULT_STRIDE)])
def test_grpc_explanation_matches_the_numpy_reference(client: triton.InferenceServerClient, patch: int,
                                                      stride: int) -> None:  # fmt: skip
    images = pixels(3)
    result = explain_grpc(client, "pixels", images, patch=patch, patch_stride=stride)
    expected_maps, expected_classes = reference(images, patch, stride, fill=0.0)
    heat = result.as_numpy(features.EXPLANATION_OUTPUT)
    assert heat.dtype == np.float32 and heat.shape == (3, 4, 4)
    np.testing.assert_allclose(heat, expected_maps, atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy(features.EXPLAINED_CLASS_OUTPUT), expected_classes)
    np.testing.assert_allclose(result.as_numpy("logits"), logits(images), atol=1e-4)


def test_target_class_is_the_class_explained(client: triton.InferenceServerClient) -> None:
    images = pixels(2, seed=1)
    result = explain_grpc(client, "pixels", images, patch=2, patch_stride=1, target_class=7)
    expected, _ = reference(images, 2, 1, fill=0.0, target=7)
    np.testing.assert_allclose(result.as_numpy(features.EXPLANATION_OUTPUT), expected, atol=1e-5)
    assert result.as_numpy(features.EXPLAINED_CLASS_OUTPUT).tolist() == [7, 7]


def test_a_normalising_model_is_occluded_with_its_own_black(client: triton.InferenceServerClient) -> None:
    images = pixels(2, seed=2)
    normalised = (images - 0.5) / 0.25  # what this model takes as a tensor
    result = explain_grpc(client, "classifier", normalised, patch=2, patch_stride=1)
    expected, classes = reference(images, 2, 1, fill=0.0)  # black pixels, in its tensor space
    np.testing.assert_allclose(result.as_numpy(features.EXPLANATION_OUTPUT), expected, atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy(features.EXPLAINED_CLASS_OUTPUT), classes)


def test_naming_only_the_explanation_outputs_answers_only_them(client: triton.InferenceServerClient) -> None:
    result = explain_grpc(client, "pixels", pixels(1), outputs=[features.EXPLAINED_CLASS_OUTPUT,
                                                                 features.EXPLANATION_OUTPUT])  # fmt: skip
    names = [output.name for output in result.get_response().outputs]
    assert names == [features.EXPLANATION_OUTPUT, features.EXPLAINED_CLASS_OUTPUT]


def test_grpc_png_is_one_heatmap_file_per_item(client: triton.InferenceServerClient) -> None:
    result = explain_grpc(client, "pixels", pixels(2), output_format="png")
    files = result.as_numpy(features.EXPLANATION_OUTPUT)
    assert files.shape == (2,)
    for data in files:
        picture = Image.open(io.BytesIO(data))
        assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (4, 4))


def test_files_are_explained_like_their_pixels(client: triton.InferenceServerClient) -> None:
    images = np.round(pixels(2, seed=3) * 255) / 255  # what survives a PNG
    files = triton.InferInput("images", [2], "BYTES")
    files.set_data_from_numpy(np.array([png_file(image) for image in images], dtype=object))
    result = client.infer("pixels", [files], parameters={"explain": "occlusion", "patch": 2, "patch_stride": 1})
    expected, _ = reference(images.astype(np.float32), 2, 1, fill=0.0)
    np.testing.assert_allclose(result.as_numpy(features.EXPLANATION_OUTPUT), expected, atol=1e-5)


def test_rest_explain_answers_an_infer_response(server: ServerThread) -> None:
    images = pixels(2, seed=4)
    status, content_type, body = post(server, "/v2/models/pixels/explain", json_body(images, patch=2, patch_stride=1))
    assert status == 200 and content_type == "application/json"
    reply = json.loads(body)
    outputs = {output["name"]: output for output in reply["outputs"]}
    assert list(outputs) == ["logits", features.EXPLANATION_OUTPUT, features.EXPLAINED_CLASS_OUTPUT]
    heat = outputs[features.EXPLANATION_OUTPUT]
    assert heat["datatype"] == "FP32" and heat["shape"] == [2, 4, 4]
    expected, classes = reference(images, 2, 1, fill=0.0)
    np.testing.assert_allclose(np.reshape(heat["data"], (2, 4, 4)), expected, atol=1e-5)
    assert outputs[features.EXPLAINED_CLASS_OUTPUT]["data"] == classes.tolist()
    status, _, _ = post(server, "/v2/models/pixels/versions/1/explain", json_body(images))
    assert status == 200


def test_rest_explain_naming_only_its_outputs_answers_only_them(server: ServerThread) -> None:
    """What the page at / sends: the drawing as a JSON tensor, asking for the two explanation outputs by name."""
    tensor = {"name": "images", "datatype": "FP32", "shape": [1, 1, 4, 4], "data": pixels(1).reshape(-1).tolist()}
    named = [{"name": features.EXPLANATION_OUTPUT}, {"name": features.EXPLAINED_CLASS_OUTPUT}]
    status, _, body = post(server, "/v2/models/pixels/explain", json.dumps({"inputs": [tensor], "outputs": named}
                                                                           ).encode())  # fmt: skip
    assert status == 200
    outputs = json.loads(body)["outputs"]
    assert [output["name"] for output in outputs] == [features.EXPLANATION_OUTPUT, features.EXPLAINED_CLASS_OUTPUT]
    expected, classes = reference(pixels(1), features.DEFAULT_PATCH, features.DEFAULT_STRIDE, fill=0.0)
    np.testing.assert_allclose(outputs[0]["data"], expected.reshape(-1), atol=1e-5)
    assert outputs[1]["data"] == classes.tolist()


def test_tritonclient_http_explains_through_the_infer_route(server: ServerThread) -> None:
    images = pixels(2, seed=6)
    with triton_http.InferenceServerClient(server.rest_address) as client:
        tensor = triton_http.InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        result = client.infer("pixels", [tensor], parameters={"explain": "occlusion", "patch": 2, "patch_stride": 1})
    expected, classes = reference(images, 2, 1, fill=0.0)
    np.testing.assert_allclose(result.as_numpy(features.EXPLANATION_OUTPUT), expected, atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy(features.EXPLAINED_CLASS_OUTPUT), classes)


def test_rest_explain_answers_a_png_when_accepted(server: ServerThread) -> None:
    status, content_type, body = post(server, "/v2/models/pixels/explain", json_body(pixels(2)),
                                      {"Accept": "image/png"})  # fmt: skip
    assert status == 200 and content_type == "image/png"
    assert Image.open(io.BytesIO(body)).size == (4, 4)
    status, content_type, _ = post(server, "/v2/models/pixels/infer", json_body(pixels(1), explain="occlusion"),
                                   {"Accept": "image/png"})  # fmt: skip
    assert status == 200 and content_type == "image/png"


def test_rest_explain_takes_an_image_file(server: ServerThread) -> None:
    image = np.round(pixels(1, seed=5) * 255) / 255
    headers = {"Content-Type": "image/png"}
    status, _, body = post(server, "/v2/models/pixels/explain?patch=2&patch_stride=1&target_class=3",
                           png_file(image[0]), headers)  # fmt: skip
    assert status == 200
    reply = json.loads(body)
    expected, _ = reference(image.astype(np.float32), 2, 1, fill=0.0, target=3)
    assert reply["explained_class"] == 3 and reply["label"] == "digit-3"
    np.testing.assert_allclose(reply["explanation"], expected[0], atol=1e-5)
    status, content_type, body = post(server, "/v2/models/pixels/explain", png_file(image[0]),
                                      {**headers, "Accept": "image/png"})  # fmt: skip
    assert status == 200 and content_type == "image/png" and Image.open(io.BytesIO(body)).mode == "RGB"


# -- refusals --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", [
    {"explain": "gradients"},
    {"explain": "occlusion", "patch": 0},
    {"explain": "occlusion", "patch": 5},  # larger than the 4x4 image
    {"explain": "occlusion", "patch": 2, "patch_stride": 3},  # would leave pixels uncovered
    {"explain": "occlusion", "patch": "big"},
    {"explain": "occlusion", "target_class": 10},
    {"explain": "occlusion", "output_format": "jpeg"},
])  # fmt: skip
def test_bad_parameters_are_invalid_argument(client: triton.InferenceServerClient, parameters: dict[str, Any]) -> None:
    tensor = triton.InferInput("images", [1, 1, 4, 4], "FP32")
    tensor.set_data_from_numpy(pixels(1))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("pixels", [tensor], parameters=parameters)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_more_copies_than_the_limit_are_refused_naming_both(client: triton.InferenceServerClient,
                                                            server: ServerThread) -> None:  # fmt: skip
    images = pixels(32)  # 32 items x 16 positions (patch 1, stride 1) = 512 copies, over the limit of 300
    with pytest.raises(InferenceServerException) as caught:
        explain_grpc(client, "pixels", images, patch=1, patch_stride=1)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    message = caught.value.message()
    assert "512" in message and str(MAX_COPIES) in message and "max_explain_copies" in message
    status, _, body = post(server, "/v2/models/pixels/explain", json_body(images, patch=1, patch_stride=1))
    assert status == 400 and "512" in json.loads(body)["error"]
    assert explain_grpc(client, "pixels", images[:16], patch=1, patch_stride=1).as_numpy("logits").shape == (16, 10)


def test_a_model_that_is_not_a_classifier_is_refused(client: triton.InferenceServerClient,
                                                     server: ServerThread) -> None:  # fmt: skip
    latent = triton.InferInput("latent", [1, onnx_models.LATENT], "FP32")
    latent.set_data_from_numpy(np.zeros((1, onnx_models.LATENT), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("pixelgen", [latent], parameters={"explain": "occlusion"})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    body = json.dumps({"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, onnx_models.LATENT],
                                   "data": [0.0] * onnx_models.LATENT}]}).encode()  # fmt: skip
    assert post(server, "/v2/models/pixelgen/explain", body)[0] == 400


def test_an_unknown_model_is_not_found(client: triton.InferenceServerClient, server: ServerThread) -> None:
    with pytest.raises(InferenceServerException) as caught:
        explain_grpc(client, "nobody", pixels(1))
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    assert post(server, "/v2/models/nobody/explain", json_body(pixels(1)))[0] == 404


def test_the_deadline_is_honoured(server: ServerThread) -> None:
    """The slow model's 80 rows take 10 batches; a 50 ms deadline passes while they run."""
    with triton.InferenceServerClient(server.grpc_address) as client:
        tensor = triton.InferInput("images", [8, 1, 4, 4], "FP32")
        tensor.set_data_from_numpy(pixels(8))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("slow", [tensor], client_timeout=0.05,
                         parameters={"explain": "occlusion", "patch": 2, "patch_stride": 1})  # fmt: skip
        assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    status, _, _ = post(server, "/v2/models/slow/explain",
                        json_body(pixels(8), timeout=50_000, patch=2, patch_stride=1))  # fmt: skip
    assert status == 504
    assert post(server, "/v2/models/slow/infer", json_body(pixels(1)))[0] == 200  # and the server serves on


# -- sharing the queue -----------------------------------------------------------------------------------------------


def test_a_plain_request_is_served_between_an_explanations_batches(server: ServerThread) -> None:
    """An explanation of 8 items x 16 copies (136 rows, 17 batches of 8 on the slow model) and a plain request sent
    once it runs: the plain one is answered long before the explanation, not queued behind all of it."""
    finished: dict[str, float] = {}

    def explain() -> None:
        with triton.InferenceServerClient(server.grpc_address) as client:
            explain_grpc(client, "slow", pixels(8), patch=1, patch_stride=1)
        finished["explain"] = time.monotonic()

    with triton.InferenceServerClient(server.grpc_address) as client:
        tensor = triton.InferInput("images", [1, 1, 4, 4], "FP32")
        tensor.set_data_from_numpy(pixels(1))
        started = time.monotonic()
        client.infer("slow", [tensor])
        one_batch = time.monotonic() - started
        worker = threading.Thread(target=explain)
        worker.start()
        time.sleep(max(0.2, 3 * one_batch))  # a few of its batches are under way
        sent = time.monotonic()
        answer = client.infer("slow", [tensor])
        finished["plain"] = time.monotonic()
        worker.join(120)
    np.testing.assert_allclose(answer.as_numpy("logits"), onnx_models.classifier_reference(pixels(1)), atol=1e-4)
    assert "explain" in finished, "the explanation did not finish"
    assert finished["plain"] < finished["explain"], "the plain request waited for the whole explanation"
    explain_left = finished["explain"] - finished["plain"]
    assert finished["plain"] - sent < explain_left, (
        f"plain request took {finished['plain'] - sent:.3f} s; the explanation ran {explain_left:.3f} s after it"
    )
