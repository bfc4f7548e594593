"""The server end to end: every RPC through the generated stubs and through tritonclient, on a real server."""

from __future__ import annotations

import gc
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    # Waiting behind an idle model (Triton's rule) makes merging deterministic for the batching test below.
    onnx_models.write_classifier(
        root, dynamic_batching={"max_queue_delay_us": 5000, "max_queue_size": 256, "wait_when_idle": True}
    )
    onnx_models.write_conditional_generator(root)
    onnx_models.write_identity(root)
    onnx_models.write_corrupt(root)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(loopback_settings(repo)) as running:
        yield running


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def raw_request(model: str, batch: np.ndarray, **fields: object) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=list(batch.shape))],
        raw_input_contents=[batch.tobytes()],
        **fields,  # type: ignore[arg-type]
    )


def status_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


# -- health and metadata ---------------------------------------------------------------------------------------


def test_live_ready_and_server_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready() is False  # the corrupt model is meant to be loaded and is not
    meta = client.get_server_metadata()
    assert meta.name == "cnnserve"
    assert {"classification", "statistics", "model_configuration"} <= set(meta.extensions)


def test_model_ready_and_repository_index(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("classifier")
    assert client.is_model_ready("classifier", "1")
    assert not client.is_model_ready("classifier", "7")
    assert not client.is_model_ready("broken")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["classifier"].state == "READY"
    assert index["broken"].state == "UNAVAILABLE"
    assert index["broken"].reason  # the load failure is explained


def test_model_metadata_keeps_batch_axis(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("cgen")
    assert meta.versions == ["1"]
    shapes = {t.name: (t.datatype, list(t.shape)) for t in [*meta.inputs, *meta.outputs]}
    assert shapes == {"latent": ("FP32", [-1, 8]), "class": ("INT64", [-1, 1]), "images": ("FP32", [-1, 1, 2, 4])}


def test_model_config_is_triton_shaped(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("classifier").config
    assert config.max_batch_size == 32
    assert config.platform == "onnxruntime_onnx"
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [1, 4, 4])]
    assert config.output[0].label_filename == "labels.txt"
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    assert config.instance_group[0].count == 1
    assert config.parameters["execution_provider"].string_value == "CPUExecutionProvider"


# -- inference ----------------------------------------------------------------------------------------------------


def test_tritonclient_infer_matches_reference(client: triton.InferenceServerClient) -> None:
    batch = images(5)
    inp = triton.InferInput("images", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    result = client.infer("classifier", [inp], request_id="req-42")
    np.testing.assert_allclose(result.as_numpy("logits"), onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
    assert result.get_response().id == "req-42"
    assert result.get_response().model_version == "1"


def test_typed_contents_are_accepted(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    batch = images(2)
    tensor = pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=[2, 1, 4, 4])
    tensor.contents.fp32_contents.extend(batch.ravel().tolist())
    reply = stub.ModelInfer(pb.ModelInferRequest(model_name="classifier", inputs=[tensor]))
    logits = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(2, 10)
    np.testing.assert_allclose(logits, onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)


def test_classification_extension(client: triton.InferenceServerClient) -> None:
    batch = images(3)
    inp = triton.InferInput("images", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    result = client.infer("classifier", [inp], outputs=[triton.InferRequestedOutput("logits", class_count=3)])
    top = result.as_numpy("logits")
    assert top.shape == (3, 3)
    expected = onnx_models.classifier_reference(batch)
    for row, logits in zip(top, expected, strict=True):
        parsed = [entry.decode().split(":") for entry in row]
        assert [int(p[1]) for p in parsed] == list(np.argsort(-logits)[:3])
        assert [p[2] for p in parsed] == [f"digit-{int(p[1])}" for p in parsed]
        np.testing.assert_allclose([float(p[0]) for p in parsed], np.sort(logits)[::-1][:3], rtol=1e-4)


def test_two_input_generator(client: triton.InferenceServerClient) -> None:
    latent = np.random.default_rng(3).standard_normal((4, onnx_models.LATENT)).astype(np.float32)
    classes = np.array([7, 7, 0, 3], dtype=np.int64)
    inputs = [triton.InferInput("latent", [4, onnx_models.LATENT], "FP32"), triton.InferInput("class", [4], "INT64")]
    inputs[0].set_data_from_numpy(latent)
    inputs[1].set_data_from_numpy(classes)
    result = client.infer("cgen", inputs)
    np.testing.assert_allclose(
        result.as_numpy("images"), onnx_models.conditional_generator_reference(latent, classes), rtol=1e-5, atol=1e-6
    )


def identity_values(datatype: str) -> np.ndarray:
    rng = np.random.default_rng(5)
    if datatype == "BYTES":
        return np.array([[b"", b"nul\x00inside", "ünï".encode()]] * 2, dtype=np.object_)
    if datatype == "BOOL":
        return rng.integers(0, 2, (2, 3)).astype(bool)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return np.array([[np.nan, np.inf, -np.inf], [0.5, -0.0, 1e-3]], dtype=dtype)
    info = np.iinfo(datatype.lower())
    return np.array([[info.min, info.max, 0], [1, 2, 3]], dtype=datatype.lower())


def test_every_datatype_passes_through_unchanged(client: triton.InferenceServerClient) -> None:
    inputs, expected = [], {}
    for datatype in onnx_models.IDENTITY_TYPES:
        values = identity_values(datatype)
        inp = triton.InferInput(f"in_{datatype}", list(values.shape), datatype)
        inp.set_data_from_numpy(values)
        inputs.append(inp)
        expected[f"out_{datatype}"] = values
    result = client.infer("identity", inputs)
    for name, values in expected.items():
        got = result.as_numpy(name)
        assert got.shape == values.shape, name
        if values.dtype.kind == "f":
            assert got.tobytes() == values.tobytes(), name  # NaN and Inf bit for bit
        else:
            assert got.tolist() == values.tolist(), name


def test_requested_output_subset_in_order(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="identity")
    for datatype in onnx_models.IDENTITY_TYPES:
        values = identity_values(datatype)
        request.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=list(values.shape))
        request.raw_input_contents.append(_raw(values))
    request.outputs.add(name="out_INT8")
    request.outputs.add(name="out_FP32")
    reply = stub.ModelInfer(request)
    assert [o.name for o in reply.outputs] == ["out_INT8", "out_FP32"]
    assert len(reply.raw_output_contents) == 2


def _raw(values: np.ndarray) -> bytes:
    if values.dtype == np.object_:
        return b"".join(len(v).to_bytes(4, "little") + v for v in values.ravel())
    return values.tobytes()


def test_stream_infer_answers_each_request_and_reports_errors(client: triton.InferenceServerClient) -> None:
    answers: list[Any] = []
    done = threading.Event()

    def callback(result: object, error: object) -> None:
        answers.append(error or result)
        if len(answers) == 3:
            done.set()

    client.start_stream(callback)
    try:
        for request_id, model in (("a", "classifier"), ("b", "missing"), ("c", "classifier")):
            inp = triton.InferInput("images", [1, 1, 4, 4], "FP32")
            inp.set_data_from_numpy(images(1))
            client.async_stream_infer(model, [inp], request_id=request_id)
        assert done.wait(30)
    finally:
        client.stop_stream()
    errors = [a for a in answers if isinstance(a, InferenceServerException)]
    assert len(errors) == 1
    ids = sorted(a.get_response().id for a in answers if not isinstance(a, InferenceServerException))
    assert ids == ["a", "c"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    server: ServerThread, client: triton.InferenceServerClient
) -> None:
    before = client.get_inference_statistics("classifier").model_stats[0]
    batches = [images(1, seed=i) for i in range(24)]
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        with triton.InferenceServerClient(server.grpc_address) as own:
            inp = triton.InferInput("images", [1, 1, 4, 4], "FP32")
            inp.set_data_from_numpy(batches[i])
            results[i] = own.infer("classifier", [inp]).as_numpy("logits")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, batch in enumerate(batches):
        np.testing.assert_allclose(results[i], onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
    after = client.get_inference_statistics("classifier").model_stats[0]
    assert after.inference_stats.success.count - before.inference_stats.success.count == len(batches)
    assert after.inference_count - before.inference_count == len(batches)
    assert after.execution_count - before.execution_count < len(batches)  # some requests shared a batch


def test_model_statistics(client: triton.InferenceServerClient) -> None:
    stats = client.get_inference_statistics("classifier").model_stats
    assert [(s.name, s.version) for s in stats] == [("classifier", "1")]
    assert stats[0].inference_stats.success.count > 0
    assert stats[0].inference_stats.compute_infer.ns > 0
    everything = client.get_inference_statistics().model_stats
    assert {s.name for s in everything} == {"classifier", "cgen", "identity"}


# -- errors -------------------------------------------------------------------------------------------------------


def test_unknown_model_and_version_are_not_found(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert status_of(lambda: stub.ModelInfer(raw_request("nope", images(1)))) == grpc.StatusCode.NOT_FOUND
    assert status_of(lambda: stub.ModelInfer(raw_request("classifier", images(1), model_version="9"))) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert status_of(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))) == grpc.StatusCode.NOT_FOUND


def test_model_that_failed_to_load_is_unavailable(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert status_of(lambda: stub.ModelInfer(raw_request("broken", images(1)))) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda r: setattr(r.inputs[0], "name", "pixels"), id="unknown-input"),
        pytest.param(lambda r: setattr(r.inputs[0], "datatype", "INT32"), id="wrong-datatype"),
        pytest.param(lambda r: r.inputs[0].shape.__setitem__(1, 3), id="wrong-dim"),
        pytest.param(lambda r: r.inputs[0].shape.pop(), id="wrong-rank"),
        pytest.param(lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-4]), id="short-raw"),
        pytest.param(lambda r: r.inputs[0].contents.fp32_contents.append(1.0), id="raw-and-typed"),
        pytest.param(
            lambda r: r.parameters["sequence_id"].MergeFrom(pb.InferParameter(int64_param=3)), id="sequence-id"
        ),
        pytest.param(lambda r: r.outputs.add(name="nope"), id="unknown-output"),
        pytest.param(
            lambda r: (
                r.outputs.add(name="logits").parameters["classification"].MergeFrom(pb.InferParameter(int64_param=0))
            ),
            id="bad-classification",
        ),
    ],
)
def test_bad_requests_are_invalid_argument(stub: pb_grpc.GRPCInferenceServiceStub, mutate: object) -> None:
    request = raw_request("classifier", images(2))
    mutate(request)  # type: ignore[operator]
    assert status_of(lambda: stub.ModelInfer(request)) == grpc.StatusCode.INVALID_ARGUMENT


def test_batch_limits_are_invalid_argument(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    too_big = raw_request("classifier", images(33))
    assert status_of(lambda: stub.ModelInfer(too_big)) == grpc.StatusCode.INVALID_ARGUMENT
    empty = raw_request("classifier", np.zeros((0, 1, 4, 4), np.float32))
    assert status_of(lambda: stub.ModelInfer(empty)) == grpc.StatusCode.INVALID_ARGUMENT
    missing = pb.ModelInferRequest(model_name="cgen")
    assert status_of(lambda: stub.ModelInfer(missing)) == grpc.StatusCode.INVALID_ARGUMENT


def test_server_survives_bad_requests(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_model_ready("classifier")


def test_repository_control_refused_outside_explicit_mode(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    load = pb.RepositoryModelLoadRequest(model_name="classifier")
    assert status_of(lambda: stub.RepositoryModelLoad(load)) == grpc.StatusCode.FAILED_PRECONDITION
    unload = pb.RepositoryModelUnloadRequest(model_name="classifier")
    assert status_of(lambda: stub.RepositoryModelUnload(unload)) == grpc.StatusCode.FAILED_PRECONDITION


# -- health v1, reflection, HTTP ----------------------------------------------------------------------------------


def test_grpc_health_separates_liveness_readiness_and_models(server: ServerThread) -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    with grpc.insecure_channel(server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def check(service: str) -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=service)).status  # type: ignore[no-any-return]

        assert check("") == serving
        assert check("ready") == not_serving  # "broken" never loaded
        assert check("classifier") == serving
        assert check("broken") == not_serving
        assert status_of(lambda: check("no-such-model")) == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services(server: ServerThread) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def test_http_metrics_and_health(server: ServerThread) -> None:
    with urllib.request.urlopen(f"{server.http_url}/metrics") as reply:
        body = reply.read().decode()
    assert "cnnserve_requests_total" in body
    with urllib.request.urlopen(f"{server.http_url}/v2/health/live") as reply:
        assert reply.status == 200
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.http_url}/v2/health/ready")
    assert info.value.code == 503


def test_ready_server_reports_ready(tmp_path: Path, start_server: object) -> None:
    onnx_models.write_classifier(tmp_path)
    running = start_server(tmp_path)  # type: ignore[operator]
    with triton.InferenceServerClient(running.grpc_address) as c:
        assert c.is_server_ready()
    with urllib.request.urlopen(f"{running.http_url}/v2/health/ready") as reply:
        assert reply.status == 200


def test_message_size_limit(tmp_path: Path, start_server: object) -> None:
    onnx_models.write_classifier(tmp_path)
    running = start_server(tmp_path, max_message_bytes=1024)  # type: ignore[operator]
    with grpc.insecure_channel(running.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        code = status_of(lambda: stub.ModelInfer(raw_request("classifier", images(32))))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unsupported_extensions_answer_unimplemented(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    calls = [
        lambda: stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()),
        lambda: stub.CudaSharedMemoryRegister(pb.CudaSharedMemoryRegisterRequest(name="x")),
    ]
    assert [status_of(call) for call in calls] == [grpc.StatusCode.UNIMPLEMENTED] * len(calls)


def test_trace_settings_read_off_and_refuse_turning_on_without_trace(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """A server started without --trace answers the trace extension (trace_level OFF) and refuses to turn it on."""
    settings = stub.TraceSetting(pb.TraceSettingRequest(), timeout=10).settings
    assert list(settings["trace_level"].value) == ["OFF"]
    on = pb.TraceSettingRequest(settings={"trace_level": pb.TraceSettingRequest.SettingValue(value=["TIMESTAMPS"])})
    assert status_of(lambda: stub.TraceSetting(on, timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION


def test_the_loaded_heap_is_kept_out_of_full_collections_until_shutdown(tmp_path: Path) -> None:
    """Frozen once the models are loaded (service/edge/heap.py): a full collection then walks only what requests
    made since, instead of pausing the loop for every module, descriptor and session wrapper."""
    onnx_models.write_classifier(tmp_path / "repo")
    with ServerThread(loopback_settings(tmp_path / "repo")) as running:
        assert gc.get_freeze_count() > 1000
        with grpc.insecure_channel(running.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert gc.get_freeze_count() == 0  # given back to the collector at shutdown
