"""Fuzzing the REST door of a live server (test_fuzz.py does the gRPC door): the same hypothesis-made requests as
JSON tensors and binary tensors, random JSON documents, nesting past any parser's depth, bodies of random bytes,
and Inference-Header-Content-Length values that do not fit the body.

Every answer must be a proper status with a JSON {"error"} body (never 500, never a hang), nothing may be logged
as an unexpected failure, and afterwards the server must answer a correct request correctly.
"""

from __future__ import annotations

import base64
import collections
import http.client
import json
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.wire.decode import DATATYPES
from tests import onnx_models
from tests.conftest import ServerThread
from tests.service.test_fuzz import MODELS, fuzz_target, near_valid_requests, random_requests

CALL_TIMEOUT_S = 10.0  # far above any answer here: a timeout means the server hung on the request
PROPER = {200, 400, 404, 413, 503}  # 503: the model that failed to load
HEADER = "Inference-Header-Content-Length"

statuses: collections.Counter[int] = collections.Counter()
unexpected: list[logging.LogRecord] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    loggers = ("cnnserve", "aiohttp")
    with fuzz_target(tmp_path_factory.mktemp("repo"), unexpected, loggers, max_rest_json_bytes=32 * 1024) as running:
        yield running


def post(server: ServerThread, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=CALL_TIMEOUT_S)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        reply = connection.getresponse()
        status, data = reply.status, reply.read()
    finally:
        connection.close()
    statuses[status] += 1
    assert status in PROPER, (status, data[:300])
    if status != 200:
        assert isinstance(json.loads(data)["error"], str)
    return status, data


def model_path(request: pb.ModelInferRequest) -> str:
    name = urllib.parse.quote(request.model_name, safe="") or "_"
    version = f"/versions/{urllib.parse.quote(request.model_version, safe='')}" if request.model_version else ""
    return f"/v2/models/{name}{version}/infer"


def _parameter(value: pb.InferParameter) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return None if kind is None else getattr(value, kind)


def _contents(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    values: list[Any] = []
    for field, items in tensor.contents.ListFields():
        if field.name == "bytes_contents":
            values += [base64.b64encode(item).decode() for item in items]
        else:
            values += list(items)
    return values


def _json_form(datatype: str, raw: bytes) -> list[Any] | None:
    """Raw numeric bytes as JSON data (None: binary only, or bytes that are no whole number of elements)."""
    info = DATATYPES.get(datatype)
    if info is None or info.name in ("BYTES", "FP16") or len(raw) % info.numpy.itemsize:
        return None
    values: list[Any] = np.frombuffer(raw, info.numpy).tolist()
    return values


def as_rest(request: pb.ModelInferRequest, binary: bool) -> tuple[bytes, dict[str, str]]:
    """The gRPC fuzz case as a REST body: raw entries travel binary, typed contents as JSON data."""
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for index, tensor in enumerate(request.inputs):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        raw = request.raw_input_contents[index] if index < len(request.raw_input_contents) else None
        json_form = _json_form(tensor.datatype, raw) if raw is not None and not binary else None
        if raw is not None and json_form is None:
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _contents(tensor) if json_form is None else json_form
        inputs.append(entry)
    outputs = [{"name": o.name, "parameters": {k: _parameter(v) for k, v in o.parameters.items()}}
               for o in request.outputs]  # fmt: skip
    document = {"id": request.id, "inputs": inputs, "outputs": outputs,
                "parameters": {k: _parameter(v) for k, v in request.parameters.items()}}  # fmt: skip
    header = json.dumps(document).encode()  # NaN and Infinity: not JSON, and must be refused as such
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {HEADER: str(len(header))}


FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
json_documents = st.fixed_dictionaries(
    {}, optional={"inputs": json_values, "outputs": json_values, "parameters": json_values, "id": json_values}
)


@FUZZ
@given(request=random_requests(), binary=st.booleans())
def test_random_requests_as_rest(server: ServerThread, request: pb.ModelInferRequest, binary: bool) -> None:
    body, headers = as_rest(request, binary)
    post(server, model_path(request), body, headers)


@FUZZ
@given(case=near_valid_requests(), binary=st.booleans())
def test_near_valid_requests_as_rest(
    server: ServerThread, case: tuple[pb.ModelInferRequest, bool], binary: bool
) -> None:
    request, intact = case
    body, headers = as_rest(request, binary)
    status, data = post(server, model_path(request), body, headers)
    simple = request.model_name == "classifier" and not request.outputs and intact
    if simple:
        assert status == 200, data[:300]


@FUZZ
@given(document=json_documents, model=st.sampled_from(MODELS))
def test_random_json_documents(server: ServerThread, document: dict[str, Any], model: str) -> None:
    post(server, f"/v2/models/{model}/infer", json.dumps(document).encode())


# Header text is printable ASCII: http.client itself refuses CR, LF and other controls before anything is sent.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=400), header=st.none() | st.integers(-5, 500).map(str) | HEADER_TEXT,
       depth=st.integers(0, 3000))  # fmt: skip
def test_bytes_and_header_lengths_that_do_not_fit(
    server: ServerThread, body: bytes, header: str | None, depth: int
) -> None:
    headers = {} if header is None else {HEADER: header.encode("ascii", "replace").decode().strip() or "x"}
    if depth > 100:  # nesting past orjson's limit, inside a request that is otherwise well formed
        nested = b"[" * depth + b"]" * depth
        body = b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": ' + nested + b"}]}"
    post(server, "/v2/models/classifier/infer", body, headers)


def test_after_fuzzing_the_rest_door_is_healthy_and_answers_correctly(server: ServerThread) -> None:
    total = sum(statuses.values())
    print(f"\nfuzzed {total} REST requests; statuses: {dict(sorted(statuses.items()))}")
    assert total >= 600 or total == 0, "run with the fuzz tests above"
    assert not unexpected, [r.getMessage() for r in unexpected]
    assert 500 not in statuses
    assert server.server.gate.in_progress == 0
    batch = np.random.default_rng(7).standard_normal((5, 1, 4, 4)).astype(np.float32)
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [5, 1, 4, 4], "data": batch.ravel().tolist()}]}
    status, data = post(server, "/v2/models/classifier/infer", json.dumps(body).encode())
    assert status == 200
    logits = np.array(json.loads(data)["outputs"][0]["data"], np.float32).reshape(5, 10)
    np.testing.assert_allclose(logits, onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
