"""Triton's reshape in config.json (`inputs[].reshape.shape`, `outputs[].reshape.shape`): clients send and get the
config's dims, the graph takes and gives the reshape's, and the server reshapes between them.

The first model is Triton's own densenet_onnx example: DenseNet-121 (the onnx package's, with random weights)
whose graph takes [1,3,224,224] and answers [1,1000,1,1], served with max_batch_size 0, dims [3,224,224] and
[1000] and Triton's config (reshape [1,3,224,224] and [1,1000,1,1]), labels and classification included.
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

from cnnserve.service.errors import ModelLoadError
from cnnserve.service.registry.completion import resolve
from cnnserve.service.registry.model_config import read_config
from cnnserve.service.types import TensorSpec
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

LABELS = [f"class-{i}" for i in range(1000)]

# Triton's docs/examples/model_repository/densenet_onnx/config.pbtxt, as config.json
DENSENET = {
    "max_batch_size": 0,
    "inputs": [{"name": "data_0", "datatype": "FP32", "dims": [3, 224, 224], "reshape": {"shape": [1, 3, 224, 224]}}],
    "outputs": [{"name": "fc6_1", "datatype": "FP32", "dims": [1000], "reshape": {"shape": [1, 1000, 1, 1]}}],
    "labels_file": "labels.txt",
    "label_output": "fc6_1",
}

# SqueezeNet with a batch axis: [N,3,224,224] -> [N,1000,1,1], served flat in and [N,1000] out.
SQUEEZENET = {
    "max_batch_size": 4,
    "inputs": [{"name": "data_0", "dims": [-1, 3 * 224 * 224], "reshape": {"shape": [3, 224, 224]}}],
    "outputs": [{"name": "softmaxout_1", "dims": [-1, 1000], "reshape": {"shape": [1000, 1, 1]}}],
}

# A variable dimension kept through the reshape: x [N,2,3,W] sent as [N,6,W]; y answered as [N,6,W].
PLANES: dict[str, Any] = {
    "inputs": [{"name": "x", "dims": [-1, 6, -1], "reshape": {"shape": [2, 3, -1]}}],
    "outputs": [{"name": "y", "dims": [-1, 6, -1], "reshape": {"shape": [2, 3, -1]}}],
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write_zoo_model(root, "densenet_onnx", "densenet121", config=DENSENET)
    (root / "densenet_onnx" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    onnx_models.write_zoo_model(root, "squeezenet", "squeezenet", batch_axis=True, config=SQUEEZENET)
    onnx_models.write_planes(root, **PLANES)
    onnx_models.write_planes(root, "planes_plain")  # no reshape: `total` is a per-item scalar
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(loopback_settings(repo)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(server.grpc_address) as c:
        yield c


def run_graph(repo: Path, name: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return [np.asarray(out) for out in session.run(None, feed)]


def pixels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_tritons_densenet_config_serves_the_config_dims(repo: Path, client: triton_grpc.InferenceServerClient) -> None:
    image = pixels((3, 224, 224), seed=1)
    inp = triton_grpc.InferInput("data_0", [3, 224, 224], "FP32")
    inp.set_data_from_numpy(image)
    scores = client.infer("densenet_onnx", [inp]).as_numpy("fc6_1")
    assert scores.shape == (1000,)
    (expected,) = run_graph(repo, "densenet_onnx", {"data_0": image.reshape(1, 3, 224, 224)})
    np.testing.assert_allclose(scores, expected.reshape(1000), rtol=1e-4, atol=1e-4)


def test_classification_reads_the_reshaped_output(repo: Path, client: triton_grpc.InferenceServerClient) -> None:
    image = pixels((3, 224, 224), seed=2)
    inp = triton_grpc.InferInput("data_0", [3, 224, 224], "FP32")
    inp.set_data_from_numpy(image)
    top = client.infer("densenet_onnx", [inp], outputs=[triton_grpc.InferRequestedOutput("fc6_1", class_count=3)])
    (expected,) = run_graph(repo, "densenet_onnx", {"data_0": image.reshape(1, 3, 224, 224)})
    best = np.argsort(-expected.reshape(1000), kind="stable")[:3]
    got = [entry.decode().split(":") for entry in top.as_numpy("fc6_1")]
    assert [int(index) for _, index, _ in got] == list(best)
    assert [label for _, _, label in got] == [LABELS[i] for i in best]


def test_config_and_metadata_show_dims_and_reshape_as_triton_does(
    server: ServerThread, client: triton_grpc.InferenceServerClient
) -> None:
    metadata = client.get_model_metadata("densenet_onnx")
    assert [(t.name, list(t.shape)) for t in (*metadata.inputs, *metadata.outputs)] == [
        ("data_0", [3, 224, 224]),
        ("fc6_1", [1000]),
    ]
    with triton_http.InferenceServerClient(server.rest_address) as http:
        config = http.get_model_config("densenet_onnx")
    assert config["input"][0]["dims"] == [3, 224, 224]
    assert config["input"][0]["reshape"] == {"shape": [1, 3, 224, 224]}
    assert config["output"][0]["dims"] == [1000]
    assert config["output"][0]["reshape"] == {"shape": [1, 1000, 1, 1]}
    assert config["output"][0]["label_filename"] == "labels.txt"
    batched = client.get_model_config("squeezenet").config
    assert [(list(t.dims), list(t.reshape.shape)) for t in (*batched.input, *batched.output)] == [
        ([3 * 224 * 224], [3, 224, 224]),
        ([1000], [1000, 1, 1]),
    ]


def test_reshaped_requests_still_share_batches(repo: Path, client: triton_grpc.InferenceServerClient) -> None:
    flat = [pixels((1, 3 * 224 * 224), seed=10 + i) for i in range(6)]
    answers: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    for i, batch in enumerate(flat):
        inp = triton_grpc.InferInput("data_0", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        client.async_infer(
            "squeezenet", [inp], functools.partial(lambda i, result, error: answers.put((i, result, error)), i)
        )
    (expected,) = run_graph(repo, "squeezenet", {"data_0": np.concatenate(flat).reshape(-1, 3, 224, 224)})
    for _ in flat:
        i, result, error = answers.get(timeout=60)
        assert error is None, error
        scores = result.as_numpy("softmaxout_1")
        assert scores.shape == (1, 1000)
        np.testing.assert_allclose(scores, expected[i].reshape(1, 1000), rtol=1e-4, atol=1e-6)
    stats = client.get_inference_statistics("squeezenet").model_stats[0]
    assert stats.inference_count == len(flat) and stats.execution_count < len(flat)


def test_a_variable_dimension_keeps_its_value_through_the_reshape(server: ServerThread) -> None:
    x = pixels((2, 6, 5), seed=3)
    with triton_http.InferenceServerClient(server.rest_address) as http:
        inp = triton_http.InferInput("x", [2, 6, 5], "FP32")
        inp.set_data_from_numpy(x)
        result = http.infer("planes", [inp])
    np.testing.assert_allclose(result.as_numpy("y"), x * 2)
    np.testing.assert_allclose(result.as_numpy("total"), x.reshape(2, -1).sum(axis=1, keepdims=True), rtol=1e-5)


def test_a_per_item_scalar_output_comes_with_its_unit_axis(client: triton_grpc.InferenceServerClient) -> None:
    """Triton completes a graph output [N] as dims [1] with reshape [] and answers [b, 1]; so does this server."""
    metadata = client.get_model_metadata("planes_plain")
    assert {t.name: list(t.shape) for t in metadata.outputs} == {"y": [-1, 2, 3, -1], "total": [-1, 1]}
    total = next(o for o in client.get_model_config("planes_plain").config.output if o.name == "total")
    assert list(total.dims) == [1] and total.HasField("reshape") and list(total.reshape.shape) == []
    x = pixels((3, 2, 3, 4), seed=4)
    inp = triton_grpc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    answer = client.infer("planes_plain", [inp]).as_numpy("total")
    np.testing.assert_allclose(answer, x.reshape(3, -1).sum(axis=1, keepdims=True), rtol=1e-5)


# -- refusals: the same checks as every config.json key, naming the tensor ------------------------------------------

X = TensorSpec("x", "FP32", (-1, 2, 3, -1))
Y = TensorSpec("y", "FP32", (-1, 2, 3, -1))


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        pytest.param({"dims": [-1, 6, -1], "reshape": {"shape": [3, 2, -1]}}, "contradicts the graph", id="not-graph"),
        pytest.param({"dims": [-1, 7, -1], "reshape": {"shape": [2, 3, -1]}}, "different numbers", id="elements"),
        pytest.param({"dims": [-1, 6, 4], "reshape": {"shape": [2, 3, -1]}}, "different numbers", id="variable-runs"),
        pytest.param({"dims": [-1, -1], "reshape": {"shape": [2, 3, -1]}}, "different numbers", id="variable-count"),
        pytest.param({"dims": [6, -1], "reshape": {"shape": [2, 3, -1]}}, "batch axis", id="no-batch-axis"),
    ],
)
def test_a_reshape_that_contradicts_the_graph_or_its_dims_is_refused(
    tmp_path: Path, entry: dict[str, Any], says: str
) -> None:
    onnx_models.write_planes(tmp_path, "m", max_batch_size=8, inputs=[{"name": "x", **entry}])
    config = read_config(tmp_path / "m")
    with pytest.raises(ModelLoadError, match=says) as info:
        resolve(config, [X], [Y], version=1)
    assert "'x'" in str(info.value)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        pytest.param({"reshape": {"shape": [2, 3, -1]}}, "reshape", id="without-dims"),
        pytest.param({"dims": [-1, 6, -1], "reshape": {"shape": [2, 0, -1]}}, "reshape.shape", id="zero"),
        pytest.param({"dims": [-1, 6, -1], "reshape": [2, 3, -1]}, "reshape", id="not-an-object"),
        pytest.param({"dims": [-1, 6, -1], "reshape": {"dims": [2, 3, -1]}}, "reshape.dims", id="unknown-key"),
    ],
)
def test_a_malformed_reshape_is_refused_naming_its_key(tmp_path: Path, entry: dict[str, Any], key: str) -> None:
    onnx_models.write_planes(tmp_path, "m", inputs=[{"name": "x", **entry}])
    with pytest.raises(ModelLoadError, match=f"'inputs\\[0\\].{key}'"):
        read_config(tmp_path / "m")


def test_an_empty_reshape_needs_a_batch_axis(tmp_path: Path) -> None:
    onnx_models.write_planes(
        tmp_path, "m", max_batch_size=0, outputs=[{"name": "s", "dims": [1], "reshape": {"shape": []}}]
    )
    config = read_config(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="needs a batch axis"):
        resolve(config, [X], [TensorSpec("s", "FP32", ())], version=1)
