"""protocol.decode: lossless tensor <-> wire round trips, every validation rule, classification, tritonclient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc._utils import _get_inference_request

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.service.errors import InvalidInput
from cnnserve.service.types import ModelSpec, TensorSpec
from cnnserve.service.wire.decode import (
    BYTES_ELEMENT_COST,
    DATATYPES,
    RequestedOutput,
    RequestLimits,
    datatype_from_ort,
    decode_inputs,
    triton_data_type,
)
from cnnserve.service.wire.encode import classify, encode_response, tensor_to_raw

Array = np.ndarray[Any, Any]
Mutation = Callable[[pb.ModelInferRequest], object]  # edits a valid request in place

MODEL = ModelSpec(
    name="digits",
    platform="onnxruntime_onnx",
    max_batch_size=4,
    inputs=(TensorSpec("images", "FP32", (-1, 1, 4, 4)), TensorSpec("class", "INT64", (-1, 1))),
    outputs=(
        TensorSpec("logits", "FP32", (-1, 10)),
        TensorSpec("embedding", "FP32", (-1, 2, 3)),
        TensorSpec("names", "BYTES", (-1, 1)),
    ),
    labels=("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    label_output="logits",
)


def _add_raw(request: pb.ModelInferRequest, name: str, datatype: str, array: Array) -> None:
    request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    request.raw_input_contents.append(tensor_to_raw(array, datatype))


def _add_typed(request: pb.ModelInferRequest, name: str, datatype: str, array: Array) -> None:
    tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    field = DATATYPES[datatype].contents_field
    assert field is not None
    getattr(tensor.contents, field).extend(array.ravel().tolist())


def _valid(batch: int = 2) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits", id="r1")
    _add_raw(request, "images", "FP32", np.ones((batch, 1, 4, 4), np.float32))
    _add_raw(request, "class", "INT64", np.arange(batch, dtype=np.int64).reshape(batch, 1))
    return request


def _single_input_spec(datatype: str, shape: tuple[int, ...], max_batch_size: int) -> ModelSpec:
    return ModelSpec(
        name="m",
        platform="onnxruntime_onnx",
        max_batch_size=max_batch_size,
        inputs=(TensorSpec("x", datatype, shape),),
        outputs=(TensorSpec("x", datatype, shape),),
    )


# --- round trips ------------------------------------------------------------------------------------------------


@st.composite
def tensors(draw: st.DrawFn, datatypes: list[str] | None = None) -> tuple[ModelSpec, Array]:
    """A spec with one input (and an identical output) and an array that fits it, of any served datatype."""
    datatype = draw(st.sampled_from(datatypes or sorted(DATATYPES)))
    batching = draw(st.booleans())
    item = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    shape = (draw(st.integers(1, 4)), *item) if batching else item
    declared = tuple(-1 if draw(st.booleans()) else dim for dim in shape)
    if batching:
        declared = (-1, *declared[1:])
    spec = _single_input_spec(datatype, declared, 4 if batching else 0)
    if datatype == "BYTES":
        count = int(np.prod(shape, dtype=np.int64))
        items = draw(st.lists(st.binary(max_size=6), min_size=count, max_size=count))
        array = np.empty(count, dtype=object)
        array[:] = items
        return spec, array.reshape(shape)
    return spec, draw(hnp.arrays(DATATYPES[datatype].numpy, shape))


def _same(decoded: Array, original: Array) -> bool:
    """Equal dtype, shape and contents; numeric data bit for bit (NaN payloads and signed zeros included)."""
    if decoded.dtype != original.dtype or decoded.shape != original.shape:
        return False
    if original.dtype == object:
        return bool(decoded.ravel().tolist() == original.ravel().tolist())
    return decoded.tobytes() == original.tobytes()


@settings(max_examples=80, deadline=None)
@given(tensors())
def test_raw_round_trip_is_bit_exact(case: tuple[ModelSpec, Array]) -> None:
    spec, array = case
    request = pb.ModelInferRequest()
    _add_raw(request, "x", spec.inputs[0].datatype, array)
    decoded = decode_inputs(request, spec)
    assert _same(decoded.inputs["x"], array)
    assert decoded.batch_size == (array.shape[0] if spec.max_batch_size else 0)


@settings(max_examples=80, deadline=None)
@given(tensors([name for name, info in DATATYPES.items() if info.contents_field is not None]))
def test_typed_contents_round_trip(case: tuple[ModelSpec, Array]) -> None:
    spec, array = case
    request = pb.ModelInferRequest()
    _add_typed(request, "x", spec.inputs[0].datatype, array)
    decoded = decode_inputs(request, spec).inputs["x"]
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    if array.dtype == object:
        assert decoded.ravel().tolist() == array.ravel().tolist()
    else:
        assert np.array_equal(decoded, array, equal_nan=array.dtype.kind == "f")


@settings(max_examples=80, deadline=None)
@given(tensors())
def test_response_round_trip_is_bit_exact(case: tuple[ModelSpec, Array]) -> None:
    """encode_response's raw output, sent back as a request, decodes to the same bits (NaN and Inf untouched)."""
    spec, array = case
    response = encode_response(pb.ModelInferRequest(id="7"), spec, "3", {"x": array}, [], ())
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "7")
    [output] = response.outputs
    assert (output.name, output.datatype, tuple(output.shape)) == ("x", spec.outputs[0].datatype, array.shape)
    request = pb.ModelInferRequest(raw_input_contents=response.raw_output_contents)
    request.inputs.add(name="x", datatype=output.datatype, shape=output.shape)
    assert _same(decode_inputs(request, spec).inputs["x"], array)


def test_nan_and_inf_pass_through_outputs() -> None:
    special = np.array([[np.nan, np.inf, -np.inf, -0.0, 1.5, 0, 0, 0, 0, 0]], np.float32)
    special.view(np.uint32)[0, 0] = 0x7FC0_1234  # a NaN with a payload
    response = encode_response(_valid(1), MODEL, "1", {"logits": special}, [RequestedOutput("logits")], ())
    assert response.raw_output_contents[0] == special.tobytes()


def test_bytes_round_trip_keeps_empty_and_non_utf8() -> None:
    items = np.array([[b""], [b"\xff\xfe\x00"], [b"plain"], ["caf\u00e9"]], dtype=object)
    response = encode_response(_valid(4), MODEL, "1", {"names": items}, [RequestedOutput("names")], ())
    spec = _single_input_spec("BYTES", (-1, 1), 4)
    request = pb.ModelInferRequest(raw_input_contents=response.raw_output_contents)
    request.inputs.add(name="x", datatype="BYTES", shape=[4, 1])
    decoded = decode_inputs(request, spec).inputs["x"]
    assert decoded.ravel().tolist() == [b"", b"\xff\xfe\x00", b"plain", "caf\u00e9".encode()]


def test_raw_inputs_are_views_of_the_request_bytes() -> None:
    decoded = decode_inputs(_valid(), MODEL).inputs["images"]
    assert not decoded.flags.owndata and not decoded.flags.writeable
    base = decoded.base
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, bytes) and len(base) == decoded.nbytes
    assert np.shares_memory(decoded, np.frombuffer(base, np.uint8))


def test_outputs_follow_the_order_asked_and_default_to_model_order() -> None:
    decoded = decode_inputs(_valid(), MODEL)
    assert decoded.requested_outputs == [RequestedOutput(t.name) for t in MODEL.outputs]
    request = _valid()
    request.outputs.add(name="names")
    request.outputs.add(name="logits").parameters["classification"].int64_param = 3
    decoded = decode_inputs(request, MODEL)
    assert decoded.requested_outputs == [RequestedOutput("names"), RequestedOutput("logits", 3)]
    outputs = {
        "logits": np.zeros((2, 10), np.float32),
        "embedding": np.zeros((2, 2, 3), np.float32),
        "names": np.array([[b"a"], [b"b"]], dtype=object),
    }
    response = encode_response(request, MODEL, "1", outputs, decoded.requested_outputs, MODEL.labels)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("names", "BYTES", [2, 1]),
        ("logits", "BYTES", [2, 3]),
    ]


def test_non_batching_model_reports_batch_size_zero() -> None:
    spec = _single_input_spec("FP32", (3, -1), 0)
    request = pb.ModelInferRequest()
    _add_raw(request, "x", "FP32", np.zeros((3, 5), np.float32))
    assert decode_inputs(request, spec).batch_size == 0


def test_decoding_leaves_the_request_untouched() -> None:
    request = _valid()
    request.parameters["priority"].uint64_param = 1
    before = request.SerializeToString(deterministic=True)
    decode_inputs(request, MODEL)
    assert request.SerializeToString(deterministic=True) == before


# --- classification ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    scores=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 12)),
        elements=st.floats(-1e6, 1e6, width=32),
        unique=True,
    ),
    k=st.integers(1, 14),
    label_count=st.integers(0, 12),
)
def test_classification_matches_argsort(scores: Array, k: int, label_count: int) -> None:
    labels = [f"label{i}" for i in range(label_count)]
    result = classify(scores, k, labels, batched=True)
    expected_k = min(k, scores.shape[1])
    assert result.shape == (scores.shape[0], expected_k)
    for row, strings in zip(scores, result, strict=True):
        for index, text in zip(np.argsort(-row)[:expected_k], strings, strict=True):
            expected = b"%f:%d" % (float(row[index]), index)
            if index < label_count:
                expected += b":" + labels[index].encode()
            assert text == expected


def test_classification_without_batch_axis_and_through_tritonclient() -> None:
    assert classify(np.array([0.1, 0.7, 0.2]), 2, ["a", "b", "c"], batched=False).tolist() == [
        b"0.700000:1:b",
        b"0.200000:2:c",
    ]
    request = _valid(1)
    request.outputs.add(name="logits").parameters["classification"].int64_param = 2
    decoded = decode_inputs(request, MODEL)
    logits = np.array([[0, 0, 0, 9, 0, 0, 0, 0, 5, 0]], np.float32)
    response = encode_response(request, MODEL, "1", {"logits": logits}, decoded.requested_outputs, MODEL.labels)
    result = triton.InferResult(triton_pb.ModelInferResponse.FromString(response.SerializeToString()))
    assert result.as_numpy("logits").tolist() == [[b"9.000000:3:three", b"5.000000:8:eight"]]


# --- interop with tritonclient ----------------------------------------------------------------------------------


def test_decodes_a_request_built_by_tritonclient() -> None:
    images = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)
    classes = np.array([[1], [7], [2]], np.int64)
    inputs = [triton.InferInput("images", list(images.shape), "FP32"), triton.InferInput("class", [3, 1], "INT64")]
    inputs[0].set_data_from_numpy(images)
    inputs[1].set_data_from_numpy(classes)
    outputs = [triton.InferRequestedOutput("logits", class_count=3), triton.InferRequestedOutput("names")]
    built = _get_inference_request("digits", inputs, "", "abc", outputs, 0, False, False, 5, 1000, None)
    request = pb.ModelInferRequest.FromString(built.SerializeToString())
    decoded = decode_inputs(request, MODEL)
    assert np.array_equal(decoded.inputs["images"], images) and np.array_equal(decoded.inputs["class"], classes)
    assert decoded.batch_size == 3
    assert decoded.requested_outputs == [RequestedOutput("logits", 3), RequestedOutput("names")]

    strings = triton.InferInput("x", [2], "BYTES")
    strings.set_data_from_numpy(np.array([b"", b"\x80abc"], dtype=object))
    built = _get_inference_request("m", [strings], "", "", None, 0, False, False, 0, None, None)
    request = pb.ModelInferRequest.FromString(built.SerializeToString())
    decoded_strings = decode_inputs(request, _single_input_spec("BYTES", (-1,), 4)).inputs["x"]
    assert decoded_strings.tolist() == [b"", b"\x80abc"]


# --- validation: every rule refuses with InvalidInput -----------------------------------------------------------


def _replace_raw(request: pb.ModelInferRequest, index: int, data: bytes) -> None:
    raw = list(request.raw_input_contents)
    raw[index] = data
    del request.raw_input_contents[:]
    request.raw_input_contents.extend(raw)


def _typed_request(values: list[int], datatype: str = "INT64", field: str = "int64_contents") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest()
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1, 2])
    getattr(tensor.contents, field).extend(values)
    return request


def _classify(output: str, set_value: Callable[[pb.InferParameter], None]) -> Mutation:
    def mutate(request: pb.ModelInferRequest) -> None:
        set_value(request.outputs.add(name=output).parameters["classification"])

    return mutate


def _set(**field: Any) -> Callable[[pb.InferParameter], None]:
    [(name, value)] = field.items()
    return lambda parameter: setattr(parameter, name, value)


def _request_parameter(key: str, **field: Any) -> Mutation:
    return lambda request: _set(**field)(request.parameters[key])


REFUSED: dict[str, Mutation] = {
    "unknown input": lambda r: _add_raw(r, "extra", "FP32", np.zeros((2, 1), np.float32)),
    "duplicate input": lambda r: _add_raw(r, "class", "INT64", np.zeros((2, 1), np.int64)),
    "missing input": lambda r: (r.inputs.pop(), r.raw_input_contents.pop()),
    "wrong datatype": lambda r: setattr(r.inputs[1], "datatype", "INT32"),
    "unknown datatype": lambda r: setattr(r.inputs[1], "datatype", "BF16"),
    "wrong rank": lambda r: r.inputs[1].shape.append(1),
    "fixed dim differs": lambda r: r.inputs[0].shape.__setitem__(2, 5),
    "negative dim": lambda r: r.inputs[0].shape.__setitem__(2, -4),
    "empty batch": lambda r: [t.shape.__setitem__(0, 0) for t in r.inputs],
    "batch over max": lambda r: [t.shape.__setitem__(0, 5) for t in r.inputs],
    "batch sizes disagree": lambda r: r.inputs[1].shape.__setitem__(0, 1),
    "raw bytes short": lambda r: _replace_raw(r, 1, r.raw_input_contents[1][:-1]),
    "raw bytes long": lambda r: _replace_raw(r, 1, r.raw_input_contents[1] + b"\x00" * 8),
    "raw and typed": lambda r: r.inputs[1].contents.int64_contents.extend([0, 1]),
    "raw count differs": lambda r: r.raw_input_contents.append(b""),
    "unknown output": lambda r: r.outputs.add(name="nope"),
    "duplicate output": lambda r: [r.outputs.add(name="logits") for _ in range(2)],
    "classification zero": _classify("logits", _set(int64_param=0)),
    "classification negative": _classify("logits", _set(int64_param=-2)),
    "classification string": _classify("logits", _set(string_param="3")),
    "classification bool": _classify("logits", _set(bool_param=True)),
    "classification double": _classify("logits", _set(double_param=3.0)),
    "classification unset": _classify("logits", lambda parameter: parameter.Clear()),
    "classification on 2-D items": _classify("embedding", _set(int64_param=1)),
    "classification on BYTES": _classify("names", _set(int64_param=1)),
    "sequence_id int": _request_parameter("sequence_id", int64_param=42),
    "sequence_id uint": _request_parameter("sequence_id", uint64_param=42),
    "sequence_id string": _request_parameter("sequence_id", string_param="abc"),
    "sequence_start": _request_parameter("sequence_start", bool_param=True),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused(case: str) -> None:
    request = _valid()
    REFUSED[case](request)
    with pytest.raises(InvalidInput):
        decode_inputs(request, MODEL)


ACCEPTED: dict[str, Mutation] = {
    "priority": _request_parameter("priority", uint64_param=2),
    "timeout": _request_parameter("timeout", int64_param=10),
    "sequence_id zero": _request_parameter("sequence_id", int64_param=0),
    "sequence_id empty": _request_parameter("sequence_id", string_param=""),
    "sequence_start false": _request_parameter("sequence_start", bool_param=False),
    "sequence_end": _request_parameter("sequence_end", bool_param=False),
    "binary_data_output": _request_parameter("binary_data_output", bool_param=True),
    "empty final response": _request_parameter("triton_enable_empty_final_response", bool_param=True),
    "unknown parameter": _request_parameter("whatever", double_param=1.5),
    "tensor binary_data_size": lambda r: _set(int64_param=64)(r.inputs[0].parameters["binary_data_size"]),
    "output binary_data": lambda r: _set(bool_param=True)(r.outputs.add(name="names").parameters["binary_data"]),
    "classification uint64": _classify("logits", _set(uint64_param=20)),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted(case: str) -> None:
    request = _valid()
    ACCEPTED[case](request)
    decode_inputs(request, MODEL)


@pytest.mark.parametrize(
    ("datatype", "shape"),
    [
        ("FP32", [1, 2**40]),  # one absurd dim
        ("FP32", [1, 2**16, 2**16]),  # a product past MAX_ELEMENTS (2**31)
        ("FP32", [1, 0, 2**62]),  # empty, but numpy would still size the other dims
        ("BYTES", [1, 2**30]),  # more elements than the bytes could hold
    ],
)
def test_absurd_shapes_are_refused_before_allocating(datatype: str, shape: list[int]) -> None:
    spec = _single_input_spec(datatype, (-1,) * len(shape), 4)
    request = pb.ModelInferRequest(raw_input_contents=[b"\x00" * 16])
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    with pytest.raises(InvalidInput):
        decode_inputs(request, spec)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x09\x00\x00\x00abc" + b"\x00\x00\x00\x00",  # first element claims more than remains
        b"\x02\x00\x00\x00ab\x01\x00",  # second length cut short
        b"\x01\x00\x00\x00a",  # fewer bytes than two lengths
        b"\x01\x00\x00\x00a\x00\x00\x00\x00zz",  # bytes left over
    ],
)
def test_malformed_raw_bytes_are_refused(raw: bytes) -> None:
    request = pb.ModelInferRequest(raw_input_contents=[raw])
    request.inputs.add(name="x", datatype="BYTES", shape=[1, 2])
    with pytest.raises(InvalidInput):
        decode_inputs(request, _single_input_spec("BYTES", (-1, 2), 4))


@pytest.mark.parametrize(
    ("request_", "datatype"),
    [
        (_typed_request([1, 2, 3]), "INT64"),  # count differs from shape [1, 2]
        (_typed_request([1]), "INT64"),
        (_typed_request([1, 2], field="int_contents"), "INT64"),  # wrong contents field
        (_typed_request([1, 200], "INT8", "int_contents"), "INT8"),  # outside INT8's range
        (_typed_request([1, 2], "FP16", "fp32_contents"), "FP16"),  # FP16 has no typed form
        (_typed_request([], "FP16"), "FP16"),
    ],
)
def test_bad_typed_contents_are_refused(request_: pb.ModelInferRequest, datatype: str) -> None:
    with pytest.raises(InvalidInput):
        decode_inputs(request_, _single_input_spec(datatype, (-1, 2), 4))


def test_raw_bool_bytes_must_be_zero_or_one() -> None:
    request = pb.ModelInferRequest(raw_input_contents=[b"\x01\x02"])
    request.inputs.add(name="x", datatype="BOOL", shape=[1, 2])
    with pytest.raises(InvalidInput):
        decode_inputs(request, _single_input_spec("BOOL", (-1, 2), 4))


def test_request_limits_count_elements_over_inputs_and_what_bytes_elements_cost() -> None:
    request = pb.ModelInferRequest()
    _add_raw(request, "images", "FP32", np.zeros((4, 1, 4, 4), np.float32))  # 64 elements, 256 bytes
    _add_raw(request, "class", "INT64", np.zeros((4, 1), np.int64))  # 4 elements, 32 bytes
    assert decode_inputs(request, MODEL, RequestLimits(max_elements=68, max_tensor_bytes=288)).batch_size == 4
    for limits in (RequestLimits(max_elements=67), RequestLimits(max_tensor_bytes=287)):
        with pytest.raises(InvalidInput, match="split it"):
            decode_inputs(request, MODEL, limits)

    spec = _single_input_spec("BYTES", (-1,), 0)
    for fill in (_add_raw, _add_typed):  # 1,000 empty strings: 4 KB raw, ~2 KB typed, ~64 KB to hold
        empty = pb.ModelInferRequest()
        fill(empty, "x", "BYTES", np.array([b""] * 1000, dtype=object))
        with pytest.raises(InvalidInput):
            decode_inputs(empty, spec, RequestLimits(max_tensor_bytes=1000 * BYTES_ELEMENT_COST - 1))
        assert len(decode_inputs(empty, spec, RequestLimits(max_tensor_bytes=1100 * BYTES_ELEMENT_COST)).inputs["x"])


# --- datatype table ---------------------------------------------------------------------------------------------


def test_datatype_table() -> None:
    names = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32"]
    assert sorted(DATATYPES) == sorted([*names, "FP64", "BYTES"])
    assert triton_data_type("FP32") == pb.TYPE_FP32 and triton_data_type("BYTES") == pb.TYPE_STRING
    assert datatype_from_ort("tensor(float)") == "FP32" and datatype_from_ort("tensor(string)") == "BYTES"
    assert datatype_from_ort("tensor(float16)") == "FP16" and datatype_from_ort("tensor(bool)") == "BOOL"
    for info in DATATYPES.values():
        assert info.numpy.byteorder in "<|="
        assert pb.DataType.Name(info.triton) == ("TYPE_STRING" if info.name == "BYTES" else f"TYPE_{info.name}")
    with pytest.raises(ValueError, match="FP32"):
        triton_data_type("FLOAT")
    with pytest.raises(ValueError):
        datatype_from_ort("tensor(bfloat16)")
