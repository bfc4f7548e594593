"""Every Open Inference Protocol datatype end to end, on both doors and in every encoding the protocol allows.

One identity model per datatype (INPUT0 -> OUTPUT0, [N,4]) is called through tritonclient.grpc (raw_input_contents
and raw_output_contents), tritonclient.grpc.aio, the raw protobuf stub with typed `contents`, and tritonclient.http
with the binary extension and with JSON. Then Triton's own example models, driven as Triton's example clients drive
them (tritonclient src/python/examples): simple_string, simple_identity, simple_int8 and simple.

What the encodings cannot carry, and what happens instead:
- FP16 has no typed `contents` field and no JSON form (the protocol's rule; Triton refuses both as well): such
  requests are INVALID_ARGUMENT / 400. An FP16 output asked for as JSON comes back binary (binary_data_size).
- JSON has no NaN or Infinity; Triton writes and reads them as the bare tokens NaN, Infinity and -Infinity, and so
  does tritonclient.http, so this server does the same.
- BYTES elements travel exactly, null bytes included. ONNX Runtime's Python API takes string tensors only as UTF-8
  text, so elements that are not UTF-8 are refused (INVALID_ARGUMENT / 400) before the request is queued. JSON strings
  are text: a lone surrogate escape ("\\ud800") has no UTF-8 form and is refused alike.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor, triton_to_np_dtype

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.contracts.datatypes import DATATYPES
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

DATATYPE_NAMES = list(onnx_models.IDENTITY_TYPES)
DOORS = ["grpc", "grpc_aio", "grpc_contents", "http_binary", "http_json"]
NO_CONTENTS = {"FP16"}  # no InferTensorContents field
NO_JSON = {"FP16"}  # no JSON form


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo: Path = tmp_path_factory.mktemp("repo")
    for datatype in DATATYPE_NAMES:
        onnx_models.write_typed_identity(repo, datatype)
    # Waits behind an idle model (Triton's rule), so requests sent together share a batch.
    waiting = {"max_queue_delay_us": 300_000, "max_queue_size": 64, "wait_when_idle": True}
    onnx_models.write_typed_identity(repo, "BYTES", name="bytes_merging", dynamic_batching=waiting)
    onnx_models.write_simple_string(repo)
    onnx_models.write_simple_identity(repo)
    onnx_models.write_simple_int8(repo)
    onnx_models.write_simple(repo)
    with ServerThread(loopback_settings(repo)) as running:
        yield running


@pytest.fixture(scope="module")
def grpc_client(server: ServerThread) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        yield client


@pytest.fixture(scope="module")
def http_client(server: ServerThread) -> Iterator[triton_http.InferenceServerClient]:
    client = triton_http.InferenceServerClient(server.rest_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def values_of(datatype: str) -> np.ndarray:
    """[2,4] of the datatype's edge values: its range's ends, zero, signed zero, the smallest and largest floats."""
    if datatype == "BYTES":
        return np.array(
            [
                [b"he\x00llo", b"", "\u00e9t\u00e9 \u2603".encode(), b"\x00\x01\x02\x03"],
                [b"0", b"\x00", b" ", b"x" * 300],
            ],
            dtype=object,
        )
    if datatype == "BOOL":
        return np.array([[True, False, True, False], [False, False, True, True]])
    dtype = np.dtype(triton_to_np_dtype(datatype))
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return np.array([[info.min, info.max, info.tiny, -0.0], [0.0, 1.5, -2.25, info.eps]], dtype=dtype)
    limits = np.iinfo(dtype)
    return np.array([[limits.min, limits.max, 0, 1], [limits.max - 1, limits.min + 1, 7, 0]], dtype=dtype)


def assert_same(got: np.ndarray, sent: np.ndarray, *, as_text: bool = False) -> None:
    assert got.shape == sent.shape
    if sent.dtype == np.object_:
        expected = [item.decode() for item in sent.flat] if as_text else list(sent.flat)
        assert list(got.flat) == expected
    else:
        assert got.dtype == sent.dtype
        assert got.tobytes() == sent.tobytes()  # bit for bit: signed zeros, NaN payloads, Inf


def refusal(call: Any) -> str:
    """The status a call is refused with, by its gRPC name, whichever client made it."""
    with pytest.raises((InferenceServerException, grpc.RpcError)) as info:
        call()
    error = info.value
    if isinstance(error, grpc.RpcError):
        return str(error.code().name)
    status = str(error.status())
    return {"400": "INVALID_ARGUMENT", "404": "NOT_FOUND", "503": "UNAVAILABLE"}.get(status, status.split(".")[-1])


def contents_request(model: str, name: str, datatype: str, values: np.ndarray) -> pb.ModelInferRequest:
    """A request whose data travels in the typed `contents` field, as grpc_explicit_*_content_client.py send it."""
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(values.shape))
    field = DATATYPES[datatype].contents_field or "fp32_contents"  # FP16 has none: sent as floats, refused
    getattr(tensor.contents, field).extend(values.ravel().tolist())
    return request


def raw_output(reply: pb.ModelInferResponse, index: int) -> np.ndarray:
    output = reply.outputs[index]
    data = reply.raw_output_contents[index]
    if output.datatype == "BYTES":
        strings: np.ndarray = deserialize_bytes_tensor(data)
        return strings.reshape(list(output.shape))
    return np.frombuffer(data, dtype=triton_to_np_dtype(output.datatype)).reshape(list(output.shape))


def infer_identity(server: ServerThread, door: str, datatype: str, values: np.ndarray) -> np.ndarray:
    model = f"identity_{datatype.lower()}"
    if door == "grpc":
        with triton_grpc.InferenceServerClient(server.grpc_address) as client:
            inp = triton_grpc.InferInput("INPUT0", list(values.shape), datatype)
            inp.set_data_from_numpy(values)
            return client.infer(model, [inp]).as_numpy("OUTPUT0")  # type: ignore[no-any-return]
    if door == "grpc_aio":

        async def call() -> np.ndarray:
            async with triton_aio.InferenceServerClient(server.grpc_address) as client:
                inp = triton_aio.InferInput("INPUT0", list(values.shape), datatype)
                inp.set_data_from_numpy(values)
                result = await client.infer(model, [inp], outputs=[triton_aio.InferRequestedOutput("OUTPUT0")])
                return result.as_numpy("OUTPUT0")  # type: ignore[no-any-return]

        return asyncio.run(call())
    if door == "grpc_contents":
        with grpc.insecure_channel(server.grpc_address) as channel:
            reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                contents_request(model, "INPUT0", datatype, values), timeout=30
            )
        assert [o.name for o in reply.outputs] == ["OUTPUT0"]
        return raw_output(reply, 0)
    binary = door == "http_binary"
    client = triton_http.InferenceServerClient(server.rest_address)
    try:
        inp = triton_http.InferInput("INPUT0", list(values.shape), datatype)
        inp.set_data_from_numpy(values, binary_data=binary)
        out = triton_http.InferRequestedOutput("OUTPUT0", binary_data=binary)
        return client.infer(model, [inp], outputs=[out]).as_numpy("OUTPUT0")  # type: ignore[no-any-return]
    finally:
        client.close()


def refused(door: str, datatype: str) -> bool:
    return (door == "grpc_contents" and datatype in NO_CONTENTS) or (door == "http_json" and datatype in NO_JSON)


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("datatype", DATATYPE_NAMES)
def test_every_datatype_round_trips_on_every_door(server: ServerThread, datatype: str, door: str) -> None:
    values = values_of(datatype)
    if refused(door, datatype):
        assert refusal(lambda: infer_identity(server, door, datatype, values)) == "INVALID_ARGUMENT"
        return
    got = infer_identity(server, door, datatype, values)
    assert_same(got, values, as_text=door == "http_json")  # tritonclient.http hands JSON strings back as str


def test_fp16_output_asked_as_json_comes_back_binary(http_client: triton_http.InferenceServerClient) -> None:
    values = values_of("FP16")
    inp = triton_http.InferInput("INPUT0", list(values.shape), "FP16")
    inp.set_data_from_numpy(values, binary_data=True)
    result = http_client.infer("identity_fp16", [inp], outputs=[triton_http.InferRequestedOutput("OUTPUT0", False)])
    assert result.get_output("OUTPUT0")["parameters"]["binary_data_size"] == values.nbytes
    assert_same(result.as_numpy("OUTPUT0"), values)


@pytest.mark.parametrize("door", ["grpc", "http_binary", "http_json"])
@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_nan_and_infinity_round_trip(server: ServerThread, datatype: str, door: str) -> None:
    values = np.array(
        [[np.nan, np.inf, -np.inf, 1.0], [-np.nan, 0.0, -np.inf, np.inf]], dtype=triton_to_np_dtype(datatype)
    )
    if refused(door, datatype):
        assert refusal(lambda: infer_identity(server, door, datatype, values)) == "INVALID_ARGUMENT"
        return
    got = infer_identity(server, door, datatype, values)
    assert got.dtype == values.dtype
    if door == "http_json":  # JSON's NaN token carries no sign or payload
        assert np.array_equal(got, values, equal_nan=True)
    else:
        assert got.tobytes() == values.tobytes()


def rest(server: ServerThread, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def test_json_writes_and_reads_nan_and_infinity_as_triton_does(server: ServerThread) -> None:
    body = b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],"data":[NaN,Infinity,-Infinity,0.5]}]}'
    status, reply = rest(server, "/v2/models/identity_fp32/infer", body)
    assert status == 200
    assert b'"data":[NaN,Infinity,-Infinity,0.5]' in reply
    assert json.loads(reply)["outputs"][0]["shape"] == [1, 4]  # Python's json reads these tokens, as rapidjson does


NOT_UTF8 = np.array([[b"ok", b"\xff\xfe", b"fine", b"\xc3"]], dtype=object)


@pytest.mark.parametrize("door", ["grpc", "grpc_contents", "http_binary"])
def test_bytes_that_are_not_utf8_are_refused(server: ServerThread, door: str) -> None:
    assert refusal(lambda: infer_identity(server, door, "BYTES", NOT_UTF8)) == "INVALID_ARGUMENT"


def test_bytes_that_are_not_utf8_are_refused_before_the_queue(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Sent together to a model that waits for batch-mates: refused while decoding, the bad request never joins the
    good one's batch (the batcher would split such a batch and run its requests again one by one)."""
    good = values_of("BYTES")
    caplog.set_level(logging.INFO, logger="cnnserve.service.scheduling.batcher")

    def send(values: np.ndarray) -> np.ndarray:
        with triton_grpc.InferenceServerClient(server.grpc_address) as client:
            inp = triton_grpc.InferInput("INPUT0", list(values.shape), "BYTES")
            inp.set_data_from_numpy(values)
            return client.infer("bytes_merging", [inp]).as_numpy("OUTPUT0")  # type: ignore[no-any-return]

    with ThreadPoolExecutor(2) as pool:
        answer = pool.submit(send, good)
        refused_call = pool.submit(send, NOT_UTF8)
        assert_same(answer.result(timeout=30), good)
        with pytest.raises(InferenceServerException):
            refused_call.result(timeout=30)
    assert "event=batch_split" not in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs":[{"name":"INPUT0","datatype":"BYTES","shape":[1,4],"data":["a","\\ud800","b","c"]}]}',
        # NaN sends the body to the second reader (Python's json), which lets lone surrogates through
        b'{"inputs":[{"name":"INPUT0","datatype":"BYTES","shape":[1,4],"data":["a","\\ud800","b","c"]}],"x":NaN}',
        b'{"inputs":[{"name":"\\udc00","datatype":"FP32","shape":[1,4],"data":[NaN,1,2,3]}]}',
    ],
)
def test_a_json_string_with_a_lone_surrogate_is_refused(server: ServerThread, body: bytes) -> None:
    for model in ("identity_bytes", "identity_fp32"):
        status, reply = rest(server, f"/v2/models/{model}/infer", body)
        assert status == 400, reply


# -- Triton's example models, called as its example clients call them -------------------------------------------


def simple_string_inputs(
    module: Any, flags: tuple[bool, bool] = (True, True)
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """simple_*_string_infer_client.py: 0..15 and sixteen 1s, as UTF-8 decimal strings in BYTES [1,16]; `flags`:
    binary_data per input (tritonclient.http)."""
    in0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    in1 = np.ones((1, 16), dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, 16], "BYTES"), module.InferInput("INPUT1", [1, 16], "BYTES")]
    for inp, numbers, flag in zip(inputs, (in0, in1), flags, strict=True):
        text = np.array([str(x).encode("utf-8") for x in numbers.ravel()], dtype=np.object_).reshape(numbers.shape)
        if module is triton_http:
            inp.set_data_from_numpy(text, binary_data=flag)
        else:
            inp.set_data_from_numpy(text)
    return inputs, in0 + in1, in0 - in1


def test_simple_string_through_grpc(grpc_client: triton_grpc.InferenceServerClient) -> None:
    inputs, total, difference = simple_string_inputs(triton_grpc)
    outputs = [triton_grpc.InferRequestedOutput("OUTPUT0"), triton_grpc.InferRequestedOutput("OUTPUT1")]
    result = grpc_client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    assert [int(x) for x in result.as_numpy("OUTPUT0")[0]] == total[0].tolist()
    assert [int(x) for x in result.as_numpy("OUTPUT1")[0]] == difference[0].tolist()


def test_simple_string_through_http_binary_and_json(http_client: triton_http.InferenceServerClient) -> None:
    inputs, total, difference = simple_string_inputs(triton_http, flags=(True, False))
    outputs = [
        triton_http.InferRequestedOutput("OUTPUT0", binary_data=True),
        triton_http.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    result = http_client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    assert [int(x) for x in result.as_numpy("OUTPUT0")[0]] == total[0].tolist()
    assert [int(x) for x in result.as_numpy("OUTPUT1")[0]] == difference[0].tolist()


def test_simple_string_with_explicit_byte_contents(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """grpc_explicit_byte_content_client.py."""
    request = pb.ModelInferRequest(model_name="simple_string", model_version="")
    input0 = request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 16])
    input0.contents.bytes_contents.extend(str(i).encode("utf-8") for i in range(16))
    input1 = request.inputs.add(name="INPUT1", datatype="BYTES", shape=[1, 16])
    input1.contents.bytes_contents.extend(b"1" for _ in range(16))
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    reply = stub.ModelInfer(request, timeout=30)
    total, difference = (raw_output(reply, i) for i in range(2))
    assert [int(x) for x in total[0]] == [i + 1 for i in range(16)]
    assert [int(x) for x in difference[0]] == [i - 1 for i in range(16)]


NULL_CHARS = np.array([b"he\x00llo" for _ in range(16)], dtype=np.object_).reshape(1, 16)
BLOBS = np.array([b"\x00\x01\x02\x03" for _ in range(16)], dtype=np.bytes_).reshape(1, 16)


@pytest.mark.parametrize("data", [NULL_CHARS, BLOBS], ids=["null-chars", "np-bytes"])
def test_simple_identity_through_grpc(grpc_client: triton_grpc.InferenceServerClient, data: np.ndarray) -> None:
    """simple_grpc_string_infer_client.py's identity_inference."""
    inp = triton_grpc.InferInput("INPUT0", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    got = grpc_client.infer("simple_identity", [inp], outputs=[triton_grpc.InferRequestedOutput("OUTPUT0")])
    output = got.as_numpy("OUTPUT0")
    if data.dtype == np.object_:
        assert np.array_equal(data, output)
    else:  # as the example compares np.bytes_ data, whose trailing null bytes numpy drops
        assert np.array_equal(data, np.char.encode(output.astype(str)))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("data", [NULL_CHARS, BLOBS], ids=["null-chars", "np-bytes"])
def test_simple_identity_through_http(
    http_client: triton_http.InferenceServerClient, data: np.ndarray, binary: bool
) -> None:
    """simple_http_string_infer_client.py's identity_inference, binary and JSON."""
    inp = triton_http.InferInput("INPUT0", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    out = triton_http.InferRequestedOutput("OUTPUT0", binary_data=binary)
    output = http_client.infer("simple_identity", [inp], outputs=[out]).as_numpy("OUTPUT0")
    if data.dtype == np.object_:
        if binary:
            assert np.array_equal(data, output)
        else:
            as_bytes = np.array([bytes(str(x), encoding="utf-8") for x in output.flatten()], dtype=np.object_)
            assert np.array_equal(data, as_bytes.reshape(1, 16))
    else:
        assert np.array_equal(data, np.char.encode(output.astype(str)))


def explicit_sum_request(model: str, datatype: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version="")
    for name, data in (("INPUT0", list(range(16))), ("INPUT1", [1] * 16)):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1, 16])
        tensor.contents.int_contents[:] = data
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    return request


def test_simple_int8_with_explicit_int_contents(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """grpc_explicit_int8_content_client.py, including its check of the words for a version that is no number."""
    request = explicit_sum_request("simple_int8", "INT8")
    reply = stub.ModelInfer(request, timeout=30)
    total, difference = (raw_output(reply, i) for i in range(2))
    assert total.dtype == np.int8 and total[0].tolist() == [i + 1 for i in range(16)]
    assert difference[0].tolist() == [i - 1 for i in range(16)]

    request.model_version = "wrong_specification"
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert "failed to get model version from specified version string 'wrong_specification'" in str(info.value)


def test_simple_with_contents_and_raw_contents_is_refused_in_tritons_words(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    """grpc_explicit_int_content_client.py: a request with both forms."""
    request = explicit_sum_request("simple", "INT32")
    reply = stub.ModelInfer(request, timeout=30)
    assert raw_output(reply, 0)[0].tolist() == [i + 1 for i in range(16)]
    request.raw_input_contents.extend([np.arange(8).tobytes()])
    request.inputs[0].contents.int_contents[:] = list(range(8, 16))
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'" in str(
        info.value
    )
