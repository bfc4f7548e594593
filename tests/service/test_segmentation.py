"""A segmenter served: selective outputs (optional ones absent unless named, the graph pruned to what a batch needs),
files padded to the stride and the answers cropped back, the mask as palette PNG files with and without overlay,
through gRPC and REST; bad parameters and configs refused.

The model is tests/onnx_models.write_segmenter (real ONNX, answers computable in numpy: segmenter_reference); the
expected PNG colours come from the palette table, the expected blends from the overlay formula written out here.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from PIL import Image
from tritonclient.utils import InferenceServerException

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.contracts.imaging import PALETTE
from cnnserve.service.errors import ModelLoadError
from cnnserve.service.kinds import select
from cnnserve.service.registry.completion import resolve
from cnnserve.service.registry.model_config import read_config
from cnnserve.service.settings import Settings
from cnnserve.service.types import TensorSpec
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

ALL = ("boxes", "scores", "classes", "mask", "logits")
DEFAULT = ("boxes", "scores", "classes", "mask")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    onnx_models.write_segmenter(repo)
    # the same graph, waiting for batch-mates, so that concurrent requests are seen to merge (or not)
    onnx_models.write_segmenter(repo, "waiting", dynamic_batching={"max_queue_delay_us": 300_000,
                                                                   "wait_when_idle": True})  # fmt: skip
    onnx_models.write_classifier(repo)
    with ServerThread(loopback_settings(repo)) as running:
        yield running


@pytest.fixture(scope="module")
def rest(server: ServerThread) -> Iterator[triton_http.InferenceServerClient]:
    with triton_http.InferenceServerClient(server.rest_address) as c:
        yield c


def pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    grey = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    grey[: height // 4] = 0  # some background
    return grey


def png_file(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    return buffer.getvalue()


def files_input(files: list[bytes], module: Any = triton) -> Any:
    tensor = module.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object))
    return tensor


def tensor_input(images: np.ndarray, module: Any = triton) -> Any:
    tensor = module.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return tensor


def outputs(*names: str, module: Any = triton) -> list[Any]:
    return [module.InferRequestedOutput(name) for name in names]


def returned(result: Any) -> set[str]:
    return {output.name for output in result.get_response().outputs}


def stats(client: triton.InferenceServerClient, model: str) -> Any:
    return client.get_inference_statistics(model).model_stats[0]


# --- selective outputs ----------------------------------------------------------------------------------------


def test_metadata_lists_every_output_and_config_states_the_optional_ones(client: triton.InferenceServerClient
                                                                       ) -> None:  # fmt: skip
    metadata = client.get_model_metadata("segmenter")
    assert [o.name for o in metadata.outputs] == list(ALL)
    config = client.get_model_config("segmenter").config
    assert config.parameters["optional_outputs"].string_value == "logits"
    assert [o.name for o in config.output] == list(ALL)


def test_optional_outputs_come_only_when_named(client: triton.InferenceServerClient) -> None:
    images = np.random.default_rng(1).random((2, 1, 16, 24)).astype(np.float32)
    expected = onnx_models.segmenter_reference(images)
    plain = client.infer("segmenter", [tensor_input(images)])
    assert [o.name for o in plain.get_response().outputs] == list(DEFAULT)  # graph order, logits left out
    for name in DEFAULT:
        np.testing.assert_allclose(plain.as_numpy(name), expected[name], atol=1e-5)
    named = client.infer("segmenter", [tensor_input(images)], outputs=outputs("logits", "mask"))
    assert [o.name for o in named.get_response().outputs] == ["logits", "mask"]
    np.testing.assert_allclose(named.as_numpy("logits"), expected["logits"], atol=1e-4)
    with pytest.raises(InferenceServerException) as info:
        client.infer("segmenter", [tensor_input(images)], outputs=outputs("heatmap"))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_warm_up_builds_the_default_pruned_session_at_a_stride_sized_input(
    tmp_path: Path, start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    onnx_models.write_segmenter(repo, "segmenter")
    with caplog.at_level(logging.INFO, logger="cnnserve.service.execution.runtime"):
        started = start_server(repo)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "warmup_failed" in m]
    assert frozenset(DEFAULT) in started.server.models.get("segmenter").pruned_nodes  # before any request


def test_the_graph_is_pruned_to_the_outputs_asked(server: ServerThread, client: triton.InferenceServerClient,
                                                  caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    images = np.random.default_rng(2).random((1, 1, 32, 32)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="cnnserve.service.execution.runtime"):
        client.infer("segmenter", [tensor_input(images)], outputs=outputs("mask"))
    created = [r.getMessage() for r in caplog.records if "event=pruned_session_created" in r.getMessage()]
    assert any("outputs=mask nodes=" in line for line in created)
    pruned = server.server.models.get("segmenter").pruned_nodes
    kept, total = pruned[frozenset({"mask"})]
    assert kept == 4 and total > 30  # Mul, Ceil, Squeeze, Cast of the graph's 60-odd nodes
    # the default set (all but logits) drops the expensive branch too; warm-up built it before any request
    kept, total = pruned[frozenset(DEFAULT)]
    assert kept < total - 24  # the 12 MatMul+Tanh steps are gone


def test_a_pruned_run_costs_less_compute_than_the_full_one(client: triton.InferenceServerClient) -> None:
    """ModelStatistics' compute_infer per execution: mask only (pruned) against logits named (the whole graph)."""
    images = np.random.default_rng(3).random((1, 1, 8, 8)).astype(np.float32)

    def compute_ns(names: tuple[str, ...], runs: int = 6) -> float:
        client.infer("segmenter", [tensor_input(images)], outputs=outputs(*names))  # a new session warms up
        before = stats(client, "segmenter").inference_stats
        for _ in range(runs):
            client.infer("segmenter", [tensor_input(images)], outputs=outputs(*names))
        after = stats(client, "segmenter").inference_stats
        return float(after.compute_infer.ns - before.compute_infer.ns) / runs

    full, pruned = compute_ns(("mask", "logits")), compute_ns(("mask",))
    assert pruned < full / 2


def concurrently(calls: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as err:  # handed to the test below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    if errors:
        raise errors[0]
    return results


def test_requests_asking_different_outputs_share_a_batch_and_get_only_their_own(server: ServerThread) -> None:
    rng = np.random.default_rng(4)
    items = [rng.random((1, 1, 16, 16)).astype(np.float32) for _ in range(3)]
    asked = [("mask",), ("boxes", "logits"), ()]
    with triton.InferenceServerClient(server.grpc_address) as c:
        before = stats(c, "waiting")
        results = concurrently([
            lambda x=x, names=names: c.infer("waiting", [tensor_input(x)], outputs=outputs(*names) or None)
            for x, names in zip(items, asked, strict=True)
        ])  # fmt: skip
        after = stats(c, "waiting")
    assert after.execution_count - before.execution_count == 1  # one merged batch
    for x, names, result in zip(items, asked, results, strict=True):
        assert returned(result) == set(names or DEFAULT)
        expected = onnx_models.segmenter_reference(x)
        for name in names or DEFAULT:
            np.testing.assert_allclose(result.as_numpy(name), expected[name], atol=1e-4)


# --- padded files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(70, 45), (16, 16), (9, 33)])
def test_files_are_padded_to_the_stride_and_answers_cut_back_to_their_size(
    client: triton.InferenceServerClient, size: tuple[int, int]
) -> None:
    height, width = size
    grey = [pixels(height, width, seed) for seed in (0, 1)]
    result = client.infer("segmenter", [files_input([png_file(g) for g in grey])], outputs=outputs(*ALL))
    mask, logits, boxes = result.as_numpy("mask"), result.as_numpy("logits"), result.as_numpy("boxes")
    assert mask.shape == (2, height, width) and logits.shape == (2, 11, height, width)
    expected = onnx_models.segmenter_reference(np.stack(grey)[:, None].astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_array_equal(mask, expected["mask"])
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-4)
    # the graph saw the padded input (0, 0, 48, 72 for 45x70): clipped back to the file's own width and height
    np.testing.assert_array_equal(boxes[:, 0], [[0, 0, width, height]] * 2)
    assert not boxes[:, 1:].any()


def test_files_of_different_sizes_in_one_request_are_refused(client: triton.InferenceServerClient) -> None:
    files = [png_file(pixels(16, 16)), png_file(pixels(70, 45))]
    with pytest.raises(InferenceServerException) as info:
        client.infer("segmenter", [files_input(files)])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "item 1 is 45x70" in str(info.value) and "item 0 is 16x16" in str(info.value)


def test_requests_of_different_sizes_never_merge_and_of_one_size_do(server: ServerThread) -> None:
    with triton.InferenceServerClient(server.grpc_address) as c:
        for sizes, batches in (([(16, 16), (24, 40)], 2), ([(24, 40), (24, 40)], 1)):
            before = stats(c, "waiting").execution_count
            results = concurrently([
                lambda s=s: c.infer("waiting", [files_input([png_file(pixels(*s))])], outputs=outputs("mask"))
                for s in sizes
            ])  # fmt: skip
            assert stats(c, "waiting").execution_count - before == batches
            assert [r.as_numpy("mask").shape[1:] for r in results] == sizes


def test_the_pixel_limit_still_applies(tmp_path: Path, start_server: Any) -> None:
    onnx_models.write_segmenter(tmp_path)
    running = start_server(tmp_path, max_image_pixels=100)
    with triton.InferenceServerClient(running.grpc_address) as c, pytest.raises(InferenceServerException) as info:
        c.infer("segmenter", [files_input([png_file(pixels(16, 16))])])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


# --- the mask as PNG ------------------------------------------------------------------------------------------


def decoded_pngs(result: Any, name: str = "mask") -> list[Image.Image]:
    return [Image.open(io.BytesIO(data)) for data in result.as_numpy(name).reshape(-1)]


def expected_overlay(mask: np.ndarray, grey: np.ndarray, alpha: float) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    blended = np.round((1 - alpha) * rgb + alpha * PALETTE[mask].astype(np.float32))
    return np.where((mask > 0)[..., None], blended, rgb).astype(np.uint8)


def test_the_mask_comes_as_palette_png_files(client: triton.InferenceServerClient) -> None:
    grey = [pixels(70, 45, seed) for seed in (0, 1)]
    files = [png_file(g) for g in grey]
    tensor = client.infer("segmenter", [files_input(files)], outputs=outputs("mask")).as_numpy("mask")
    result = client.infer("segmenter", [files_input(files)], parameters={"output_format": "png"})
    assert result.get_response().outputs[3].datatype == "BYTES" and result.as_numpy("mask").shape == (2,)
    for mask, picture in zip(tensor, decoded_pngs(result), strict=True):
        np.testing.assert_array_equal(np.asarray(picture), mask)  # the indices themselves
        np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), PALETTE[mask])  # shown in the palette
    assert result.as_numpy("boxes").dtype == np.float32  # the other outputs stay tensors


@pytest.mark.parametrize("overlay, alpha", [(True, 0.5), (0.25, 0.25), (1, 1.0)])
def test_an_overlay_blends_the_palette_over_the_request_image(
    client: triton.InferenceServerClient, overlay: Any, alpha: float
) -> None:
    grey = pixels(70, 45, 3)
    files = [png_file(grey)]
    mask = client.infer("segmenter", [files_input(files)], outputs=outputs("mask")).as_numpy("mask")[0]
    result = client.infer("segmenter", [files_input(files)], outputs=outputs("mask"),
                          parameters={"output_format": "png", "overlay": overlay})  # fmt: skip
    (picture,) = decoded_pngs(result)
    assert picture.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(picture), expected_overlay(mask, grey, alpha))


@pytest.mark.parametrize("model, parameters, images", [
    ("segmenter", {"output_format": "png", "overlay": True}, "tensor"),  # nothing to blend over
    ("segmenter", {"output_format": "png", "overlay": 1.5}, "files"),
    ("segmenter", {"output_format": "png", "overlay": 0.0}, "files"),
    ("segmenter", {"output_format": "png", "overlay": "yes"}, "files"),
    ("segmenter", {"overlay": True}, "files"),  # the overlay is a PNG's
    ("segmenter", {"output_format": "jpeg"}, "files"),
    ("classifier", {"output_format": "png", "overlay": True}, "tensor"),  # no mask, no image output
])  # fmt: skip
def test_bad_parameters_are_refused(client: triton.InferenceServerClient, model: str, parameters: dict[str, Any],
                                    images: str) -> None:  # fmt: skip
    if model == "classifier":
        inputs = [tensor_input(np.zeros((1, 1, 4, 4), np.float32))]
    elif images == "files":
        inputs = [files_input([png_file(pixels(16, 16))])]
    else:
        inputs = [tensor_input(np.zeros((1, 1, 16, 16), np.float32))]
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs, parameters=parameters)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_false_overlay_is_no_overlay(client: triton.InferenceServerClient) -> None:
    result = client.infer("segmenter", [tensor_input(np.zeros((1, 1, 16, 16), np.float32))],
                          parameters={"output_format": "png", "overlay": False})  # fmt: skip
    assert decoded_pngs(result)[0].mode == "P"


# --- REST -----------------------------------------------------------------------------------------------------


def post(server: ServerThread, model: str, header: dict[str, Any], binary: bytes = b"",
         accept: str | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    document = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(document))}
    if accept:
        headers["Accept"] = accept
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=10)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body=document + binary, headers=headers)
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def file_request(data: bytes, **extra: Any) -> tuple[dict[str, Any], bytes]:
    raw = struct.pack("<I", len(data)) + data
    header = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                          "parameters": {"binary_data_size": len(raw)}}], **extra}  # fmt: skip
    return header, raw


def test_rest_selects_pads_and_sends_png_like_grpc(server: ServerThread, rest: triton_http.InferenceServerClient,
                                                   client: triton.InferenceServerClient) -> None:  # fmt: skip
    grey = pixels(70, 45, 5)
    data = png_file(grey)
    plain = rest.infer("segmenter", [files_input([data], triton_http)])
    assert [o["name"] for o in plain.get_response()["outputs"]] == list(DEFAULT)
    mask = plain.as_numpy("mask")
    assert mask.shape == (1, 70, 45)
    np.testing.assert_array_equal(plain.as_numpy("boxes")[0, 0], [0, 0, 45, 70])
    named = rest.infer("segmenter", [files_input([data], triton_http)], outputs=outputs("logits", module=triton_http))
    assert [o["name"] for o in named.get_response()["outputs"]] == ["logits"]
    # Accept: image/png answers the mask's PNG itself; overlay travels as a JSON parameter
    header, raw = file_request(data, outputs=[{"name": "mask"}], parameters={"overlay": 0.5})
    status, headers, body = post(server, "segmenter", header, raw, accept="image/png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), expected_overlay(mask[0], grey, 0.5))
    header, raw = file_request(data, parameters={"output_format": "png"})
    status, headers, body = post(server, "segmenter", header, raw)
    assert status == 200
    document = json.loads(body[: int(headers["Inference-Header-Content-Length"])])
    entry = document["outputs"][3]
    assert entry["name"] == "mask" and entry["datatype"] == "BYTES" and entry["shape"] == [1]
    assert entry["parameters"]["binary_data_size"] > 0
    header, raw = file_request(data, parameters={"output_format": "png", "overlay": 2})
    status, _, body = post(server, "segmenter", header, raw)
    assert status == 400 and b"overlay" in body
    status, _, _ = post(
        server,
        "segmenter",
        {
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}],
            "outputs": [{"name": "nope"}],
        },
    )
    assert status == 400


def post_file(server: ServerThread, model: str, data: bytes, query: str = "", accept: str | None = None
              ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = {"Content-Type": "image/png", **({"Accept": accept} if accept else {})}
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=10)
    try:
        connection.request("POST", f"/v2/models/{model}/infer{query}", body=data, headers=headers)
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def test_an_image_body_answers_detections_or_the_mask_png(server: ServerThread) -> None:
    grey = pixels(70, 45, 6)
    data = png_file(grey)
    status, _, body = post_file(server, "segmenter", data)
    assert status == 200, body
    document = json.loads(body)
    reference = onnx_models.segmenter_reference(np.asarray(grey, np.float32)[None, None] / 255)
    # one detection (the reference's row 0), clipped to the file's own 45 x 70, its class index named by the labels
    [found] = document["detections"]
    assert found["box"] == [0.0, 0.0, 45.0, 70.0] and found["score"] == pytest.approx(0.9)
    assert found["class"] == int(reference["classes"][0, 0]) and found["label"] == str(found["class"] - 1)
    status, headers, body = post_file(server, "segmenter", data, accept="image/png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(body)))
    assert Image.open(io.BytesIO(body)).mode == "P" and mask.shape == (70, 45)
    status, _, body = post_file(server, "segmenter", data, query="?overlay=0.5", accept="image/png")
    assert status == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), expected_overlay(mask, grey, 0.5))
    status, _, body = post_file(server, "segmenter", data, query="?overlay=3", accept="image/png")
    assert status == 400 and b"overlay" in body


# --- configs refused at load ----------------------------------------------------------------------------------

IMAGES = TensorSpec("images", "FP32", (-1, 1, -1, -1))
GRAPH_OUTPUTS = [TensorSpec("boxes", "FP32", (-1, 8, 4)), TensorSpec("scores", "FP32", (-1, 8)),
                 TensorSpec("classes", "INT64", (-1, 8)), TensorSpec("mask", "UINT8", (-1, -1, -1)),
                 TensorSpec("logits", "FP32", (-1, 11, -1, -1))]  # fmt: skip


def load(tmp_path: Path, **changes: Any) -> Any:
    folder = tmp_path / "seg"
    folder.mkdir(exist_ok=True)
    config: dict[str, Any] = {"max_batch_size": 8, "preprocessing": onnx_models.SEGMENTER_PREPROCESSING,
              "postprocessing": {"mask": "mask", "boxes": "boxes", "spatial": ["mask", "logits"]},
              "parameters": {"stride": "8", "optional_outputs": "logits"}}  # fmt: skip
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (folder / "config.json").write_text(json.dumps(config))
    return build_kind(resolve(read_config(folder), [IMAGES], GRAPH_OUTPUTS, version=1), folder / "config.json")


def build_kind(spec: Any, config_path: Path) -> Any:
    """The model's kind as the server builds it when the model loads (kinds/select.py)."""
    return select.build(spec, config_path, Settings())


def test_a_good_segmenter_config_loads(tmp_path: Path) -> None:
    kind = load(tmp_path)
    assert kind.spatial.mask == "mask" and kind.spatial.boxes == "boxes" and kind.spatial.spatial == ("mask", "logits")
    assert kind.spec.optional_outputs == {"logits"} and kind.png_output == "mask"


@pytest.mark.parametrize("changes, key", [
    ({"postprocessing": {"mask": "scores"}}, "postprocessing.mask"),  # FP32 [n, 8]
    ({"postprocessing": {"mask": "nope"}}, "postprocessing.mask"),
    ({"postprocessing": {"boxes": "classes"}}, "postprocessing.boxes"),
    ({"postprocessing": {"boxes": "logits"}}, "postprocessing.boxes"),  # rank 4
    ({"postprocessing": {"spatial": ["mask", "scores"]}}, "postprocessing.spatial[1]"),
    ({"postprocessing": {"spatial": "mask"}}, "postprocessing.spatial"),
    ({"parameters": {"optional_outputs": "logits,heatmap"}}, "parameters.optional_outputs"),
    ({"parameters": {"optional_outputs": ",".join(ALL)}}, "parameters.optional_outputs"),
    ({"parameters": {"stride": "16"}}, "parameters.stride"),
    ({"max_batch_size": 0}, "postprocessing.mask"),
    ({"preprocessing": {"height": 16}}, "preprocessing"),  # pad takes no size
])  # fmt: skip
def test_bad_segmenter_configs_are_refused_naming_file_and_key(tmp_path: Path, changes: dict[str, Any],
                                                               key: str) -> None:  # fmt: skip
    with pytest.raises(ModelLoadError) as info:
        if changes.get("max_batch_size") == 0:  # a model that does not batch: tensors carry no batch axis
            folder = tmp_path / "seg"
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps({"max_batch_size": 0, "postprocessing": {"mask": "mask"}}))
            spec = resolve(read_config(folder), [TensorSpec("images", "FP32", (1, -1, -1))],
                           [TensorSpec("mask", "UINT8", (-1, -1, -1))], version=1)  # fmt: skip
            build_kind(spec, folder / "config.json")
        else:
            load(tmp_path, **changes)
    assert f"'{key}" in str(info.value) and "config.json" in str(info.value)


def test_pad_needs_variable_height_and_width(tmp_path: Path) -> None:
    folder = tmp_path / "seg"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"max_batch_size": 8, "preprocessing": onnx_models.SEGMENTER_PREPROCESSING})
    )
    with pytest.raises(ModelLoadError) as info:
        resolve(read_config(folder), [TensorSpec("images", "FP32", (-1, 1, 16, 16))], GRAPH_OUTPUTS, version=1)
    assert "'preprocessing.resize'" in str(info.value)


def test_status_codes_on_grpc_match(server: ServerThread) -> None:
    """The generated stub too: an unknown output is INVALID_ARGUMENT, as it always was."""
    request = pb.ModelInferRequest(model_name="segmenter")
    request.inputs.add(name="images", datatype="FP32", shape=[1, 1, 8, 8])
    request.raw_input_contents.append(np.zeros((1, 1, 8, 8), np.float32).tobytes())
    request.outputs.add(name="heatmap")
    with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_tensor_must_come_in_multiples_of_the_stride(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("segmenter", [tensor_input(np.zeros((1, 1, 70, 45), np.float32))])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "stride 8" in str(info.value)


def test_padded_files_are_costed_from_their_headers_before_decoding(tmp_path: Path, start_server: Any) -> None:
    """Files of a padded recipe decode to their own size: charged width x height (padded) x channels from the
    header alone, against max_elements_per_request and max_request_tensor_bytes. Black PNGs compress to almost
    nothing, so their bytes say nothing of what they decode to."""
    onnx_models.write_segmenter(tmp_path)
    running = start_server(tmp_path, max_elements_per_request=100_000, max_request_tensor_bytes=10**9)
    client = triton.InferenceServerClient(running.grpc_address)
    black = png_file(np.zeros((256, 256), np.uint8))  # 65,536 elements each
    assert len(black) < 2_000
    client.infer("segmenter", [files_input([black])], outputs=outputs("mask"))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("segmenter", [files_input([black, black])], outputs=outputs("mask"))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "131072" in str(caught.value.message()) and "100000" in str(caught.value.message())
    tight = start_server(tmp_path, max_request_tensor_bytes=300_000)  # 65,536 FP32 elements: 262,144 bytes
    client = triton.InferenceServerClient(tight.grpc_address)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("segmenter", [files_input([black, black])], outputs=outputs("mask"))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "max_request_tensor_bytes" in str(
        caught.value.message()
    )
