"""Model folders without config.json: the config is completed from the graph, as Triton's ONNX Runtime backend does.

Real architectures from the onnx package (random weights, tests/onnx_models.py: zoo_model), served with nothing but
1/model.onnx and compared with ONNX Runtime run in this process on the same file and input. A graph whose first
dimension is fixed (the zoo's [1,3,224,224]) gets max_batch_size 0; one whose first dimension is symbolic gets 4,
Triton's default, and dynamic batching.
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from cnnserve.service.registry.model_config import DEFAULT_MAX_BATCH_SIZE
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

# name -> (architecture, symbolic batch axis): served without any config.json
MODELS = {
    "inception": ("inception_v1", False),
    "densenet": ("densenet121", False),
    "squeezenet_n": ("squeezenet", True),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    for name, (architecture, batch_axis) in MODELS.items():
        onnx_models.write_zoo_model(root, name, architecture, batch_axis=batch_axis)
    # A config.json that says only part: the rest comes from the graph.
    onnx_models.write_zoo_model(root, "squeezenet_8", "squeezenet", batch_axis=True, config={"max_batch_size": 8})
    # One that contradicts the graph: batching a graph whose first dimension is fixed.
    onnx_models.write_zoo_model(root, "fixed_batched", "squeezenet", config={"max_batch_size": 2})
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(loopback_settings(repo)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(server.grpc_address) as c:
        yield c


def reference(repo: Path, name: str, batch: np.ndarray) -> np.ndarray:
    """ONNX Runtime in this process, on the file the server serves."""
    session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: batch})
    return np.asarray(output)


def pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *onnx_models.ZOO_INPUT), dtype=np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_folder_without_config_json_serves_what_onnx_runtime_computes(
    repo: Path, client: triton_grpc.InferenceServerClient, name: str
) -> None:
    metadata = client.get_model_metadata(name)
    (tensor,) = metadata.inputs
    (output,) = metadata.outputs
    batch = pixels(2 if MODELS[name][1] else 1, seed=len(name))
    inp = triton_grpc.InferInput(tensor.name, list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    answer = client.infer(name, [inp]).as_numpy(output.name)
    np.testing.assert_allclose(answer, reference(repo, name, batch), rtol=1e-4, atol=1e-6)


def test_the_completed_config_is_what_config_shows(server: ServerThread) -> None:
    with triton_http.InferenceServerClient(server.rest_address) as http:
        fixed = http.get_model_config("densenet")
        batched = http.get_model_config("squeezenet_n")
    assert fixed["max_batch_size"] == 0
    assert [(i["name"], i["data_type"], i["dims"]) for i in fixed["input"]] == [
        ("data_0", "TYPE_FP32", [1, 3, 224, 224])
    ]
    assert [(o["name"], o["dims"]) for o in fixed["output"]] == [("fc6_1", [1, 1000, 1, 1])]
    assert "dynamic_batching" not in fixed
    # Symbolic first dimension: Triton's default max_batch_size (4) and dynamic batching, dims without the batch axis.
    assert batched["max_batch_size"] == DEFAULT_MAX_BATCH_SIZE == 4
    assert [(i["name"], i["dims"]) for i in batched["input"]] == [("data_0", [3, 224, 224])]
    assert [(o["name"], o["dims"]) for o in batched["output"]] == [("softmaxout_1", [1000, 1, 1])]
    assert "dynamic_batching" in batched


def test_grpc_model_config_agrees(client: triton_grpc.InferenceServerClient) -> None:
    config = client.get_model_config("squeezenet_n").config
    assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
    assert [list(i.dims) for i in config.input] == [[3, 224, 224]]
    assert client.get_model_metadata("squeezenet_n").inputs[0].shape == [-1, 3, 224, 224]


def test_a_partial_config_json_takes_the_rest_from_the_graph(client: triton_grpc.InferenceServerClient) -> None:
    config = client.get_model_config("squeezenet_8").config
    assert config.max_batch_size == 8
    assert [(o.name, list(o.dims)) for o in config.output] == [("softmaxout_1", [1000, 1, 1])]


def test_a_config_that_contradicts_the_graph_is_refused_and_named(client: triton_grpc.InferenceServerClient) -> None:
    assert not client.is_model_ready("fixed_batched")
    index = {m.name: m for m in client.get_model_repository_index().models}
    reason = index["fixed_batched"].reason
    assert "data_0" in reason and "max_batch_size is 2" in reason
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("fixed_batched")
    assert info.value.status() == "StatusCode.UNAVAILABLE"


def test_concurrent_requests_to_a_completed_model_share_batches(
    repo: Path, client: triton_grpc.InferenceServerClient
) -> None:
    """A graph with a symbolic batch axis, served without config.json, merges concurrent requests: each caller
    gets its own answer, and the statistics show batches of more than one item."""
    before = client.get_inference_statistics("squeezenet_n").model_stats[0]
    batches = [pixels(1, seed=100 + i) for i in range(8)]
    answers: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    for i, batch in enumerate(batches):
        inp = triton_grpc.InferInput("data_0", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        client.async_infer(
            "squeezenet_n", [inp], functools.partial(lambda i, result, error: answers.put((i, result, error)), i)
        )
    expected = reference(repo, "squeezenet_n", np.concatenate(batches))
    for _ in batches:
        i, result, error = answers.get(timeout=60)
        assert error is None, error
        np.testing.assert_allclose(result.as_numpy("softmaxout_1"), expected[i : i + 1], rtol=1e-4, atol=1e-6)
    after = client.get_inference_statistics("squeezenet_n").model_stats[0]
    assert after.inference_count - before.inference_count == len(batches)
    assert after.execution_count - before.execution_count < len(batches)
    sizes = {b.batch_size for b in after.batch_stats}
    assert max(sizes) > 1 and max(sizes) <= DEFAULT_MAX_BATCH_SIZE


def test_index_lists_folders_that_only_hold_versions(repo: Path, client: triton_grpc.InferenceServerClient) -> None:
    assert not (repo / "inception" / "config.json").exists()
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert all(index[name].state == "READY" for name in MODELS)
