"""Fuzzing a live server with hypothesis-made ModelInfer requests: random names, versions, datatypes, shapes, byte
lengths, parameters, outputs, raw and typed contents and mixes of both, near-valid requests with a few mutations,
and bytes that may not even be a protobuf message.

Every reply must be a proper status for the input (never INTERNAL or UNKNOWN, never a hang), nothing may be logged
as an unexpected failure, and afterwards the server must be healthy and answer a correct request correctly.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.service.wire.decode import DATATYPES
from cnnserve.service.wire.encode import tensor_to_raw
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

CALL_TIMEOUT_S = 10.0  # far above any answer here: DEADLINE_EXCEEDED means the server hung on the request
PROPER = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,  # bad names, datatypes, shapes, bytes, parameters, limits, values
    grpc.StatusCode.NOT_FOUND,  # unknown model or version
    grpc.StatusCode.UNAVAILABLE,  # the model that failed to load
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # over the message size
}
MODELS = ("classifier", "cgen", "identity", "broken")
INPUTS = ("images", "latent", "class", *(f"in_{t}" for t in onnx_models.IDENTITY_TYPES))
MODEL_OUTPUTS = {
    "classifier": ("logits",),
    "cgen": ("images",),
    "identity": tuple(f"out_{t}" for t in onnx_models.IDENTITY_TYPES),
}
OUTPUTS = tuple(name for names in MODEL_OUTPUTS.values() for name in names)
PARAMETER_KEYS = ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "binary_data_output")
CONTENT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=8),
}
MAX_MESSAGE_BYTES = 64 * 1024

tried: collections.Counter[str] = collections.Counter()  # status name -> requests, over the whole module
unexpected: list[logging.LogRecord] = []


class UnexpectedFailures(logging.Handler):
    """Collects what the server logs as a failure it did not expect (the INTERNAL path) or a crash."""

    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@contextlib.contextmanager
def fuzz_target(repo: Path, unexpected: list[logging.LogRecord], loggers: tuple[str, ...], **limits: Any
                ) -> Iterator[ServerThread]:  # fmt: skip
    """A server on every kind of model (a corrupt one too) with small limits, its ERROR logs collected."""
    for write in (onnx_models.write_classifier, onnx_models.write_conditional_generator, onnx_models.write_identity,
                  onnx_models.write_corrupt):  # fmt: skip
        write(repo)
    watcher = UnexpectedFailures(unexpected)
    for name in loggers:
        logging.getLogger(name).addHandler(watcher)
    limits = {"max_message_bytes": MAX_MESSAGE_BYTES, "max_elements_per_request": 4096,
              "max_request_tensor_bytes": 32 * 1024, **limits}  # fmt: skip
    try:
        with ServerThread(loopback_settings(repo, **limits)) as running:
            unexpected.clear()  # the corrupt model's load failure is expected
            yield running
    finally:
        for name in loggers:
            logging.getLogger(name).removeHandler(watcher)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with fuzz_target(tmp_path_factory.mktemp("repo"), unexpected, ("cnnserve.service",)) as running:
        yield running


@pytest.fixture(scope="module")
def infer(server: ServerThread) -> Iterator[Callable[[bytes], tuple[grpc.StatusCode, bytes | None]]]:
    """Sends serialized bytes as a ModelInfer request; returns the status and the reply's bytes."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        method = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        def call(payload: bytes) -> tuple[grpc.StatusCode, bytes | None]:
            try:
                reply = method(payload, timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as err:
                code: grpc.StatusCode = err.code()
                tried[code.name] += 1
                return code, None
            tried["OK"] += 1
            return grpc.StatusCode.OK, reply

        yield call


# -- strategies ---------------------------------------------------------------------------------------------------

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)  # protobuf strings are UTF-8: no surrogates
parameter = st.one_of(
    st.builds(lambda v: pb.InferParameter(bool_param=v), st.booleans()),
    st.builds(lambda v: pb.InferParameter(int64_param=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: pb.InferParameter(uint64_param=v), st.integers(0, 2**64 - 1)),
    st.builds(lambda v: pb.InferParameter(double_param=v), st.floats()),
    st.builds(lambda v: pb.InferParameter(string_param=v), text),
    st.just(pb.InferParameter()),
)
parameters = st.dictionaries(st.sampled_from(PARAMETER_KEYS) | text, parameter, max_size=3)
dimension = st.integers(-2, 12) | st.sampled_from([0, 16, 32, 33, 2**31, 2**40, 2**63 - 1, -(2**63)])
datatype = st.sampled_from([*DATATYPES, "BF16", "FP8", "fp32", "", "STRING"]) | text


@st.composite
def contents(draw: st.DrawFn) -> pb.InferTensorContents:
    result = pb.InferTensorContents()
    for field in draw(st.lists(st.sampled_from(list(CONTENT_VALUES)), max_size=2, unique=True)):
        getattr(result, field).extend(draw(st.lists(CONTENT_VALUES[field], max_size=40)))
    return result


@st.composite
def requested_outputs(draw: st.DrawFn, request: pb.ModelInferRequest, names: tuple[str, ...] = OUTPUTS) -> None:
    for _ in range(draw(st.integers(0, 3))):
        output = request.outputs.add(name=draw(st.sampled_from(names) | text))
        if draw(st.booleans()):
            output.parameters["classification"].CopyFrom(
                draw(parameter | st.builds(lambda k: pb.InferParameter(int64_param=k), st.integers(-2, 12)))
            )


@st.composite
def random_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """Anything the message type can hold."""
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(MODELS) | text),
        model_version=draw(st.sampled_from(["", "1", "2", "0", "-1", "01", "\u00b9", "1" * 30]) | text),
        id=draw(text),
    )
    for key, value in draw(parameters).items():
        request.parameters[key].CopyFrom(value)
    form = draw(st.sampled_from(["typed", "raw", "raw-miscounted", "both"]))
    for _ in range(draw(st.integers(0, 4))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(INPUTS) | text),
            datatype=draw(datatype),
            shape=draw(st.lists(dimension, max_size=5)),
        )
        if form in ("typed", "both"):
            tensor.contents.CopyFrom(draw(contents()))
        if form != "typed":
            request.raw_input_contents.append(draw(st.binary(max_size=600)))
    if form == "raw-miscounted":
        request.raw_input_contents.append(draw(st.binary(max_size=64)))
    if draw(st.integers(0, 30)) == 0:  # now and then, past the message size limit
        request.raw_input_contents.append(b"\0" * (MAX_MESSAGE_BYTES + 1))
    draw(requested_outputs(request))
    return request


def _typed(tensor: pb.ModelInferRequest.InferInputTensor, datatype_name: str, array: np.ndarray) -> None:
    field = DATATYPES[datatype_name].contents_field
    if field is not None:  # FP16 has no typed form: the request stays incomplete, and must be refused
        getattr(tensor.contents, field).extend(array.ravel().tolist())


def _valid_inputs(draw: st.DrawFn, model: str, batch: int, rng: np.random.Generator) -> dict[str, tuple[str, Any]]:
    if model == "classifier":
        return {"images": ("FP32", rng.standard_normal((batch, 1, 4, 4)).astype(np.float32))}
    if model == "cgen":
        classes = np.array(draw(st.lists(st.integers(-12, 12), min_size=batch, max_size=batch)), np.int64)
        return {"latent": ("FP32", rng.standard_normal((batch, 8)).astype(np.float32)), "class": ("INT64", classes)}
    inputs: dict[str, tuple[str, Any]] = {}
    for name in onnx_models.IDENTITY_TYPES:
        if name == "BYTES":
            items = draw(st.lists(st.binary(max_size=6), min_size=3 * batch, max_size=3 * batch))
            values = np.empty(3 * batch, dtype=object)
            values[:] = items
            inputs[f"in_{name}"] = (name, values.reshape(batch, 3))
        elif name == "BOOL":
            inputs[f"in_{name}"] = (name, rng.integers(0, 2, (batch, 3)).astype(np.bool_))
        else:
            inputs[f"in_{name}"] = (name, (rng.standard_normal((batch, 3)) * 100).astype(DATATYPES[name].numpy))
    return inputs


MUTATIONS = ("drop-input", "repeat-input", "dim", "rank", "datatype", "cut-raw", "grow-raw", "rename", "version",
             "sequence", "both-forms", "batch-mismatch")  # fmt: skip


@st.composite
def near_valid_requests(draw: st.DrawFn) -> tuple[pb.ModelInferRequest, bool]:
    """A correct request for a real model, then up to two mutations; (request, whether it is still intact)."""
    model = draw(st.sampled_from(MODELS[:3]))
    batch = draw(st.integers(1, 8))
    raw = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    request = pb.ModelInferRequest(model_name=model, id=draw(text))
    for name, (datatype_name, array) in _valid_inputs(draw, model, batch, rng).items():
        tensor = request.inputs.add(name=name, datatype=datatype_name, shape=list(array.shape))
        if raw:
            request.raw_input_contents.append(tensor_to_raw(array, datatype_name))
        else:
            _typed(tensor, datatype_name, array)
    draw(requested_outputs(request, MODEL_OUTPUTS[model]))
    mutations = draw(st.lists(st.sampled_from(MUTATIONS), max_size=2))
    for mutation in mutations:
        index = draw(st.integers(0, len(request.inputs) - 1)) if request.inputs else 0
        _mutate(draw, request, mutation, index)
    return request, not mutations


def _mutate(draw: st.DrawFn, request: pb.ModelInferRequest, mutation: str, index: int) -> None:
    inputs, raw = request.inputs, request.raw_input_contents
    if not inputs:
        return
    tensor = inputs[index]
    if mutation == "drop-input":
        del inputs[index]
        if len(raw) > index:
            del raw[index]
    elif mutation == "repeat-input":
        inputs.add().CopyFrom(tensor)
        if len(raw) > index:
            raw.append(raw[index])
    elif mutation == "dim" and tensor.shape:
        tensor.shape[draw(st.integers(0, len(tensor.shape) - 1))] = draw(dimension)
    elif mutation == "rank":
        if len(tensor.shape) > 0 and draw(st.booleans()):
            tensor.shape.pop()
        else:
            tensor.shape.append(draw(dimension))
    elif mutation == "datatype":
        tensor.datatype = draw(datatype)
    elif mutation == "cut-raw" and len(raw) > index:
        raw[index] = raw[index][: draw(st.integers(0, max(0, len(raw[index]) - 1)))]
    elif mutation == "grow-raw" and len(raw) > index:
        raw[index] = raw[index] + draw(st.binary(min_size=1, max_size=16))
    elif mutation == "rename":
        tensor.name = draw(st.sampled_from(INPUTS) | text)
    elif mutation == "version":
        request.model_version = draw(text)
    elif mutation == "sequence":
        request.parameters["sequence_id"].CopyFrom(pb.InferParameter(int64_param=draw(st.integers(1, 99))))
    elif mutation == "both-forms":
        tensor.contents.CopyFrom(draw(contents()))
        if not raw:
            raw.extend(b"" for _ in inputs)
    elif mutation == "batch-mismatch" and tensor.shape:
        # another batch size; the largest int64 wraps to 0 (shape is int64 on the wire: + 1 would not serialise)
        tensor.shape[0] = tensor.shape[0] + 1 if tensor.shape[0] < 2**63 - 1 else 0


# -- the fuzzing ----------------------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@FUZZ
@given(request=random_requests())
def test_random_requests_get_proper_statuses(infer: Any, request: pb.ModelInferRequest) -> None:
    code, reply = infer(request.SerializeToString())
    assert code in PROPER, f"{code.name} for {request}"
    if reply is not None:
        response = pb.ModelInferResponse.FromString(reply)
        assert len(response.outputs) == len(response.raw_output_contents) > 0


@FUZZ
@given(case=near_valid_requests())
def test_near_valid_requests_get_proper_statuses_and_intact_ones_are_answered(
    infer: Any, case: tuple[pb.ModelInferRequest, bool]
) -> None:
    request, intact = case
    code, reply = infer(request.SerializeToString())
    assert code in PROPER, f"{code.name} for {request}"
    if not intact:
        return
    typed_fp16 = request.model_name == "identity" and not request.raw_input_contents
    # Outputs may repeat or carry a bad classification parameter, classes may be out of range, text may not be UTF-8.
    refusable = typed_fp16 or bool(request.outputs) or request.model_name != "classifier"
    if not refusable:
        assert code == grpc.StatusCode.OK, request
    if reply is not None and request.model_name == "classifier" and not request.outputs:
        images = np.frombuffer(request.raw_input_contents[0], np.float32) if request.raw_input_contents else None
        if images is None:
            images = np.array(request.inputs[0].contents.fp32_contents, np.float32)
        logits = np.frombuffer(pb.ModelInferResponse.FromString(reply).raw_output_contents[0], np.float32)
        expected = onnx_models.classifier_reference(images.reshape(-1, 1, 4, 4)).ravel()
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=300) | near_valid_requests().map(lambda case: case[0].SerializeToString()), cut=st.data()
)
def test_bytes_that_may_not_parse_get_proper_statuses(infer: Any, data: bytes, cut: st.DataObject) -> None:
    if data and cut.draw(st.booleans()):  # corrupt one byte of a message that would parse
        at = cut.draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ cut.draw(st.integers(1, 255))]) + data[at + 1 :]
    code, _ = infer(data)
    assert code in PROPER, code.name


def test_after_fuzzing_the_server_is_healthy_and_answers_correctly(server: ServerThread) -> None:
    total = sum(tried.values())
    print(f"\nfuzzed {total} ModelInfer requests; statuses: {dict(sorted(tried.items()))}")
    assert total >= 600 or total == 0, "run with the fuzz tests above"
    assert not unexpected, [r.getMessage() for r in unexpected]
    assert "INTERNAL" not in tried and "UNKNOWN" not in tried and "DEADLINE_EXCEEDED" not in tried
    assert server.server.gate.in_progress == 0  # every admitted request finished
    assert all(m.queued_items == 0 and m.in_flight_requests == 0 for m in server.server.models.served_models())
    with grpc.insecure_channel(server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service="classifier")).status == 1  # SERVING
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        batch = np.random.default_rng(7).standard_normal((5, 1, 4, 4)).astype(np.float32)
        request = pb.ModelInferRequest(model_name="classifier")
        request.inputs.add(name="images", datatype="FP32", shape=list(batch.shape))
        request.raw_input_contents.append(batch.tobytes())
        reply = stub.ModelInfer(request, timeout=10)
    logits = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(5, 10)
    np.testing.assert_allclose(logits, onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
