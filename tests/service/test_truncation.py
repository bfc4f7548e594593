"""The generator's `truncation` request parameter end to end on a real server: gRPC (SDK, raw stub), REST
(tritonclient.http), the model's default_truncation, per-request scaling among concurrent requests, refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.client.client import Client
from cnnserve.client.core import tensors
from cnnserve.contracts import generation
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("truncation") / "repo"
    onnx_models.write_conditional_generator(repo)
    onnx_models.write_conditional_generator(repo, name="cgen_half")
    config_path = repo / "cgen_half" / "config.json"
    config = json.loads(config_path.read_text())
    config["parameters"][generation.DEFAULT_TRUNCATION_PARAMETER] = "0.5"
    config_path.write_text(json.dumps(config))
    onnx_models.write_classifier(repo)
    with ServerThread(loopback_settings(repo)) as thread:
        yield thread


def _request(model: str, latent: np.ndarray, classes: np.ndarray, truncation: object = None) -> pb.ModelInferRequest:
    request = tensors.infer_request(model, {"latent": latent, "class": classes})
    if isinstance(truncation, str):
        request.parameters["truncation"].string_param = truncation
    elif truncation is not None:
        request.parameters["truncation"].double_param = float(truncation)  # type: ignore[arg-type]
    return request


def _latent(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, onnx_models.LATENT)).astype(np.float32)


def test_truncation_zero_gives_every_latent_the_same_image(server: ServerThread) -> None:
    with Client(server.grpc_address) as client:
        first = client.generate("cgen", 6, seed=1, label=3, truncation=0.0)
        second = client.generate("cgen", 6, seed=2, label=3, truncation=0.0)
        varied = client.generate("cgen", 6, seed=1, label=3)
    assert (first == first[0]).all() and (second == first[0]).all()
    assert len({image.tobytes() for image in varied}) == 6  # untruncated latents differ


def test_truncation_scales_each_request_by_its_own_factor(server: ServerThread) -> None:
    latent, classes = _latent(4, 5), np.array([0, 3, 5, 9], np.int64)
    factors = [0.0, 0.25, 0.5, 1.0, 2.0, 0.75] * 3
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def call(factor: float) -> np.ndarray:
            reply = stub.ModelInfer(_request("cgen", latent, classes, factor))
            return tensors.infer_outputs(reply)["images"]

        with ThreadPoolExecutor(len(factors)) as pool:  # concurrent: they may share batches
            answers = list(pool.map(call, factors))
    for factor, answer in zip(factors, answers, strict=True):
        expected = onnx_models.conditional_generator_reference(latent * np.float32(factor), classes)
        np.testing.assert_allclose(answer, expected, atol=1e-6)


def test_default_truncation_applies_when_a_request_names_none(server: ServerThread) -> None:
    latent, classes = _latent(3, 6), np.array([1, 2, 3], np.int64)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        default = tensors.infer_outputs(stub.ModelInfer(_request("cgen_half", latent, classes)))["images"]
        full = tensors.infer_outputs(stub.ModelInfer(_request("cgen_half", latent, classes, 1.0)))["images"]
    np.testing.assert_allclose(default, onnx_models.conditional_generator_reference(latent * 0.5, classes), atol=1e-6)
    np.testing.assert_allclose(full, onnx_models.conditional_generator_reference(latent, classes), atol=1e-6)


def test_rest_takes_truncation_as_a_request_parameter(server: ServerThread) -> None:
    latent, classes = _latent(2, 7), np.array([4, 4], np.int64)
    client = triton_http.InferenceServerClient(server.rest_address)
    inputs = [triton_http.InferInput("latent", list(latent.shape), "FP32"),
              triton_http.InferInput("class", list(classes.shape), "INT64")]  # fmt: skip
    inputs[0].set_data_from_numpy(latent)
    inputs[1].set_data_from_numpy(classes)
    result = client.infer("cgen", inputs, parameters={"truncation": 0.25})
    expected = onnx_models.conditional_generator_reference(latent * np.float32(0.25), classes)
    np.testing.assert_allclose(result.as_numpy("images"), expected, atol=1e-6)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("cgen", inputs, parameters={"truncation": -1})
    assert refused.value.status() == "400"
    client.close()


@pytest.mark.parametrize("bad", [-0.5, "abc", "nan", float("inf"), 1e9, True])
def test_bad_truncation_is_invalid_argument(server: ServerThread, bad: object) -> None:
    request = _request("cgen", _latent(1, 0), np.array([0], np.int64), None)
    if isinstance(bad, bool):
        request.parameters["truncation"].bool_param = bad
    elif isinstance(bad, str):
        request.parameters["truncation"].string_param = bad
    else:
        request.parameters["truncation"].double_param = float(bad)  # type: ignore[arg-type]
    with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_truncation_on_a_model_that_is_not_a_generator_is_refused(server: ServerThread) -> None:
    images = np.zeros((1, 1, 4, 4), np.float32)
    request = tensors.infer_request("classifier", {"images": images}, parameters={"truncation": 0.5})
    with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_generate_passes_truncation(server: ServerThread, tmp_path: Path) -> None:
    from PIL import Image

    from cnnserve.client.cli import main as cli_main

    grid = tmp_path / "grid.png"
    out = tmp_path / "each"
    assert cli_main(["generate", "--url", server.grpc_address, "--model", "cgen", "-n", "4", "--label", "2",
                     "--truncation", "0", "--out", str(grid), "--out-dir", str(out)]) == 0  # fmt: skip
    files = sorted(out.iterdir())
    assert len({np.asarray(Image.open(f)).tobytes() for f in files}) == 1
