"""The client core with no server: plans driven here as a shell would, their calls answered with protobuf replies
built by the test, the results checked; and the tensors' round trip through the wire form."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.client.core import tensors
from cnnserve.client.core.operations import Operations
from cnnserve.client.core.server import Health, ModelEntry
from cnnserve.client.core.steps import Call, Plan, Work
from cnnserve.contracts import features, generation, layout, segmentation, style, wire

Answer = Callable[[Call], Any]


def drive(plan: Plan[Any], answer: Answer) -> tuple[Any, list[Call | tuple[Call, ...]]]:
    """Run a plan as the blocking shell does, `answer` playing the server; the result and the calls, as yielded."""
    asked: list[Call | tuple[Call, ...]] = []
    result: Any = None
    while True:
        try:
            step = plan.send(result)
        except StopIteration as done:
            return done.value, asked
        if isinstance(step, Work):
            result = step.run()
        else:
            asked.append(step)
            result = answer(step) if isinstance(step, Call) else tuple(answer(call) for call in step)


def methods(asked: list[Call | tuple[Call, ...]]) -> list[str | tuple[str, ...]]:
    return [step.method if isinstance(step, Call) else tuple(call.method for call in step) for step in asked]


def config_reply(parameters: dict[str, Any]) -> pb.ModelConfigResponse:
    reply = pb.ModelConfigResponse()
    for key, value in parameters.items():
        reply.config.parameters[key].string_value = value if isinstance(value, str) else json.dumps(value)
    return reply


def metadata_reply(inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]]) -> Any:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        inputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in inputs],
        outputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in outputs],
    )


def infer_reply(**outputs: np.ndarray) -> pb.ModelInferResponse:
    """Arrays as the server writes them: raw contents, object arrays of bytes as BYTES."""
    reply = pb.ModelInferResponse()
    for name, array in outputs.items():
        is_bytes = array.dtype == object
        datatype = "BYTES" if is_bytes else tensors.DATATYPES[array.dtype]
        reply.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        reply.raw_output_contents.append(wire.pack_bytes(array.flat) if is_bytes else array.tobytes())
    return reply


def byte_array(*items: bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def request_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """A request's inputs read back as the server would."""
    echo = pb.ModelInferResponse(outputs=[pb.ModelInferResponse.InferOutputTensor(
        name=i.name, datatype=i.datatype, shape=i.shape) for i in request.inputs])  # fmt: skip
    echo.raw_output_contents.extend(request.raw_input_contents)
    return tensors.infer_outputs(echo)


# -- classification ----------------------------------------------------------------------------------------------

CLASSIFIER_CONFIG = config_reply({layout.PREPROCESSING_PARAMETER: {"input": "images", "input_format": "image"}})
CLASSIFIER_METADATA = metadata_reply([("images", "FP32", [-1, 1, 4, 4])], [("logits", "FP32", [-1, 3])])


def classifier(logits: np.ndarray, labels: list[str]) -> Answer:
    def answer(call: Call) -> Any:
        if call.method == "ModelConfig":
            return CLASSIFIER_CONFIG
        if call.method == "ModelMetadata":
            return CLASSIFIER_METADATA
        request: pb.ModelInferRequest = call.request  # type: ignore[assignment]
        if request.outputs and wire.CLASSIFICATION_PARAMETER in request.outputs[0].parameters:
            count = request.outputs[0].parameters[wire.CLASSIFICATION_PARAMETER].int64_param
            return infer_reply(logits=byte_array(*(wire.format_class(0.1, i, labels) for i in range(count))))
        sent = request_inputs(request)["images"]
        assert sent.dtype == object  # the model takes files: they travel as they are
        return infer_reply(logits=logits[: len(sent)])

    return answer


def test_classify_ranks_by_probability_and_asks_config_and_labels_once() -> None:
    logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]], np.float32)
    operations = Operations()
    answer = classifier(logits, ["zero", "one"])  # class 2 has no label: it keeps its index
    ranked, asked = drive(operations.classify("m", [b"file-0", b"file-1"], top_k=2), answer)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert [[label for label, _ in row] for row in ranked] == [["one", "2"], ["zero", "one"]]
    np.testing.assert_allclose([p for _, p in ranked[0]], probabilities[0, [1, 2]], rtol=1e-6)
    assert methods(asked) == ["ModelConfig", "ModelMetadata", "ModelInfer", "ModelInfer"]
    assert [call.shared for call in asked if isinstance(call, Call)] == [True, False, False, True]
    _, again = drive(operations.classify("m", [b"file-0"], top_k=1), answer)
    assert methods(again) == ["ModelMetadata", "ModelInfer"]  # config and labels came from the cache


def test_a_failed_call_fills_no_cache() -> None:
    operations = Operations()

    def unavailable(call: Call) -> Any:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        drive(operations.config("m"), unavailable)
    config, asked = drive(operations.config("m"), classifier(np.zeros((1, 3), np.float32), []))
    assert methods(asked) == ["ModelConfig"] and config == CLASSIFIER_CONFIG.config


# -- generation --------------------------------------------------------------------------------------------------


def test_generate_draws_latents_from_the_seed_cycles_classes_and_scales_to_uint8() -> None:
    config = config_reply({generation.NUM_CLASSES_PARAMETER: "3", layout.POSTPROCESSING_PARAMETER: {"range": [0, 1]}})
    metadata = metadata_reply([("latent", "FP32", [-1, 2]), ("class", "INT64", [-1])], [("images", "FP32", [-1])])
    produced = np.linspace(0, 1, 4 * 4, dtype=np.float32).reshape(4, 1, 2, 2)
    sent: list[pb.ModelInferRequest] = []

    def answer(call: Call) -> Any:
        if call.method != "ModelInfer":
            return config if call.method == "ModelConfig" else metadata
        sent.append(call.request)  # type: ignore[arg-type]
        if wire.OUTPUT_FORMAT_PARAMETER in call.request.parameters:  # type: ignore[attr-defined]
            return infer_reply(images=byte_array(*(png(np.full((2, 2), i, np.uint8)) for i in range(4))))
        return infer_reply(images=produced)

    operations = Operations()
    pixels, _ = drive(operations.generate("g", 4, seed=5, truncation=0.5), answer)
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 2, 2, 1)
    np.testing.assert_array_equal(pixels[..., 0], np.round(produced[:, 0] * 255).astype(np.uint8))
    inputs = request_inputs(sent[0])
    np.testing.assert_array_equal(inputs["class"], [0, 1, 2, 0])
    np.testing.assert_array_equal(inputs["latent"], np.random.default_rng(5).standard_normal((4, 2)).astype(np.float32))
    assert sent[0].parameters[generation.TRUNCATION_PARAMETER].double_param == 0.5
    files, _ = drive(operations.generate_png("g", 4, label=1), answer)
    assert [np.asarray(Image.open(io.BytesIO(file)))[0, 0] for file in files] == [0, 1, 2, 3]
    assert sent[1].parameters[wire.OUTPUT_FORMAT_PARAMETER].string_param == wire.PNG
    np.testing.assert_array_equal(request_inputs(sent[1])["class"], [1, 1, 1, 1])


# -- one request per image: segment, explain, stylize ---------------------------------------------------------

FILES_CONFIG = {layout.PREPROCESSING_PARAMETER: {"input": "images", "input_format": "image"}}
FILES_METADATA = metadata_reply([("images", "FP32", [-1, 1, -1, -1])], [("logits", "FP32", [-1, 3])])


def test_segment_sends_the_images_together_and_reads_detections_best_first() -> None:
    config = config_reply({**FILES_CONFIG, segmentation.LABELS_PARAMETER: ["background", "a", "b"]})
    boxes = np.array([[[0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 0, 0]]], np.float32)
    scores = np.array([[0.5, 0.9, 0.0]], np.float32)  # the last row is padding
    classes = np.array([[1, 2, 0]], np.int64)
    mask = np.arange(4, dtype=np.uint8).reshape(1, 2, 2)
    asked_outputs: list[list[str]] = []

    def answer(call: Call) -> Any:
        if call.method != "ModelInfer":
            return config if call.method == "ModelConfig" else FILES_METADATA
        asked_outputs.append([o.name for o in call.request.outputs])  # type: ignore[attr-defined]
        return infer_reply(boxes=boxes, scores=scores, classes=classes, mask=mask)

    found, asked = drive(Operations().segment("s", [b"one", b"two"], min_score=0.6), answer)
    assert methods(asked) == ["ModelConfig", "ModelMetadata", ("ModelInfer", "ModelInfer")]
    assert [[(d.label, d.class_index, d.box) for d in result.detections] for result in found] == [
        [("b", 2, (1.0, 1.0, 3.0, 3.0))]
    ] * 2
    assert found[0].labels == ("background", "a", "b") and np.array_equal(found[0].mask, mask[0])
    assert asked_outputs[0] == [segmentation.BOXES, segmentation.SCORES, segmentation.CLASSES, segmentation.MASK]
    drive(Operations().segment("s", [b"one"], with_mask=False), answer)
    assert segmentation.MASK not in asked_outputs[-1]


def test_explain_pairs_each_images_heatmap_with_its_picture() -> None:
    config = config_reply(FILES_CONFIG)
    heat = {b"one": np.full((1, 2, 2), 0.25, np.float32), b"two": np.full((1, 2, 2), 0.75, np.float32)}

    def answer(call: Call) -> Any:
        if call.method != "ModelInfer":
            return config if call.method == "ModelConfig" else FILES_METADATA
        request: pb.ModelInferRequest = call.request  # type: ignore[assignment]
        if wire.CLASSIFICATION_PARAMETER in request.outputs[0].parameters:  # the label probe
            return infer_reply(logits=byte_array(*(wire.format_class(0.1, i, ["x", "y", "z"]) for i in range(3))))
        (file,) = request_inputs(request)["images"]
        assert request.parameters[features.EXPLAIN_PARAMETER].string_param == features.EXPLAIN_METHODS[0]
        assert request.parameters[features.PATCH_PARAMETER].int64_param == 2
        if request.parameters[wire.OUTPUT_FORMAT_PARAMETER].string_param == wire.PNG:
            return infer_reply(explanation=byte_array(b"picture of " + file))
        return infer_reply(explanation=heat[file], explained_class=np.array([2], np.int64))

    found, asked = drive(Operations().explain("c", [b"one", b"two"], patch=2, with_png=True), answer)
    assert methods(asked)[-1] == ("ModelInfer",) * 4  # numbers and picture of each image, all at once
    assert [(e.label, e.class_index, float(e.heatmap.mean()), e.png) for e in found] == [
        ("z", 2, 0.25, b"picture of one"),
        ("z", 2, 0.75, b"picture of two"),
    ]


def test_stylize_refuses_another_kind_of_model_before_any_inference_and_decodes_pngs() -> None:
    classifier_config = config_reply({**FILES_CONFIG, layout.TASK_PARAMETER: "classification"})
    with pytest.raises(ValueError, match="not a style model"):
        drive(Operations().stylize("c", [b"photo"]), lambda call: classifier_config)
    config = config_reply(
        {layout.TASK_PARAMETER: style.TASK, layout.PREPROCESSING_PARAMETER: style.preprocessing(stride=4),
         layout.POSTPROCESSING_PARAMETER: style.postprocessing()}
    )  # fmt: skip
    styled = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)

    def answer(call: Call) -> Any:
        if call.method != "ModelInfer":
            return config if call.method == "ModelConfig" else FILES_METADATA
        assert [o.name for o in call.request.outputs] == [style.OUTPUT]  # type: ignore[attr-defined]
        return infer_reply(**{style.OUTPUT: byte_array(png(styled))})

    pixels, asked = drive(Operations().stylize("s", [b"a", b"b"]), answer)
    assert methods(asked)[-1] == ("ModelInfer", "ModelInfer")
    assert len(pixels) == 2 and all(np.array_equal(p, styled) for p in pixels)


# -- server ------------------------------------------------------------------------------------------------------


def test_health_asks_both_at_once_and_the_health_service_apart() -> None:
    replies = {
        "ServerLive": pb.ServerLiveResponse(live=True),
        "ServerReady": pb.ServerReadyResponse(ready=False),
        "RepositoryIndex": pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(name="m", version="1", state="READY")]
        ),
        "Check": health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING),
    }
    operations = Operations()
    health, asked = drive(operations.health(), lambda call: replies[call.method])
    assert health == Health(live=True, ready=False) and methods(asked) == [("ServerLive", "ServerReady")]
    serving, asked = drive(operations.health_check("m"), lambda call: replies[call.method])
    assert serving and asked == [Call("Check", health_pb2.HealthCheckRequest(service="m"), service="health")]
    entries, _ = drive(operations.models(), lambda call: replies[call.method])
    assert entries == [ModelEntry("m", "1", "READY", "")]


# -- tensors -----------------------------------------------------------------------------------------------------


@given(
    numbers=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=12),
    items=st.lists(st.binary(max_size=20), min_size=1, max_size=6),
)
def test_arrays_round_trip_through_the_wire_form(numbers: list[float], items: list[bytes]) -> None:
    arrays = {"numbers": np.array(numbers, np.float32).reshape(1, -1), "items": byte_array(*items)}
    back = request_inputs(tensors.infer_request("m", arrays))
    np.testing.assert_array_equal(back["numbers"], arrays["numbers"])
    assert back["numbers"].dtype == np.float32 and list(back["items"]) == items


def test_infer_refuses_a_dtype_the_protocol_lacks() -> None:
    with pytest.raises(ValueError, match="complex128"):
        drive(Operations().infer("m", {"x": np.zeros(2, np.complex128)}), lambda call: None)
