"""config.json parsing and its merge with the ONNX graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from cnnserve.service.errors import ModelLoadError
from cnnserve.service.execution.runtime import graph_tensors
from cnnserve.service.registry.completion import resolve
from cnnserve.service.registry.model_config import DEFAULT_MAX_BATCH_SIZE, read_config
from cnnserve.service.types import DynamicBatching, SessionOptions, TensorSpec
from tests import onnx_models
from tests.service.graphs import write_config

IMAGES = TensorSpec("images", "FP32", (-1, 1, 4, 4))
LOGITS = TensorSpec("logits", "FP32", (-1, 10))
FIXED_X, FIXED_Y = TensorSpec("x", "FP32", (1, 3)), TensorSpec("y", "FP32", (1, 3))

TRAINING_CONFIG: dict[str, Any] = {
    "name": "digits_cnn",
    "platform": "onnxruntime_onnx",
    "max_batch_size": 128,
    "inputs": [{"name": "images", "datatype": "FP32", "dims": [-1, 1, 4, 4]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, 10]}],
    "labels_file": "labels.txt",
    "label_output": "logits",
    "dynamic_batching": {"max_queue_delay_us": 500, "preferred_batch_sizes": [8, 4], "max_queue_size": 1024},
    "instance_count": 2,
    "preprocessing": {"input": "images", "height": 4, "width": 4, "layout": "NCHW", "mean": [0.2], "std": [0.3]},
    "postprocessing": {"output": "logits", "range": [-1.0, 1.0]},
    "parameters": {"task": "classification", "epochs": 3, "exported": True},
    "session": {
        "intra_op_threads": 1,
        "inter_op_threads": 1,
        "graph_optimization_level": "basic",
        "allow_spinning": True,
    },
    "execution_providers": ["cuda", "cpu"],
    "version_policy": {"specific": {"versions": [3, 1]}},
}


def config_dir(tmp_path: Path, config: dict[str, Any], name: str = "digits_cnn", labels: int = 10) -> Path:
    folder = tmp_path / name
    write_config(folder, **config)
    (folder / "labels.txt").write_text("".join(f"digit {i}\n" for i in range(labels)))
    return folder


def test_training_config_is_read_whole(tmp_path: Path) -> None:
    config = read_config(config_dir(tmp_path, TRAINING_CONFIG))
    spec = resolve(config, [IMAGES], [LOGITS], version=1)
    assert (spec.name, spec.platform, spec.max_batch_size, spec.instance_count) == (
        "digits_cnn",
        "onnxruntime_onnx",
        128,
        2,
    )
    assert spec.inputs == (IMAGES,) and spec.outputs == (LOGITS,)
    assert spec.labels == tuple(f"digit {i}" for i in range(10)) and spec.label_output == "logits"
    assert spec.dynamic_batching == DynamicBatching(500, (4, 8), 1024)
    assert spec.session == SessionOptions(1, 1, "basic", True)
    assert spec.parameters == {"task": "classification", "epochs": "3", "exported": "true"}
    assert spec.preprocessing["mean"] == [0.2] and spec.postprocessing == {"output": "logits", "range": [-1.0, 1.0]}
    assert spec.image_input is None and spec.image_output is None  # logits are no images; no input_format given
    assert spec.execution_providers == ("cuda", "cpu")
    assert spec.version_policy == {"specific": {"versions": [1, 3]}}


def test_empty_config_is_filled_in_from_the_graph(tmp_path: Path) -> None:
    onnx_models.write_classifier(tmp_path)
    (tmp_path / "classifier" / "config.json").write_text("{}")
    session = ort.InferenceSession(
        str(tmp_path / "classifier" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    graph_in, graph_out = graph_tensors(session.get_inputs()), graph_tensors(session.get_outputs())
    assert graph_in == (IMAGES,)  # the symbolic batch axis "N" reads as -1
    spec = resolve(read_config(tmp_path / "classifier"), graph_in, graph_out, version=1)
    assert spec.name == "classifier"
    assert spec.inputs == (IMAGES,) and spec.outputs == (LOGITS,)
    assert spec.max_batch_size == DEFAULT_MAX_BATCH_SIZE  # every graph tensor has a dynamic first axis
    assert spec.dynamic_batching == DynamicBatching()
    assert spec.version_policy == {"latest": {"num_versions": 1}}


def test_partial_tensor_entries_take_the_rest_from_the_graph(tmp_path: Path) -> None:
    config = read_config(config_dir(tmp_path, {"max_batch_size": 8, "inputs": [{"name": "images"}]}))
    spec = resolve(config, [IMAGES, TensorSpec("class", "INT64", (-1,))], [LOGITS], version=1)
    # A per-item scalar: clients send [b, 1] (Triton's dims [1] with reshape []), the graph takes [b].
    assert spec.inputs == (IMAGES, TensorSpec("class", "INT64", (-1, 1), model_shape=(-1,)))


def test_config_may_fix_a_dimension_the_graph_leaves_open(tmp_path: Path) -> None:
    graph = TensorSpec("images", "FP32", (-1, 1, -1, -1))
    config = read_config(
        config_dir(tmp_path, {"max_batch_size": 8, "inputs": [{"name": "images", "dims": [-1, 1, 16, 16]}]})
    )
    spec = resolve(config, [graph], [LOGITS], version=1)
    assert spec.inputs[0].shape == (-1, 1, 16, 16)


def test_no_batching_model_keeps_its_fixed_shapes(tmp_path: Path) -> None:
    spec = resolve(read_config(config_dir(tmp_path, {"max_batch_size": 0})), [FIXED_X], [FIXED_Y], version=1)
    assert spec.max_batch_size == 0 and spec.inputs == (FIXED_X,)
    assert spec.dynamic_batching is None  # absent with max_batch_size 0: no merging
    spec = resolve(read_config(config_dir(tmp_path, {})), [FIXED_X], [FIXED_Y], version=1)
    assert spec.max_batch_size == 0  # fixed first axis: auto-complete does not batch


def test_dynamic_batching_null_turns_merging_off(tmp_path: Path) -> None:
    config = read_config(config_dir(tmp_path, {"max_batch_size": 8, "dynamic_batching": None}))
    assert resolve(config, [IMAGES], [LOGITS], version=1).dynamic_batching is None


@pytest.mark.parametrize(
    ("config", "graph_inputs"),
    [
        pytest.param({"inputs": [{"name": "pixels"}]}, [IMAGES], id="name-not-in-graph"),
        pytest.param({"outputs": [{"name": "probs"}]}, [IMAGES], id="output-not-in-graph"),
        pytest.param({"inputs": [{"name": "images", "datatype": "FP16"}]}, [IMAGES], id="dtype"),
        pytest.param({"inputs": [{"name": "images", "dims": [-1, 16, 16]}]}, [IMAGES], id="rank"),
        pytest.param({"inputs": [{"name": "images", "dims": [-1, 3, 4, 4]}]}, [IMAGES], id="fixed-dim"),
        pytest.param({"inputs": [{"name": "images", "dims": [-1, -1, 4, 4]}]}, [IMAGES], id="open-where-graph-fixed"),
        pytest.param({"inputs": [{"name": "images", "dims": [8, 1, 4, 4]}]}, [IMAGES], id="config-fixes-batch"),
        pytest.param({}, [TensorSpec("images", "FP32", (1, 1, 4, 4))], id="graph-batch-axis-fixed"),
        pytest.param({"label_output": "probs"}, [IMAGES], id="label-output-unknown"),
        pytest.param({"labels_file": "short.txt", "label_output": "logits"}, [IMAGES], id="label-count"),
        pytest.param({"dynamic_batching": {"preferred_batch_sizes": [64]}}, [IMAGES], id="preferred-over-max"),
    ],
)
def test_config_contradicting_the_graph_is_refused(
    tmp_path: Path, config: dict[str, Any], graph_inputs: list[TensorSpec]
) -> None:
    folder = config_dir(tmp_path, {"max_batch_size": 32, **config})
    (folder / "short.txt").write_text("a\nb\n")
    with pytest.raises(ModelLoadError) as info:
        resolve(read_config(folder), graph_inputs, [LOGITS], version=2)
    assert "digits_cnn" in str(info.value)


def test_mismatch_message_names_model_version_tensor_and_both_shapes(tmp_path: Path) -> None:
    folder = config_dir(tmp_path, {"max_batch_size": 8, "inputs": [{"name": "images", "dims": [-1, 3, 16, 16]}]})
    with pytest.raises(ModelLoadError, match=r"model 'digits_cnn' version 2: config input 'images' dims \[-1,3,16,16\] "
                       r"contradict the graph's \[-1,1,16,16\]"):  # fmt: skip
        resolve(read_config(folder), [TensorSpec("images", "FP32", (-1, 1, 16, 16))], [LOGITS], version=2)


@pytest.mark.parametrize(
    "config",
    [
        {"max_batch_size": -1},
        {"max_batch_size": "8"},
        {"max_batch_size": True},
        {"instance_count": 0},
        {"platform": "tensorflow_savedmodel"},
        {"name": "other_name"},
        {"dynamic_batching": {"max_queue_size": 0}},
        {"dynamic_batching": {"max_queue_delay_us": -5}},
        {"dynamic_batching": {"max_queue_delay": 5}},
        {"dynamic_batching": {"preferred_batch_sizes": [0]}},
        {"dynamic_batching": []},
        {"inputs": [{"name": "images", "datatype": "FLOAT32"}]},
        {"inputs": [{"name": "images", "dims": [-1, 0]}]},
        {"inputs": [{"name": "images", "shape": [1]}]},
        {"inputs": [{"name": "images"}, {"name": "images"}]},
        {"inputs": [{"name": "images", "format": "CHW"}]},
        {"outputs": [{"name": "logits", "format": "NCHW"}]},
        {"inputs": {"name": "images"}},
        {"outputs": ["logits"]},
        {"session": {"graph_optimization_level": "max"}},
        {"session": {"intra_op_threads": -1}},
        {"session": {"allow_spinning": "no"}},
        {"execution_providers": ["rocm"]},
        {"execution_providers": []},
        {"version_policy": {"latest": {"num_versions": 0}}},
        {"version_policy": {"latest": {"num_versions": 1}, "all": {}}},
        {"version_policy": {"specific": {"versions": []}}},
        {"version_policy": {"newest": {}}},
        {"parameters": {"nested": {"a": 1}}},
        {"preprocessing": [1, 2]},
        {"labels_file": "missing.txt"},
        {"labels_file": "../outside.txt"},
        {"labels_file": 3},
    ],
    ids=lambda c: json.dumps(c),
)
def test_bad_values_are_refused_naming_the_file(tmp_path: Path, config: dict[str, Any]) -> None:
    (tmp_path / "outside.txt").write_text("x\n")
    with pytest.raises(ModelLoadError) as info:
        read_config(config_dir(tmp_path, config))
    assert "config.json" in str(info.value)


def test_an_input_format_is_kept_and_needs_three_dims_per_item(tmp_path: Path) -> None:
    """Triton's input format (FORMAT_NCHW / NHWC): a layout hint ModelConfig shows, as Triton's image_client.py reads
    it; like Triton, only for an input of three dims per item."""
    config = read_config(config_dir(tmp_path, {"inputs": [{"name": "images", "format": "NCHW"}]}))
    spec = resolve(config, [IMAGES], [LOGITS], version=1)
    assert spec.inputs[0].format == "NCHW" and spec.outputs[0].format is None
    with pytest.raises(ModelLoadError, match="format NHWC needs 3 dims per item"):
        resolve(read_config(config_dir(tmp_path, {"inputs": [{"name": "x", "format": "NHWC"}]}, name="m")),
                [FIXED_X], [FIXED_Y], version=1)  # fmt: skip


def test_a_missing_config_json_reads_as_empty(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    config = read_config(folder)
    assert config.name == "m" and config.max_batch_size is None and config.inputs == () and config.outputs == ()
    (folder / "config.json").write_text("{}")
    assert read_config(folder).spec == config.spec


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for text in ("{not json", "[1, 2]", "\xff"):
        (folder / "config.json").write_text(text, encoding="latin-1")
        with pytest.raises(ModelLoadError):
            read_config(folder)


def test_unknown_top_level_keys_only_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    read_config(config_dir(tmp_path, {"description": "written by a newer trainer"}))
    assert "description" in caplog.text


def test_model_providers_are_limited_to_the_servers(tmp_path: Path) -> None:
    config = config_dir(tmp_path, {"execution_providers": ["cuda", "cpu"]})
    assert read_config(config, allowed_providers=("cpu",)).spec.execution_providers == ("cpu",)
    assert read_config(config_dir(tmp_path, {}), allowed_providers=("cuda", "cpu")).spec.execution_providers == (
        "cuda",
        "cpu",
    )
