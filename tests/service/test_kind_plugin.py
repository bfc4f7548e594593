"""A user's own model kind, defined here and nowhere in the server: an embedding model whose kind L2-normalises its
output on request (parameter `normalize`), adds the REST operation /embed, and answers a file at the REST door with
its embedding. Loaded by dotted path from the model's config and, as an installed plug-in would be, by entry point;
served over gRPC (tritonclient) and REST (JSON, files, its own operation); a kind that cannot be imported fails its
own model only.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tritonclient.utils import InferenceServerException

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.execution.images import DecodedImages, ImageWorkers
from cnnserve.service.kinds.base import FileAnswer, FileRequest, Kind, Plan
from cnnserve.service.wire.decode import Array, Buffer, DecodedRequest
from cnnserve.service.wire.encode import OutputTensor
from tests.conftest import ServerThread, loopback_settings

DIM = 8
WEIGHTS = np.random.default_rng(7).standard_normal((16, DIM)).astype(np.float32)


class EmbeddingKind(Kind):
    """Request parameter `normalize` (bool): the embedding scaled to unit length before it is sent."""

    name = "test_embedding"
    own_parameters: ClassVar[frozenset[str]] = frozenset({"normalize"})
    post_operations: ClassVar[Mapping[str, Mapping[str, bool | int | float | str]]] = {"embed": {"normalize": True}}

    def plan(self, request: pb.ModelInferRequest, raw_inputs: Sequence[Buffer] | None) -> Plan:
        plan = super().plan(request, raw_inputs)
        parameters = request.parameters
        if "normalize" in parameters:
            return plan._replace(own=parameters["normalize"].bool_param)
        return plan

    async def finish(self, plan: Plan, outputs: dict[str, Array], decoded: DecodedRequest,
                     images: DecodedImages | None, workers: ImageWorkers) -> dict[str, Array]:  # fmt: skip
        if plan.own:
            vectors = outputs["embedding"]
            outputs = {**outputs, "embedding": vectors / np.linalg.norm(vectors, axis=1, keepdims=True)}
        return outputs

    def file_request(self, operation: str, query: Mapping[str, str], png: bool) -> FileRequest:
        return FileRequest(("embedding",), {"normalize": True})

    def file_answer(self, operation: str, tensors: Sequence[OutputTensor], query: Mapping[str, str], png: bool
                    ) -> FileAnswer:  # fmt: skip
        return {"embedding": np.asarray(tensors[0].array)[0].round(6).tolist()}


def write_embedder(repo: Path, name: str, parameters: dict[str, str]) -> None:
    """images [n, 1, 4, 4] in [0, 1] -> embedding [n, 8] = flatten(images) @ WEIGHTS; files decode to 4x4 grey."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", DIM])],
        [numpy_helper.from_array(WEIGHTS, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = repo / name / "1"
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    preprocessing = {"input_format": "image", "channels": 1, "height": 4, "width": 4, "scale": 1 / 255}
    config = {"max_batch_size": 8, "parameters": parameters, "preprocessing": preprocessing}
    (repo / name / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    write_embedder(repo, "embedder", {"kind": f"{__name__}:EmbeddingKind"})
    write_embedder(repo, "unimportable", {"kind": "tests.no_such_module:EmbeddingKind"})
    write_embedder(repo, "plain", {})  # an image input and no labels: the classification kind by its config
    with ServerThread(loopback_settings(repo)) as running:
        yield running


def reference(images: np.ndarray, normalize: bool) -> np.ndarray:
    vectors = images.reshape(len(images), -1) @ WEIGHTS
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if normalize else vectors  # type: ignore[no-any-return]


def pixels(n: int) -> np.ndarray:
    return np.random.default_rng(n).random((n, 1, 4, 4), dtype=np.float32)


def grpc_infer(server: ServerThread, images: np.ndarray, **parameters: Any) -> np.ndarray:
    client = triton.InferenceServerClient(server.grpc_address)
    tensor = triton.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return client.infer("embedder", [tensor], parameters=parameters or None).as_numpy("embedding")  # type: ignore[no-any-return]


def post(server: ServerThread, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    request = urllib.request.Request(server.rest_url + path, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def json_body(images: np.ndarray, **parameters: Any) -> bytes:
    tensor = {"name": "images", "datatype": "FP32", "shape": list(images.shape), "data": images.ravel().tolist()}
    return json.dumps({"inputs": [tensor], "parameters": parameters}).encode()


def test_grpc_serves_the_kind_with_and_without_its_parameter(server: ServerThread) -> None:
    images = pixels(3)
    np.testing.assert_allclose(grpc_infer(server, images), reference(images, False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grpc_infer(server, images, normalize=True), reference(images, True), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_rest_serves_the_kind_its_operation_and_files(server: ServerThread) -> None:
    images = pixels(2)
    status, reply = post(server, "/v2/models/embedder/infer", json_body(images, normalize=True))
    assert status == 200
    got = np.asarray(reply["outputs"][0]["data"], np.float32).reshape(2, DIM)
    np.testing.assert_allclose(got, reference(images, True), rtol=1e-5, atol=1e-6)
    status, reply = post(server, "/v2/models/embedder/embed", json_body(images))  # the operation implies normalize
    assert status == 200
    np.testing.assert_allclose(np.asarray(reply["outputs"][0]["data"]).reshape(2, DIM), reference(images, True),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    grey = (pixels(1)[0, 0] * 255).round().astype(np.uint8)
    file = io.BytesIO()
    Image.fromarray(grey).save(file, format="PNG")
    status, reply = post(server, "/v2/models/embedder/infer", file.getvalue(), "image/png")
    assert status == 200 and reply["model_name"] == "embedder"
    expected = reference(grey[None, None].astype(np.float32) / 255, True)[0]
    np.testing.assert_allclose(reply["embedding"], expected, atol=1e-5)


def test_other_kinds_refuse_its_parameter_and_operation(server: ServerThread) -> None:
    client = triton.InferenceServerClient(server.grpc_address)
    tensor = triton.InferInput("images", [1, 1, 4, 4], "FP32")
    tensor.set_data_from_numpy(pixels(1))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("plain", [tensor], parameters={"normalize": True})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert post(server, "/v2/models/plain/embed", json_body(pixels(1)))[0] == 400
    assert post(server, "/v2/models/embedder/nothing", json_body(pixels(1)))[0] == 404
    assert post(server, "/v2/models/embedder/ready", json_body(pixels(1)))[0] == 405  # a GET path, not an operation


def test_a_kind_that_cannot_be_imported_fails_its_model_only(server: ServerThread) -> None:
    client = triton.InferenceServerClient(server.grpc_address)
    assert client.is_model_ready("embedder") and not client.is_model_ready("unimportable")
    rows = {row.name: row for row in client.get_model_repository_index().models}
    assert rows["unimportable"].state == "UNAVAILABLE" and "tests.no_such_module" in rows["unimportable"].reason


def test_an_installed_plugin_is_found_by_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          start_server: Any) -> None:  # fmt: skip
    """A distribution on the path that declares the kind in the entry point group cnnserve.kinds, as `pip install`
    of a package with `[project.entry-points."cnnserve.kinds"]` would leave it; the model names it by `task`."""
    site = tmp_path / "site"
    dist = site / "embedding_kind-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: embedding-kind\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[cnnserve.kinds]\nembedding = {__name__}:EmbeddingKind\n")
    monkeypatch.syspath_prepend(str(site))
    repo = tmp_path / "repo"
    write_embedder(repo, "embedder", {"task": "embedding"})
    running = start_server(repo)
    images = pixels(2)
    np.testing.assert_allclose(grpc_infer(running, images, normalize=True), reference(images, True), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
