"""Loading a model with a config sent in the request (explicit mode), as Triton's load `config` parameter does.

The config is a config.json document (Triton's ModelConfig JSON is test_triton_config.py's); it passes every check a
config.json passes, ModelConfig shows it, nothing is written to the repository, and it lasts until the next load: a
load without one serves the folder's config.json again. Triton's `file:` parameters (model files in the request) are
refused.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

OVERRIDE = {
    "max_batch_size": 4,
    "dynamic_batching": {"max_queue_delay_us": 100, "preferred_batch_sizes": [2]},
    "parameters": {"source": "load request"},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(root)  # config.json: max_batch_size 32
    onnx_models.write_planes(root)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    settings = loopback_settings(repo, model_control_mode="explicit", startup_models=("classifier", "planes"))
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def grpc_client(server: ServerThread) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(server.grpc_address) as c:
        yield c
        c.load_model("classifier")  # back to the folder's config for the next test


@pytest.fixture
def http_client(server: ServerThread) -> Iterator[triton_http.InferenceServerClient]:
    with triton_http.InferenceServerClient(server.rest_address) as c:
        yield c


def files(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file under the repository: (size, mtime_ns)."""
    return {str(p.relative_to(repo)): (p.stat().st_size, p.stat().st_mtime_ns) for p in repo.rglob("*")}


def infer(client: triton_grpc.InferenceServerClient, n: int) -> None:
    images = np.random.default_rng(n).standard_normal((n, 1, 4, 4)).astype(np.float32)
    inp = triton_grpc.InferInput("images", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    logits = client.infer("classifier", [inp]).as_numpy("logits")
    np.testing.assert_allclose(logits, onnx_models.classifier_reference(images), rtol=1e-5, atol=1e-5)


def post_load(server: ServerThread, model: str, document: object) -> tuple[int, Any]:
    """POST .../load with a JSON body as any HTTP client may send it (tritonclient.http cannot send files: it
    puts bytes in json.dumps)."""
    request = urllib.request.Request(
        f"{server.rest_url}/v2/repository/models/{model}/load",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def refusal(call: Any) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status())


def test_grpc_load_with_a_config_serves_it_and_writes_nothing(
    repo: Path, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    before = files(repo)
    grpc_client.load_model("classifier", config=json.dumps(OVERRIDE))
    config = grpc_client.get_model_config("classifier").config
    assert config.max_batch_size == 4
    assert list(config.dynamic_batching.preferred_batch_size) == [2]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.parameters["source"].string_value == "load request"
    infer(grpc_client, 4)
    assert refusal(lambda: infer(grpc_client, 5)) == "StatusCode.INVALID_ARGUMENT"  # over the override's batch
    assert files(repo) == before


def test_the_override_lasts_until_the_next_load(
    server: ServerThread, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    grpc_client.load_model("classifier", config=json.dumps(OVERRIDE))
    assert grpc_client.get_model_config("classifier").config.max_batch_size == 4
    grpc_client.load_model("classifier")
    config = grpc_client.get_model_config("classifier").config
    assert config.max_batch_size == 32 and "source" not in config.parameters
    infer(grpc_client, 5)
    # unload and load: from the folder too
    grpc_client.load_model("classifier", config=json.dumps(OVERRIDE))
    grpc_client.unload_model("classifier")
    grpc_client.load_model("classifier")
    assert grpc_client.get_model_config("classifier").config.max_batch_size == 32


def test_http_load_with_a_config_shows_in_config(
    http_client: triton_http.InferenceServerClient, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    http_client.load_model("classifier", config=json.dumps({"max_batch_size": 2, "instance_count": 2}))
    config = http_client.get_model_config("classifier")
    assert config["max_batch_size"] == 2
    assert config["instance_group"][0]["count"] == 2
    assert http_client.is_model_ready("classifier")


@pytest.mark.parametrize(
    ("config", "names"),
    [
        pytest.param({"inputs": [{"name": "images", "dims": [-1, 3, 4, 4]}]}, "'images'", id="contradicts-graph"),
        pytest.param({"max_batch_size": -1}, "max_batch_size", id="bad-value"),
        pytest.param({"input": [{"name": "images"}], "inputs": []}, "'input'", id="both-forms"),
        pytest.param({"name": "other"}, "'other'", id="other-name"),
        pytest.param({"version_policy": {"specific": {"versions": [7]}}}, "no version", id="no-version"),
    ],
)
def test_a_config_that_fails_a_check_is_refused_and_the_model_keeps_serving(
    repo: Path, grpc_client: triton_grpc.InferenceServerClient, config: dict[str, Any], names: str
) -> None:
    before = files(repo)
    with pytest.raises(InferenceServerException) as info:
        grpc_client.load_model("classifier", config=json.dumps(config))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert names in str(info.value.message())
    assert str(repo) not in str(info.value.message())  # names the model's config, never a server path
    assert grpc_client.is_model_ready("classifier")
    assert grpc_client.get_model_config("classifier").config.max_batch_size == 32
    infer(grpc_client, 2)
    assert files(repo) == before


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "[" * 100_000 + "]" * 100_000], ids=["bad", "list", "deep"])
def test_a_config_that_is_not_a_json_object_is_refused(
    grpc_client: triton_grpc.InferenceServerClient, text: str
) -> None:
    assert refusal(lambda: grpc_client.load_model("classifier", config=text)) == "StatusCode.INVALID_ARGUMENT"
    assert grpc_client.is_model_ready("classifier")


def test_model_files_in_the_request_are_refused(
    repo: Path, server: ServerThread, grpc_client: triton_grpc.InferenceServerClient
) -> None:
    before = files(repo)
    model = (repo / "planes" / "1" / "model.onnx").read_bytes()
    call = lambda: grpc_client.load_model(  # noqa: E731
        "planes", config=json.dumps({"max_batch_size": 8}), files={"file:2/model.onnx": model}
    )
    assert refusal(call) == "StatusCode.UNIMPLEMENTED"
    status, answer = post_load(server, "planes", {"parameters": {"config": "{}", "file:2/model.onnx": "AAAA"}})
    assert status == 501 and "repository" in answer["error"]
    assert files(repo) == before
    assert not (repo / "planes" / "2").exists()


def test_unknown_load_parameters_are_refused(server: ServerThread) -> None:
    refused: list[object] = [{"parameters": {"configuration": "{}"}}, {"parameters": {"config": 7}}, {"parameters": []}]
    for document in refused:
        assert post_load(server, "planes", document)[0] == 400
    assert post_load(server, "planes", {"parameters": {"config": "{}"}}) == (200, {})
    assert post_load(server, "planes", {}) == (200, {})


def test_load_with_a_config_needs_explicit_mode(tmp_path: Path, start_server: Any) -> None:
    onnx_models.write_planes(tmp_path)
    server = start_server(tmp_path)
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        assert refusal(lambda: client.load_model("planes", config="{}")) == "StatusCode.FAILED_PRECONDITION"
