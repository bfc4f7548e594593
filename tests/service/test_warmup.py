"""Warm-up on a real server: data of the server's own making never refuses a model its graph accepts, and a model's
own `model_warmup` samples (service/registry/warmup.py, Triton's ModelWarmup) run as given and fail the load naming
the sample, as Triton's do."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from cnnserve.service.errors import ModelLoadError
from cnnserve.service.registry import warmup
from cnnserve.service.registry.model_config import read_config
from tests import onnx_models
from tests.service.graphs import save, write_config


def strings(*items: bytes) -> bytes:
    """The protocol's raw BYTES form: each element's 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def set_warmup(folder: Path, samples: list[dict[str, Any]], files: dict[str, bytes] | None = None) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_warmup": samples}))
    for name, data in (files or {}).items():
        path = folder / warmup.FOLDER / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def text_input(source: dict[str, Any], dims: list[Any] | None = None) -> dict[str, Any]:
    return {"data_type": "TYPE_STRING", "dims": dims or [16], **source}


NUMBERS = strings(*(str(i).encode() for i in range(16)))


def load_error(client: triton.InferenceServerClient, name: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        client.load_model(name)
    return str(info.value.message())


def test_simple_string_loads_and_makes_the_server_ready(tmp_path: Path, start_server: Any) -> None:
    """Its graph casts strings to INT32; the server's own warm-up data ("0") must be a number."""
    onnx_models.write_simple_string(tmp_path)
    server = start_server(tmp_path)
    with triton.InferenceServerClient(server.grpc_address) as client:
        assert client.is_server_ready() and client.is_model_ready("simple_string")


def write_reshaper(repo: Path) -> None:
    """data FP32 [4] reshaped to `shape` INT64 [2]: the server's zeros ask for [0,0], which no 4 values fill."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["data", "shape"], ["reshaped"])],
        "reshaper",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("reshaped", TensorProto.FLOAT, [None, None])],
    )  # fmt: skip
    save(graph, repo / "reshaper" / "1" / "model.onnx")
    write_config(repo / "reshaper", max_batch_size=0)


def test_a_failed_warm_up_of_the_servers_making_warns_and_the_model_serves(
    tmp_path: Path, start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    write_reshaper(tmp_path)
    with caplog.at_level(logging.WARNING):
        server = start_server(tmp_path)
    assert "event=warmup_failed model=reshaper:1" in caplog.text
    with triton.InferenceServerClient(server.grpc_address) as client:
        assert client.is_server_ready() and client.is_model_ready("reshaper")
        data, shape = triton.InferInput("data", [4], "FP32"), triton.InferInput("shape", [2], "INT64")
        data.set_data_from_numpy(np.arange(4, dtype=np.float32))
        shape.set_data_from_numpy(np.array([2, 2], dtype=np.int64))
        assert client.infer("reshaper", [data, shape]).as_numpy("reshaped").tolist() == [[0, 1], [2, 3]]


def test_samples_run_and_a_failing_one_fails_the_load_naming_it(tmp_path: Path, start_server: Any) -> None:
    folder = onnx_models.write_simple_string(tmp_path)
    server = start_server(tmp_path, model_control_mode="explicit", startup_models=())
    with triton.InferenceServerClient(server.grpc_address) as client:
        set_warmup(
            folder,
            [
                {"name": "numbers", "batch_size": 2, "count": 3,
                 "inputs": {"INPUT0": text_input({"input_data_file": "in0"}),
                            "INPUT1": text_input({"input_data_file": "in0"}, dims=["16"])}},
                {"name": "skipped", "batch_size": 0, "inputs": {}},
            ],
            {"in0": NUMBERS},
        )  # fmt: skip
        client.load_model("simple_string")
        assert client.is_model_ready("simple_string")

        # Triton's zero data for strings is empty strings, which this graph cannot cast: Triton fails it too.
        zeros = {"INPUT0": text_input({"zero_data": True}), "INPUT1": text_input({"random_data": True})}
        set_warmup(folder, [{"name": "zeros", "batch_size": 1, "inputs": zeros}])
        message = load_error(client, "simple_string")
        assert "failed to run warmup sample 'zeros'" in message
        assert client.is_model_ready("simple_string")  # the previous load keeps serving


@pytest.mark.parametrize(
    ("samples", "files", "words"),
    [
        ([{"name": "s", "batch_size": 9, "inputs": {}}], {}, "batch_size 9 is over the model's 8"),
        ([{"name": "s", "batch_size": 1, "inputs": {"INPUT0": text_input({"zero_data": True})}}], {},
         "gives no data for input 'INPUT1'"),
        ([{"name": "s", "batch_size": 1, "inputs": {"INPUT0": text_input({"zero_data": True}),
                                                   "INPUT1": text_input({"zero_data": True}),
                                                   "INPUT2": text_input({"zero_data": True})}}], {},
         "'INPUT2' is not an input"),
        ([{"name": "s", "batch_size": 1, "inputs": {"INPUT0": {**text_input({"zero_data": True}), "data_type": "INT32"},
                                                   "INPUT1": text_input({"zero_data": True})}}], {},
         "data_type INT32, but the model's input is BYTES"),
        ([{"name": "s", "batch_size": 1, "inputs": {"INPUT0": text_input({"zero_data": True}, dims=[15]),
                                                   "INPUT1": text_input({"zero_data": True})}}], {},
         "dims [15] do not fit the input's [16]"),
        ([{"name": "s", "batch_size": 1, "inputs": {"INPUT0": text_input({"input_data_file": "../config.json"}),
                                                   "INPUT1": text_input({"zero_data": True})}}], {},
         "leads out of the model folder's warmup/"),
        ([{"name": "s", "batch_size": 1, "inputs": {"INPUT0": text_input({"input_data_file": "few"}),
                                                   "INPUT1": text_input({"zero_data": True})}}],
         {"few": strings(b"1", b"2")}, "raw BYTES data has 10 bytes, too few for 16 elements"),
        ([{"name": "s", "batch_size": 1, "inputs": {"INPUT0": text_input({"input_data_file": "absent"}),
                                                   "INPUT1": text_input({"zero_data": True})}}], {},
         "cannot read warmup/absent"),
    ],
    ids=["batch-too-large", "input-missing", "input-unknown", "datatype", "dims", "path-escape", "file-short",
         "file-absent"],
)  # fmt: skip
def test_samples_that_do_not_fit_the_graph_fail_the_load_naming_them(
    tmp_path: Path, start_server: Any, samples: list[dict[str, Any]], files: dict[str, bytes], words: str
) -> None:
    folder = onnx_models.write_simple_string(tmp_path)
    set_warmup(folder, samples, files)
    server = start_server(tmp_path, model_control_mode="explicit", startup_models=())
    with triton.InferenceServerClient(server.grpc_address) as client:
        message = load_error(client, "simple_string")
    assert "warmup sample 's'" in message and words in message, message


def test_numeric_samples_from_zeros_random_data_and_files(tmp_path: Path, start_server: Any) -> None:
    onnx_models.write_simple_int8(tmp_path)
    values = np.arange(-8, 8, dtype=np.int8)
    set_warmup(
        tmp_path / "simple_int8",
        [{"name": "mixed", "batch_size": 4, "count": 2,
          "inputs": {"INPUT0": {"data_type": "INT8", "dims": [16], "random_data": True},
                     "INPUT1": {"data_type": "TYPE_INT8", "dims": ["16"], "input_data_file": "int8"}}},
         {"name": "zeros", "batch_size": 1,
          "inputs": {name: {"data_type": "TYPE_INT8", "dims": [16], "zero_data": 1} for name in ("INPUT0", "INPUT1")}}],
        {"int8": values.tobytes() + b"extra bytes past the dims are ignored, as in Triton"},
    )  # fmt: skip
    server = start_server(tmp_path)
    with triton.InferenceServerClient(server.grpc_address) as client:
        assert client.is_server_ready()
        stats = client.get_inference_statistics("simple_int8").model_stats[0]
        assert stats.inference_count == 0  # warm-up runs are no requests


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"name": "s"}, "model_warmup' must be a list"),
        ([{"name": "s", "batch_size": -1}], "model_warmup[0].batch_size' must be an integer >= 0"),
        ([{"name": "s", "bogus": 1}], "unknown key 'model_warmup[0].bogus'"),
        ([{"inputs": {"x": {"data_type": "TYPE_FLOAT", "dims": [1], "zero_data": True}}}], ".x.data_type' must be"),
        ([{"inputs": {"x": {"data_type": "FP32", "dims": [-1], "zero_data": True}}}], "every variable dimension given"),
        ([{"inputs": {"x": {"data_type": "FP32", "dims": [1], "zero_data": True, "random_data": True}}}],
         "needs exactly one of zero_data, random_data, input_data_file"),
        ([{"inputs": {"x": {"data_type": "FP32", "dims": [1]}}}], "needs exactly one of"),
        ([{"inputs": {"x": {"data_type": "FP32", "dims": [1], "input_data_file": "/etc/passwd"}}}],
         "relative to the model folder's warmup/"),
    ],
)  # fmt: skip
def test_malformed_samples_are_refused_naming_the_key(tmp_path: Path, value: Any, words: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_warmup": value}))
    with pytest.raises(ModelLoadError) as info:
        read_config(folder)
    assert words in str(info.value) and "config.json" in str(info.value)
