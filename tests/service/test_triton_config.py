"""Triton's ModelConfig in a model folder (config.pbtxt) and in a load request (its JSON form), translated into
config.json and served: answers compared with ONNX Runtime in this process, batching shown by statistics, ModelConfig
showing what was loaded, and the fields cnnserve cannot honour refused with the key (and line) named."""

from __future__ import annotations

import functools
import json
import logging
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from cnnserve.service.errors import ModelLoadError
from cnnserve.service.registry.completion import resolve
from cnnserve.service.registry.model_config import read_config
from cnnserve.service.registry.triton_config import read_json, read_text
from cnnserve.service.types import TensorSpec
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

# Triton's own example (server docs/examples/model_repository/densenet_onnx/config.pbtxt), word for word.
DENSENET_PBTXT = """\
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 0
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
    reshape { shape: [ 1, 3, 224, 224 ] }
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    reshape { shape: [ 1, 1000, 1, 1 ] }
    label_filename: "densenet_labels.txt"
  }
]
"""

# A batching model in Triton's words: the slow classifier's graph (tests/onnx_models.py), images [N,1,4,4] -> [N,10].
BATCHING_PBTXT = """\
# comments, as Triton's examples have them
name: "batching"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "images", data_type: TYPE_FP32, dims: [ 1, 4, 4 ] } ]
output [ { name: "logits", data_type: TYPE_FP32, dims: [ 10 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 2000
  default_queue_policy { max_queue_size: 64 }
}
instance_group [ { count: 1, kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
optimization { graph: { level: 1 } }
"""

TRITON_JSON: dict[str, Any] = {
    "name": "classifier",
    "platform": "onnxruntime_onnx",
    "max_batch_size": 4,
    "input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [1, 4, 4]}],
    "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["10"]}],  # int64 as protobuf's JSON writes it
    "dynamic_batching": {"max_queue_delay_microseconds": 100, "preferred_batch_size": [2]},
    "instance_group": [{"kind": "KIND_CPU", "count": 2}],
    "parameters": {"source": {"string_value": "triton json"}},
    "model_warmup": [
        {
            "name": "zeros",
            "batch_size": 2,
            "inputs": {"images": {"data_type": "TYPE_FP32", "dims": [1, 4, 4], "zero_data": True}},
        }
    ],
}


def write_densenet(repo: Path, name: str = "densenet_onnx", pbtxt: str = DENSENET_PBTXT) -> Path:
    """data_0 [1,3,224,224] -> fc6_1 [1,1000,1,1] (the shapes of Triton's densenet_onnx): a global average pool, then
    a 1x1 convolution to 1000 channels."""
    rng = np.random.default_rng(7)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["data_0"], ["pooled"]),  # [1,3,1,1]
            helper.make_node("Conv", ["pooled", "w", "b"], ["fc6_1"]),  # [1,1000,1,1]
        ],
        name,
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("fc6_1", TensorProto.FLOAT, [1, 1000, 1, 1])],
        [
            numpy_helper.from_array(rng.standard_normal((1000, 3, 1, 1)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(1000).astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_models.OPSET)])
    model.ir_version = 8
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "densenet_labels.txt").write_text("".join(f"class-{i}\n" for i in range(1000)))
    (folder / "config.pbtxt").write_text(pbtxt)
    return folder


def write_batching(repo: Path, name: str = "batching", pbtxt: str = BATCHING_PBTXT) -> Path:
    folder = onnx_models.write_slow_classifier(repo, name)
    (folder / "config.json").unlink()
    (folder / "config.pbtxt").write_text(pbtxt.replace('"batching"', f'"{name}"'))
    return folder


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_densenet(root)
    write_batching(root)
    onnx_models.write_classifier(root)  # config.json: max_batch_size 32; load requests bring Triton's JSON
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    settings = loopback_settings(
        repo, model_control_mode="explicit", startup_models=("densenet_onnx", "batching", "classifier")
    )
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[triton_grpc.InferenceServerClient]:
    with triton_grpc.InferenceServerClient(server.grpc_address) as c:
        yield c
        c.load_model("classifier")  # back to the folder's config.json for the next test


def refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


# -- config.pbtxt in a model folder ------------------------------------------------------------------------------------


def test_tritons_densenet_folder_serves_as_onnx_runtime_answers(
    repo: Path, client: triton_grpc.InferenceServerClient
) -> None:
    config = client.get_model_config("densenet_onnx").config
    assert (config.platform, config.max_batch_size) == ("onnxruntime_onnx", 0)
    (data,) = config.input
    assert (data.name, list(data.dims), list(data.reshape.shape)) == ("data_0", [3, 224, 224], [1, 3, 224, 224])
    assert data.format == triton_grpc.model_config_pb2.ModelInput.FORMAT_NCHW  # image_client.py reads the layout here
    (fc,) = config.output
    assert (list(fc.dims), list(fc.reshape.shape), fc.label_filename) == (
        [1000],
        [1, 1000, 1, 1],
        "densenet_labels.txt",
    )
    metadata = client.get_model_metadata("densenet_onnx")
    assert [list(t.shape) for t in (*metadata.inputs, *metadata.outputs)] == [[3, 224, 224], [1000]]

    pixels = np.random.default_rng(1).random((3, 224, 224), dtype=np.float32)
    inp = triton_grpc.InferInput("data_0", [3, 224, 224], "FP32")
    inp.set_data_from_numpy(pixels)
    answer = client.infer("densenet_onnx", [inp])
    session = ort.InferenceSession(str(repo / "densenet_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"data_0": pixels.reshape(1, 3, 224, 224)})
    np.testing.assert_allclose(answer.as_numpy("fc6_1"), expected.reshape(1000), rtol=1e-5, atol=1e-5)

    # label_filename is the labels file: classification names the classes, as Triton's image_client.py asks
    top = triton_grpc.InferRequestedOutput("fc6_1", class_count=3)
    (best, *_) = client.infer("densenet_onnx", [inp], outputs=[top]).as_numpy("fc6_1")
    index = int(np.argmax(expected))
    assert best.decode().split(":")[1:] == [str(index), f"class-{index}"]


def test_a_batching_pbtxt_batches_concurrent_requests(client: triton_grpc.InferenceServerClient) -> None:
    config = client.get_model_config("batching").config
    assert config.max_batch_size == 8 and list(config.input[0].dims) == [1, 4, 4]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.instance_group[0].count == 1
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    assert client.get_model_metadata("batching").inputs[0].shape == [-1, 1, 4, 4]

    before = client.get_inference_statistics("batching").model_stats[0]
    images = np.random.default_rng(2).standard_normal((8, 1, 1, 4, 4)).astype(np.float32)
    answers: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    for i, image in enumerate(images):
        inp = triton_grpc.InferInput("images", [1, 1, 4, 4], "FP32")
        inp.set_data_from_numpy(image)
        client.async_infer(
            "batching", [inp], functools.partial(lambda i, result, error: answers.put((i, result, error)), i)
        )
    for _ in images:
        i, result, error = answers.get(timeout=60)
        assert error is None, error
        expected = onnx_models.classifier_reference(images[i])
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    after = client.get_inference_statistics("batching").model_stats[0]
    assert after.inference_count - before.inference_count == len(images)
    assert after.execution_count - before.execution_count < len(images)
    assert 1 < max(b.batch_size for b in after.batch_stats) <= 8


def test_config_json_wins_over_config_pbtxt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_batching(tmp_path, "both")
    (folder / "config.json").write_text(json.dumps({"max_batch_size": 2}))
    with caplog.at_level(logging.WARNING):
        config = read_config(folder)
    assert config.max_batch_size == 2 and config.path.name == "config.json"
    assert "event=config_pbtxt_ignored" in caplog.text


@pytest.mark.parametrize(
    ("change", "names"),
    [
        pytest.param(
            ("", "sequence_batching {\n  max_sequence_idle_microseconds: 5000\n}\n"),
            "sequence_batching' (line 22)",
            id="sequence-batching",
        ),
        pytest.param(
            ('platform: "onnxruntime_onnx"', 'platform: "ensemble"'), "'platform' is 'ensemble'", id="ensemble-platform"
        ),
        pytest.param(
            ("dims: [ 3, 224, 224 ]", "dims: [ 3, 225, 224 ]"), "'data_0' dims [3,225,224]", id="dims-contradict"
        ),
        pytest.param(
            ("reshape { shape: [ 1, 3, 224, 224 ] }", ""), "'data_0' dims [3,224,224] contradict", id="reshape-missing"
        ),
        pytest.param(("dims: [ 1000 ]", "dims: [ 1000 "), "line 18, column 5", id="syntax-error"),
        pytest.param(("max_batch_size : 0", "max_batch_size : 0\nmax_batch_sise: 4"), "line 4", id="unknown-field"),
        pytest.param(('"densenet_labels.txt"', '"missing.txt"'), "'output[0].label_filename'", id="no-labels"),
        pytest.param(
            ("TYPE_FP32\n    format", "TYPE_INT64\n    format"), "INT64 contradicts", id="datatype-contradicts"
        ),
    ],
)
def test_a_pbtxt_cnnserve_cannot_honour_is_refused_naming_the_key(
    tmp_path: Path, start_server: Any, change: tuple[str, str], names: str
) -> None:
    old, new = change
    text = DENSENET_PBTXT.replace(old, new, 1) if old else DENSENET_PBTXT + new
    assert text != DENSENET_PBTXT
    write_densenet(tmp_path, "bad", text.replace('"densenet_onnx"', '"bad"'))
    server = start_server(tmp_path, model_control_mode="explicit")
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        error = refused(lambda: client.load_model("bad"))
        assert error.status() == "StatusCode.INVALID_ARGUMENT"
        assert names in str(error.message()), error.message()
        assert str(tmp_path) not in str(error.message())  # relative to the repository: no server path
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["bad"].state == "UNAVAILABLE" and str(tmp_path) not in index["bad"].reason


def test_pbtxt_only_folders_are_listed_and_load_at_start(repo: Path, tmp_path: Path, start_server: Any) -> None:
    write_densenet(tmp_path)
    server = start_server(tmp_path)  # control mode none: every model folder loads
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        assert client.is_model_ready("densenet_onnx")
        assert client.get_model_config("densenet_onnx").config.input[0].reshape.shape == [1, 3, 224, 224]


# -- Triton's JSON in a load request -----------------------------------------------------------------------------------


def test_grpc_load_with_tritons_json_serves_it(client: triton_grpc.InferenceServerClient) -> None:
    client.load_model("classifier", config=json.dumps(TRITON_JSON))
    config = client.get_model_config("classifier").config
    assert config.max_batch_size == 4
    assert list(config.input[0].dims) == [1, 4, 4] and list(config.output[0].dims) == [10]
    assert list(config.dynamic_batching.preferred_batch_size) == [2]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    group = config.instance_group[0]
    assert (group.count, triton_grpc.model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)) == (2, "KIND_CPU")
    assert config.parameters["source"].string_value == "triton json"
    (warmup,) = config.model_warmup
    assert (warmup.name, warmup.batch_size, list(warmup.inputs["images"].dims)) == ("zeros", 2, [1, 4, 4])
    assert warmup.inputs["images"].zero_data
    images = np.random.default_rng(3).standard_normal((4, 1, 4, 4)).astype(np.float32)
    inp = triton_grpc.InferInput("images", list(images.shape), "FP32")
    inp.set_data_from_numpy(images)
    logits = client.infer("classifier", [inp]).as_numpy("logits")
    np.testing.assert_allclose(logits, onnx_models.classifier_reference(images), rtol=1e-5, atol=1e-5)
    too_many = triton_grpc.InferInput("images", [5, 1, 4, 4], "FP32")
    too_many.set_data_from_numpy(np.zeros((5, 1, 4, 4), np.float32))
    assert refused(lambda: client.infer("classifier", [too_many])).status() == "StatusCode.INVALID_ARGUMENT"


def test_http_load_with_tritons_json_and_a_config_read_back_loads_as_it_was(
    server: ServerThread, client: triton_grpc.InferenceServerClient
) -> None:
    with triton_http.InferenceServerClient(server.rest_address) as http:
        http.load_model("classifier", config=json.dumps({**TRITON_JSON, "max_batch_size": 2}))
        shown = http.get_model_config("classifier")
        assert shown["max_batch_size"] == 2 and shown["input"][0]["dims"] == [1, 4, 4]
        assert shown["instance_group"][0]["count"] == 2
        # What /config answers is Triton's ModelConfig: sent back, it loads the same model.
        http.load_model("classifier", config=json.dumps(shown))
        again = http.get_model_config("classifier")
        for key in ("max_batch_size", "input", "output", "dynamic_batching", "instance_group", "model_warmup"):
            assert again[key] == shown[key], key
        assert http.is_model_ready("classifier")


@pytest.mark.parametrize(
    ("change", "names"),
    [
        pytest.param(
            {"sequence_batching": {"max_sequence_idle_microseconds": 5}}, "'sequence_batching'", id="sequence"
        ),
        pytest.param({"platform": "ensemble"}, "'platform' is 'ensemble'", id="ensemble"),
        pytest.param({"backend": "python"}, "'backend' is 'python'", id="python-backend"),
        pytest.param({"ensembleScheduling": {"step": []}}, "'ensemble_scheduling'", id="camel-case"),
        pytest.param({"inputs": []}, "('input') with config.json ('inputs')", id="mixed-forms"),
        pytest.param(
            {"input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [3, 4, 4]}]}, "'images'", id="dims"
        ),
        pytest.param({"input": [{"name": "images", "data_type": "TYPE_FP32"}]}, "'input[0]'", id="no-dims"),
        pytest.param(
            {"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [16]}},
            "preferred_batch_size",
            id="preferred",
        ),
        pytest.param({"input": [{"name": "images", "dimz": [1]}]}, "dimz", id="unknown-field"),
        pytest.param({"model_transaction_policy": {"decoupled": True}}, "decoupled", id="decoupled"),
    ],
)
def test_a_triton_json_cnnserve_cannot_honour_is_refused_and_the_model_keeps_serving(
    client: triton_grpc.InferenceServerClient, change: dict[str, Any], names: str
) -> None:
    error = refused(lambda: client.load_model("classifier", config=json.dumps({**TRITON_JSON, **change})))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert names in str(error.message()), error.message()
    assert client.get_model_config("classifier").config.max_batch_size == 32  # still the folder's


# -- the translation itself --------------------------------------------------------------------------------------------


def test_fields_that_only_tune_are_noted_and_the_rest_translated(tmp_path: Path) -> None:
    translated = read_text(BATCHING_PBTXT, tmp_path / "config.pbtxt", tmp_path)
    assert translated.document == {
        "name": "batching",
        "max_batch_size": 8,
        "inputs": [{"name": "images", "datatype": "FP32", "dims": [1, 4, 4]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "dims": [10]}],
        "dynamic_batching": {"max_queue_delay_us": 2000, "preferred_batch_sizes": [4, 8], "max_queue_size": 64},
        "instance_count": 1,
        "execution_providers": ["cpu"],
        "parameters": {"intra_op_thread_count": "1"},
        "session": {"intra_op_threads": 1},
    }
    assert [note.split(":")[0] for note in translated.notes] == ["optimization"]
    empty = read_text(BATCHING_PBTXT + "batch_input [ ]\nmodel_operations { }\n", tmp_path / "config.pbtxt", tmp_path)
    assert empty.document == translated.document


def test_a_pbtxt_without_inputs_and_max_batch_size_0_leaves_batching_to_the_graph(tmp_path: Path) -> None:
    """As Triton's ONNX Runtime backend: the config names only the output, so max_batch_size 0 means "not said" and
    the graph's symbolic first axis makes it 4; the output's dims are per item."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.pbtxt").write_text('output [ { name: "logits", data_type: TYPE_FP32, dims: [ 10 ] } ]')
    config = read_config(folder)
    images, logits = TensorSpec("images", "FP32", (-1, 1, 4, 4)), TensorSpec("logits", "FP32", (-1, 10))
    spec = resolve(config, [images], [logits], version=1)
    assert spec.max_batch_size == 4 and spec.outputs[0].shape == (-1, 10)
    assert spec.dynamic_batching is not None


def test_dynamic_batching_absent_means_each_request_runs_alone(tmp_path: Path) -> None:
    text = BATCHING_PBTXT.split("dynamic_batching")[0]
    assert read_text(text, tmp_path / "config.pbtxt", tmp_path).document["dynamic_batching"] is None


def test_tritons_own_config_answer_is_taken(tmp_path: Path) -> None:
    """What Triton's GET /v2/models/{m}/config answers for an ONNX model: every field written out, defaults included
    (empty lists of the fields cnnserve does not offer, optimization's defaults)."""
    tensor = {"format": "FORMAT_NONE", "is_shape_tensor": False, "allow_ragged_batch": False, "optional": False}
    answer = {
        **TRITON_JSON,
        "backend": "onnxruntime",
        "runtime": "",
        "version_policy": {"latest": {"num_versions": 1}},
        "input": [{**TRITON_JSON["input"][0], **tensor}],
        "output": [{**TRITON_JSON["output"][0], "label_filename": "", "is_shape_tensor": False}],
        "batch_input": [],
        "batch_output": [],
        "optimization": {"priority": "PRIORITY_DEFAULT", "input_pinned_memory": {"enable": True}},
        "instance_group": [{"name": "classifier_0", "kind": "KIND_CPU", "count": 1, "gpus": [], "passive": False}],
        "default_model_filename": "model.onnx",
        "cc_model_filenames": {},
        "metric_tags": {},
        "model_operations": {"op_library_filename": []},
        "model_transaction_policy": {"decoupled": False},
    }
    translated = read_json(answer, tmp_path / "x", tmp_path)
    assert translated.document["max_batch_size"] == 4 and translated.document["instance_count"] == 1
    assert [note.split(":")[0] for note in translated.notes] == ["optimization"]
    with pytest.raises(ModelLoadError, match="'sequence_batching' is not supported"):
        read_json({**answer, "sequence_batching": {}}, tmp_path / "x", tmp_path)  # an empty one turns it on


def test_a_syntax_error_names_the_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"config.pbtxt: line 2, column 1"):
        read_text('name: "m"\n}', tmp_path / "config.pbtxt", tmp_path)
    # a field set aside before parsing (optimization) keeps the lines after it where they were
    text = "optimization {\n  graph { level: 1 }\n}\nmax_batch_size: 2 max_batch_sise: 3"
    with pytest.raises(ModelLoadError, match=r"line 4, column 19: .*max_batch_sise"):
        read_text(text, tmp_path / "config.pbtxt", tmp_path)
