"""What Triton's perf_analyzer and example clients rely on, checked with tritonclient (perf_analyzer itself is not
part of CI; see docs/perf_analyzer.md for the runs against the real binary).

perf_analyzer takes each input's per-item shape from ModelMetadata (dropping the batch axis when max_batch_size > 0)
and refuses an empty one ("unable to set shape for the input"), so a per-item scalar must be described the way Triton
describes it: config dims [1] with reshape [], metadata [-1, 1]. It then sends [b, 1], which the server reshapes to the
model's [b]; [b] itself stays accepted. Its default random data is arbitrary bit patterns: NaN and Inf included.

Triton's example clients (tritonclient src/python/examples) match some error messages: "Request for unknown model"
(simple_*_infer_client.py, simple_*_health_metadata.py), "failed to get model version from specified version
string" (grpc_explicit_int8_content_client.py), "failed to load" (simple_*_model_control.py). Those words come
first, in Triton's form (core src/model_repository_manager, server src/common.cc); statuses stay this server's.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[triton.InferenceServerClient]:
    repo: Path = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(repo)
    onnx_models.write_conditional_generator(repo)
    with ServerThread(loopback_settings(repo)) as server, triton.InferenceServerClient(server.grpc_address) as c:
        yield c


def cgen_inputs(classes: np.ndarray, seed: int = 2) -> tuple[list[triton.InferInput], np.ndarray]:
    latent = np.random.default_rng(seed).standard_normal((len(classes), onnx_models.LATENT)).astype(np.float32)
    inputs = [
        triton.InferInput("latent", list(latent.shape), "FP32"),
        triton.InferInput("class", list(classes.shape), "INT64"),
    ]
    inputs[0].set_data_from_numpy(latent)
    inputs[1].set_data_from_numpy(classes)
    return inputs, latent


def test_per_item_scalar_is_described_as_triton_does(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("cgen")
    assert {t.name: list(t.shape) for t in meta.inputs} == {"latent": [-1, 8], "class": [-1, 1]}
    config = client.get_model_config("cgen").config
    declared = {i.name: (list(i.dims), i.HasField("reshape"), list(i.reshape.shape)) for i in config.input}
    assert declared == {"latent": ([8], False, []), "class": ([1], True, [])}


@pytest.mark.parametrize("class_shape", [(4,), (4, 1)], ids=["model-shape", "config-shape"])
def test_per_item_scalar_accepted_with_and_without_its_unit_axis(
    client: triton.InferenceServerClient, class_shape: tuple[int, ...]
) -> None:
    classes = np.array([7, 7, 0, 3], dtype=np.int64)
    inputs, latent = cgen_inputs(classes.reshape(class_shape))
    result = client.infer("cgen", inputs)
    np.testing.assert_allclose(
        result.as_numpy("images"), onnx_models.conditional_generator_reference(latent, classes), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("class_shape", [(4, 2), (4, 1, 1), (1, 4)])
def test_other_extra_axes_are_still_refused(client: triton.InferenceServerClient, class_shape: tuple[int, ...]) -> None:
    inputs, _ = cgen_inputs(np.zeros(class_shape, dtype=np.int64), seed=3)
    if class_shape == (1, 4):
        inputs[0] = triton.InferInput("latent", [1, onnx_models.LATENT], "FP32")
        inputs[0].set_data_from_numpy(np.zeros((1, onnx_models.LATENT), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("cgen", inputs)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'class'" in str(info.value.message())


def test_stream_takes_the_config_shape(client: triton.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(lambda result, error: answers.put((result, error)))
    try:
        classes = np.arange(3, dtype=np.int64)
        inputs, latent = cgen_inputs(classes.reshape(3, 1))
        client.async_stream_infer("cgen", inputs, request_id="r1")
        result, error = answers.get(timeout=30)
    finally:
        client.stop_stream()
    assert error is None
    np.testing.assert_allclose(
        result.as_numpy("images"), onnx_models.conditional_generator_reference(latent, classes), rtol=1e-5, atol=1e-6
    )


def test_random_bit_patterns_pass_through(client: triton.InferenceServerClient) -> None:
    bits = np.random.default_rng(4).integers(0, 2**32, (4, 1, 4, 4), dtype=np.uint32)
    bits.flat[:3] = [0x7FC00000, 0x7F800000, 0xFF800000]  # NaN, +Inf, -Inf for certain
    images = bits.view(np.float32)
    inp = triton.InferInput("images", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    logits = client.infer("classifier", [inp]).as_numpy("logits")
    assert logits.shape == (4, 10)
    assert np.isnan(logits[0]).all()  # NaN poisons the first item's sums; the answer carries it rather than failing


# -- Triton's words where its clients read them ----------------------------------------------------------------------


def refusal(call: Callable[..., object], *args: Any, **kwargs: Any) -> tuple[str, str]:
    """(status, message) of a refused tritonclient call."""
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return str(info.value.status()), str(info.value.message())


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    repo: Path = tmp_path_factory.mktemp("words")
    onnx_models.write_classifier(repo)
    onnx_models.write_corrupt(repo)  # never loads: "broken" has no available versions
    with (
        ServerThread(loopback_settings(repo)) as server,
        triton.InferenceServerClient(server.grpc_address) as grpc_client,
    ):
        http_client = triton_http.InferenceServerClient(server.rest_address)
        yield grpc_client, http_client
        http_client.close()


def images_input(module: Any, name: str = "images") -> Any:
    tensor = module.InferInput(name, [1, 1, 4, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 4, 4), np.float32))
    return tensor


@pytest.mark.parametrize(
    ("model", "version", "words", "status"),
    [
        ("wrong_model_name", "", "Request for unknown model: 'wrong_model_name' is not found", "NOT_FOUND"),
        ("classifier", "3", "Request for unknown model: 'classifier' version 3 is not found", "NOT_FOUND"),
        ("broken", "", "Request for unknown model: 'broken' has no available versions", "UNAVAILABLE"),
        ("broken", "1", "Request for unknown model: 'broken' version 1 is not at ready state", "UNAVAILABLE"),
        ("classifier", "wrong_specification",
         "failed to get model version from specified version string 'wrong_specification'", "NOT_FOUND"),
    ],
    ids=["unknown-model", "unknown-version", "no-ready-version", "version-not-ready", "version-not-a-number"],
)  # fmt: skip
def test_models_that_cannot_serve_are_refused_in_tritons_words(
    clients: tuple[Any, Any], model: str, version: str, words: str, status: str
) -> None:
    grpc_client, http_client = clients
    http_status = {"NOT_FOUND": "404", "UNAVAILABLE": "503"}[status]
    for module, client, expected in ((triton, grpc_client, f"StatusCode.{status}"),
                                     (triton_http, http_client, http_status)):  # fmt: skip
        for got_status, message in (
            refusal(client.infer, model, [images_input(module)], model_version=version),
            refusal(client.get_model_metadata, model, version),
            refusal(client.get_model_config, model, version),
        ):
            assert message.startswith(words), message  # simple_http_infer_client.py: .startswith(...)
            assert got_status == expected


def test_unknown_inputs_and_outputs_in_tritons_words(clients: tuple[Any, Any]) -> None:
    grpc_client, http_client = clients
    for module, client in ((triton, grpc_client), (triton_http, http_client)):
        _, message = refusal(client.infer, "classifier", [images_input(module, "pixels")])
        assert message.startswith("unexpected inference input 'pixels' for model 'classifier'"), message
        outputs = [module.InferRequestedOutput("scores")]
        _, message = refusal(client.infer, "classifier", [images_input(module)], outputs=outputs)
        assert message.startswith("unexpected inference output 'scores' for model 'classifier'"), message


def test_loading_an_unknown_model_says_failed_to_load(tmp_path: Path, start_server: Any) -> None:
    """simple_*_model_control.py: load_model("wrong_model_name") must say "failed to load"."""
    onnx_models.write_classifier(tmp_path)
    server = start_server(tmp_path, model_control_mode="explicit", startup_models=())
    with triton.InferenceServerClient(server.grpc_address) as client:
        status, message = refusal(client.load_model, "wrong_model_name")
    assert status == "StatusCode.NOT_FOUND"
    assert message.startswith("failed to load 'wrong_model_name', failed to poll from model repository"), message
