"""The API contract: committed stubs match proto/, field numbers are Triton's, and tritonclient's messages
cross the wire to ours and back unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton

from cnnserve.api import grpc_service_pb2 as pb
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_proto(tmp_path: Path) -> None:
    generator = load_script("gen_protos")
    written = generator.generate(tmp_path)
    assert sorted(path.name for path in written) == sorted(generator.GENERATED)
    for path in written:
        committed = ROOT / generator.PACKAGE / path.name
        assert committed.exists(), f"{committed.relative_to(ROOT)} is missing: run `make protos`"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.relative_to(ROOT)} drifted from proto/grpc_service.proto: run `make protos`"
        )


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        (pb.ModelInferRequest, "raw_input_contents", 7),
        (pb.ModelInferRequest, "outputs", 6),
        (pb.ModelInferResponse, "raw_output_contents", 6),
        (pb.ModelInferRequest.InferInputTensor, "contents", 5),
        (pb.InferParameter, "uint64_param", 5),
        (pb.ModelConfig, "max_batch_size", 4),
        (pb.ModelConfig, "instance_group", 7),
        (pb.ModelConfig, "dynamic_batching", 11),
        (pb.ModelConfig, "parameters", 14),
        (pb.ModelConfig, "backend", 17),
        (pb.ModelOutput, "label_filename", 4),
        (pb.ModelInstanceGroup, "kind", 4),
        (pb.ModelStatistics, "memory_usage", 8),
    ],
)
def test_field_numbers(message: Any, field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number


def test_service_and_scheduling_oneof() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    stream = service.methods_by_name["ModelStreamInfer"]
    assert stream.client_streaming and stream.server_streaming
    oneof = pb.ModelConfig.DESCRIPTOR.fields_by_name["dynamic_batching"].containing_oneof
    assert oneof is not None and oneof.name == "scheduling_choice"
    assert pb.DataType.Value("TYPE_STRING") == 13 and pb.DataType.Value("TYPE_BF16") == 14


def _triton_descriptor(full_name: str) -> Descriptor:
    return triton.DESCRIPTOR.pool.FindMessageTypeByName(full_name)  # type: ignore[no-any-return]


def _walk(descriptor: Descriptor) -> list[Descriptor]:
    return [descriptor, *(m for nested in descriptor.nested_types for m in _walk(nested))]


def test_every_field_agrees_with_tritonclient() -> None:
    """Each of our fields exists in tritonclient's message of the same name with the same number, type and
    cardinality; enums agree value by value. (Ours may omit fields; none may differ.)"""
    ours = [m for top in pb.DESCRIPTOR.message_types_by_name.values() for m in _walk(top)]
    for message in ours:
        theirs = _triton_descriptor(message.full_name)
        for field in message.fields:
            other = theirs.fields_by_name.get(field.name)
            where = f"{message.full_name}.{field.name}"
            assert other is not None, f"{where}: not in Triton's protocol"
            assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), where
            if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_ENUM):
                ours_type = field.message_type or field.enum_type
                their_type = other.message_type or other.enum_type
                assert ours_type is not None and their_type is not None, where
                assert ours_type.full_name == their_type.full_name, where
            assert (field.containing_oneof is None) == (other.containing_oneof is None), where
        for enum in message.enum_types:
            assert {v.name: v.number for v in enum.values} == {
                v.name: v.number for v in theirs.enum_types_by_name[enum.name].values
            }
    data_types = pb.DESCRIPTOR.enum_types_by_name["DataType"]
    assert {v.name: v.number for v in data_types.values} == dict(triton_config.DataType.items())
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    their_service = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        other = their_service.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            other.input_type.full_name,
            other.output_type.full_name,
        )
        assert (method.client_streaming, method.server_streaming) == (other.client_streaming, other.server_streaming)


# Builders take the module so one recipe fills our message and tritonclient's: the same names must exist in both.


def _infer_request(module: Any) -> Message:
    request = module.ModelInferRequest(model_name="digits_cnn", model_version="2", id="req-7")
    request.parameters["priority"].uint64_param = 3
    request.parameters["timeout"].int64_param = 1000
    request.parameters["note"].string_param = "é"
    request.parameters["scale"].double_param = 0.5
    request.parameters["flag"].bool_param = True
    images = request.inputs.add(name="images", datatype="FP32", shape=[2, 1, 8, 8])
    images.parameters["binary_data_size"].int64_param = 512
    typed = request.inputs.add(name="class", datatype="INT64", shape=[2, 1])
    typed.contents.int64_contents.extend([3, -9])
    typed.contents.bytes_contents.append(b"\x00\xff")
    output = request.outputs.add(name="logits")
    output.parameters["classification"].int64_param = 3
    request.raw_input_contents.extend([b"\x01\x02\x03\x04" * 128])
    return request  # type: ignore[no-any-return]


def _config_response(module: Any) -> Message:
    response = module.ModelConfigResponse()
    config = response.config
    config.name, config.platform, config.backend, config.runtime = "digits_cnn", "onnxruntime_onnx", "onnxruntime", "x"
    config.max_batch_size = 32
    config.version_policy.specific.versions.extend([1, 3])
    image = config.input.add(name="images", data_type=pb.TYPE_FP32, format=pb.ModelInput.FORMAT_NCHW, dims=[1, 8, 8])
    image.reshape.shape.extend([64])
    image.allow_ragged_batch, image.optional, image.is_shape_tensor = True, True, False
    config.output.add(name="logits", data_type=pb.TYPE_FP32, dims=[10], label_filename="labels.txt")
    group = config.instance_group.add(name="cpu", kind=pb.ModelInstanceGroup.KIND_CPU, count=2, gpus=[0, 1])
    group.rate_limiter.resources.add(name="r", count=1)
    group.host_policy = "numa0"
    batching = config.dynamic_batching
    batching.preferred_batch_size.extend([8, 16])
    batching.max_queue_delay_microseconds = 500
    batching.preserve_ordering = True
    batching.priority_levels, batching.default_priority_level = 2, 1
    batching.default_queue_policy.max_queue_size = 1024
    batching.default_queue_policy.timeout_action = pb.ModelQueuePolicy.DELAY
    batching.priority_queue_policy[1].default_timeout_microseconds = 7
    config.default_model_filename = "model.onnx"
    config.parameters["execution_provider"].string_value = "cpu"
    config.metric_tags["team"] = "ml"
    config.model_transaction_policy.decoupled = False
    config.response_cache.enable = True
    return response  # type: ignore[no-any-return]


def _statistics_response(module: Any) -> Message:
    response = module.ModelStatisticsResponse()
    stats = response.model_stats.add(name="digits_cnn", version="2", last_inference=1_700_000_000_000)
    stats.inference_count, stats.execution_count = 96, 5
    for index, name in enumerate(("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")):
        duration = getattr(stats.inference_stats, name)
        duration.count, duration.ns = index + 1, (index + 1) * 1_000_003
    stats.inference_stats.cache_miss.count = 4
    batch = stats.batch_stats.add(batch_size=16)
    batch.compute_infer.count, batch.compute_infer.ns = 3, 2**40
    stats.memory_usage.add(type="GPU", id=0, byte_size=2**33)
    stats.response_stats["0"].success.ns = 9
    return response  # type: ignore[no-any-return]


@pytest.mark.parametrize("build", [_infer_request, _config_response, _statistics_response])
def test_wire_compatible_with_tritonclient(build: Any) -> None:
    ours, theirs = build(pb), build(triton)
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    # Both directions: each side parses the other's bytes to a message equal to its own, with nothing left unknown.
    from_theirs = type(ours).FromString(theirs.SerializeToString())
    from_ours = type(theirs).FromString(ours.SerializeToString())
    assert from_theirs == ours
    assert from_ours == theirs
    assert from_theirs.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
