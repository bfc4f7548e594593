"""Training's publisher and the server read the model repository alike: what one side writes, the other serves.

Models are published with training/publish.py (real ONNX graphs, built with onnx.helper) and read back by the
server's own code: its Repository for folder rules, and a real server on 127.0.0.1:0 for datatypes and version
policies, asked over gRPC as a Triton client would ask.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.contracts import layout, wire
from cnnserve.contracts.datatypes import DATATYPES, datatype_from_numpy, datatype_from_onnx
from cnnserve.service.errors import ModelLoadError, ModelNotFound
from cnnserve.service.registry.model_config import read_config
from cnnserve.service.registry.repository import Repository
from cnnserve.training import publish as publisher
from cnnserve.training.publish import PublishError, model_config, publish
from tests.conftest import ServerThread, loopback_settings

# Folder names beside real versions: only those that follow the version rule are versions, for both sides.
ODD_FOLDERS = {
    "01": None, "007": None, "0": None, "00": None, "\u00b2": None, "\u0661": None, "\u0663\u0664": None,
    "\uff11": None, "1 ": None, " 1": None, "+1": None, "-1": None, "1_0": None, "1e3": None, "0x10": None,
    "1.0": None, "v1": None, ".tmp-0123": None, "9" * 19: None, "9" * 18: layout.MAX_VERSION, "10": 10,
}  # fmt: skip
OPSET = 17


def identity_graph(name: str, tensors: dict[str, int]) -> bytes:
    """One Identity per entry: input `in_<key>` -> output `out_<key>`, element type the value, shape [N, 3]."""
    nodes = [helper.make_node("Identity", [f"in_{key}"], [f"out_{key}"]) for key in tensors]
    inputs = [helper.make_tensor_value_info(f"in_{key}", elem, ["N", 3]) for key, elem in tensors.items()]
    outputs = [helper.make_tensor_value_info(f"out_{key}", elem, ["N", 3]) for key, elem in tensors.items()]
    model = helper.make_model(
        helper.make_graph(nodes, f"identity {name}", inputs, outputs), opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tensor_entries(prefix: str, datatypes: list[str]) -> list[dict[str, Any]]:
    return [{"name": f"{prefix}_{d}", "datatype": d, "dims": [-1, 3]} for d in datatypes]


def publish_fp32(repo: Path, name: str, **config: Any) -> Path:
    """A one-tensor FP32 model, published the way training publishes classifiers."""
    written = model_config(
        name, tensor_entries("in", ["FP32"]), tensor_entries("out", ["FP32"]), {"task": "test"},
        max_batch_size=4, **config,
    )  # fmt: skip
    return publish(repo, name, identity_graph(name, {"FP32": TensorProto.FLOAT}), written)


# -- the rules themselves -----------------------------------------------------------------------------------------


def test_the_onnx_numbers_in_the_table_are_onnx_s() -> None:
    for name, info in DATATYPES.items():
        expected = TensorProto.STRING if name == "BYTES" else helper.np_dtype_to_tensor_dtype(info.numpy)
        assert info.onnx == expected, name
        assert datatype_from_onnx(info.onnx) == name
    with pytest.raises(ValueError, match="16"):
        datatype_from_onnx(TensorProto.BFLOAT16)


@pytest.mark.parametrize(("folder", "version"), [("1", 1), ("42", 42), *ODD_FOLDERS.items()])
def test_version_rule(folder: str, version: int | None) -> None:
    assert layout.parse_version(folder) == version


@pytest.mark.parametrize(
    ("policy", "normal"),
    [
        (None, {"latest": {"num_versions": 1}}),
        ({"latest": {}}, {"latest": {"num_versions": 1}}),
        ({"latest": {"num_versions": 2}}, {"latest": {"num_versions": 2}}),
        ({"all": {}}, {"all": {}}),
        ({"specific": {"versions": [3, 1, 3]}}, {"specific": {"versions": [1, 3]}}),
    ],
)
def test_version_policies_have_one_normal_form(policy: Any, normal: dict[str, Any]) -> None:
    assert layout.parse_version_policy(policy) == normal


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        ([], "version_policy"),
        ({}, "version_policy"),
        ({"newest": {}}, "version_policy"),
        ({"latest": {"num_versions": 1}, "all": {}}, "version_policy"),
        ({"latest": 2}, "version_policy"),
        ({"latest": {"num_versions": 0}}, "version_policy.latest.num_versions"),
        ({"latest": {"num_versions": True}}, "version_policy.latest.num_versions"),
        ({"latest": {"count": 2}}, "version_policy.latest.count"),
        ({"all": {"x": 1}}, "version_policy.all.x"),
        ({"specific": {"versions": []}}, "version_policy.specific.versions"),
        ({"specific": {"versions": [0]}}, "version_policy.specific.versions"),
        ({"specific": {}}, "version_policy.specific.versions"),
    ],
)
def test_bad_version_policies_are_refused_by_both_sides(tmp_path: Path, policy: Any, key: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}'"):
        layout.parse_version_policy(policy)
    with pytest.raises(PublishError, match=f"'{key}'"):
        model_config("m", [], [], {}, version_policy=policy)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / layout.CONFIG_FILE).write_text(json.dumps({"version_policy": policy}))
    with pytest.raises(ModelLoadError, match=f"'{key}'") as info:
        read_config(folder)
    assert "config.json" in str(info.value)


# -- folder names: the publisher counts exactly the versions the server serves ------------------------------------


def test_odd_version_folders_are_ignored_by_both_sides(tmp_path: Path) -> None:
    first = publish_fp32(tmp_path, "m")
    for folder in ODD_FOLDERS:
        if folder not in ("9" * 18, "10"):
            shutil.copytree(first, tmp_path / "m" / folder)
    # The old publisher read "\u0661" as version 1 and failed on "\u00b2"; both are folders like any other now.
    assert publish_fp32(tmp_path, "m").name == "2"
    assert publisher.versions(tmp_path / "m") == Repository(tmp_path).versions("m") == [1, 2]
    assert publisher.latest_model(tmp_path, "m") == tmp_path / "m" / "2" / layout.MODEL_FILE


def test_the_largest_version_is_served_and_the_publisher_stops_there(tmp_path: Path) -> None:
    first = publish_fp32(tmp_path, "m")
    shutil.copytree(first, tmp_path / "m" / str(layout.MAX_VERSION))
    assert publisher.versions(tmp_path / "m") == Repository(tmp_path).versions("m") == [1, layout.MAX_VERSION]
    with pytest.raises(PublishError, match="no free version"):
        publish_fp32(tmp_path, "m")
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(layout.TMP_PREFIX)]


folder_names = st.from_regex(r"[0-9]{1,20}", fullmatch=True) | st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"), min_size=1, max_size=12
)


@settings(max_examples=150, deadline=None)
@given(st.lists(folder_names, min_size=1, max_size=8, unique=True))
def test_any_version_folders_are_counted_alike(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "m"
        folder.mkdir()
        (folder / layout.CONFIG_FILE).write_text("{}")
        for name in names:
            if name in (".", ".."):
                continue
            (folder / name).mkdir()
            (folder / name / layout.MODEL_FILE).write_bytes(b"a model file")
        expected = sorted(v for v in map(layout.parse_version, names) if v is not None)
        assert publisher.versions(folder) == Repository(Path(root)).versions("m") == expected


MODEL_NAMES = [
    "m", "digits_cnn", "m.v2", "a-b_c.d", "A1", "1a", "a" * 128, "a" * 129, "12", "0", "my model", "m\t", " m",
    "-m", "_m", ".m", "..", "m:1", "m%2F", "\u00fc", "m\u0661", "m\n", "",
]  # fmt: skip


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_publisher_accepts_exactly_the_names_the_server_serves(tmp_path: Path, name: str) -> None:
    try:
        publish_fp32(tmp_path, name)
        published = True
    except PublishError:
        published = False
    if not published and name not in ("", ".", ".."):
        (tmp_path / name / "1").mkdir(parents=True)  # what another producer might leave there
        (tmp_path / name / "1" / layout.MODEL_FILE).write_bytes(b"a model file")
    served = Repository(tmp_path).model_names()
    assert (name in served) == published == layout.is_model_name(name)
    if not published:
        with pytest.raises(ModelNotFound, match="not valid"):
            Repository(tmp_path).model_dir(name)


def test_a_config_the_server_would_refuse_is_not_published(tmp_path: Path) -> None:
    graph = identity_graph("m", {"FP32": TensorProto.FLOAT})
    good = model_config("m", tensor_entries("in", ["FP32"]), tensor_entries("out", ["FP32"]), {})
    for bad in ({**good, "name": "other"}, {**good, "platform": "tensorrt_plan"},
                {**good, "inputs": [{"name": "in_FP32", "datatype": "FLOAT32"}]}):  # fmt: skip
        with pytest.raises(PublishError):
            publish(tmp_path, "m", graph, bad)
    assert not (tmp_path / "m").exists() or publisher.versions(tmp_path / "m") == []


# -- a real server on what training published ---------------------------------------------------------------------

POLICIES: dict[str, tuple[dict[str, Any] | None, list[int]]] = {
    "newest": (None, [3]),
    "latest_two": ({"latest": {"num_versions": 2}}, [2, 3]),
    "every": ({"all": {}}, [1, 2, 3]),
    "chosen": ({"specific": {"versions": [3, 1]}}, [1, 3]),
    "missing_only": ({"specific": {"versions": [7]}}, []),
}
ODD_MODEL = "odd_versions"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("published")
    names = list(DATATYPES)
    typed = model_config(
        "every_type", tensor_entries("in", names), tensor_entries("out", names), {"task": "identity"},
        max_batch_size=8,
    )  # fmt: skip
    publish(root, "every_type", identity_graph("every_type", {n: DATATYPES[n].onnx for n in names}), typed)
    for name, (policy, _) in POLICIES.items():
        for _ in range(3):
            publish_fp32(root, name, version_policy=policy)
    first = publish_fp32(root, ODD_MODEL, version_policy={"all": {}})
    largest = str(layout.MAX_VERSION)
    for folder in ODD_FOLDERS:
        if folder != largest:
            shutil.copytree(first, root / ODD_MODEL / folder)
    assert publish_fp32(root, ODD_MODEL, version_policy={"all": {}}).name == "11"  # after "10", the only real one
    shutil.copytree(first, root / ODD_MODEL / largest)
    return root


@pytest.fixture(scope="module")
def stub(repo: Path) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with ServerThread(loopback_settings(repo)) as server, grpc.insecure_channel(server.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def served_versions(stub: pb_grpc.GRPCInferenceServiceStub, name: str) -> list[int]:
    return sorted(int(v) for v in stub.ModelMetadata(pb.ModelMetadataRequest(name=name)).versions)


def test_every_datatype_round_trips_through_publish_load_and_metadata(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="every_type"))
    assert metadata.platform == layout.PLATFORM
    assert {t.name: t.datatype for t in metadata.inputs} == {f"in_{n}": n for n in DATATYPES}
    assert {t.name: t.datatype for t in metadata.outputs} == {f"out_{n}": n for n in DATATYPES}
    assert all(list(t.shape) == [-1, 3] for t in (*metadata.inputs, *metadata.outputs))
    config = stub.ModelConfig(pb.ModelConfigRequest(name="every_type")).config
    assert {t.name: t.data_type for t in config.input} == {f"in_{n}": info.triton for n, info in DATATYPES.items()}
    assert {t.name: t.data_type for t in config.output} == {f"out_{n}": i.triton for n, i in DATATYPES.items()}
    assert config.dynamic_batching.max_queue_delay_microseconds == layout.MAX_QUEUE_DELAY_US

    request = pb.ModelInferRequest(model_name="every_type")
    sent: dict[str, np.ndarray] = {}
    for name, info in DATATYPES.items():
        values = np.array([[b"a", b"", b"\xc3\xa9"]] * 2, dtype=object) if info.numpy.kind == "O" else (
            np.arange(6).reshape(2, 3).astype(info.numpy)
        )  # fmt: skip
        sent[name] = values
        request.inputs.add(name=f"in_{name}", datatype=name, shape=[2, 3])
        request.raw_input_contents.append(raw(values))
    reply = stub.ModelInfer(request)
    assert {o.name: o.datatype for o in reply.outputs} == {f"out_{n}": n for n in DATATYPES}
    for output, contents in zip(reply.outputs, reply.raw_output_contents, strict=True):
        assert list(output.shape) == [2, 3]
        assert contents == raw(sent[output.datatype]), output.name


def raw(values: np.ndarray) -> bytes:
    if values.dtype.kind == "O":
        return b"".join(len(v).to_bytes(4, "little") + v for v in values.ravel())
    return values.tobytes()


@pytest.mark.parametrize("name", [n for n in POLICIES if POLICIES[n][1]])
def test_the_published_version_policy_is_the_one_served(stub: pb_grpc.GRPCInferenceServiceStub, name: str) -> None:
    policy, expected = POLICIES[name]
    assert served_versions(stub, name) == expected
    for version in (1, 2, 3):
        ready = stub.ModelReady(pb.ModelReadyRequest(name=name, version=str(version))).ready
        assert ready == (version in expected), version
    reported = stub.ModelConfig(pb.ModelConfigRequest(name=name)).config.version_policy
    normal = layout.parse_version_policy(policy)
    assert reported.WhichOneof("policy_choice") == next(iter(normal))
    if "specific" in normal:
        assert list(reported.specific.versions) == normal["specific"]["versions"]
    if "latest" in normal:
        assert reported.latest.num_versions == normal["latest"]["num_versions"]


def test_a_policy_that_selects_nothing_leaves_the_model_unready(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert not stub.ModelReady(pb.ModelReadyRequest(name="missing_only")).ready
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest())
    assert "missing_only" in {m.name for m in index.models}


def test_odd_folders_are_neither_published_over_nor_served(repo: Path, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    expected = [1, 10, 11, layout.MAX_VERSION]
    assert publisher.versions(repo / ODD_MODEL) == expected
    assert served_versions(stub, ODD_MODEL) == expected
    for folder in ODD_FOLDERS:
        if layout.parse_version(folder) is None:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelMetadata(pb.ModelMetadataRequest(name=ODD_MODEL, version=folder))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, folder


def test_every_datatype_is_found_again_from_its_numpy_dtype() -> None:
    for name, info in DATATYPES.items():
        assert datatype_from_numpy(info.numpy) == name
    assert datatype_from_numpy(np.dtype(">f4")) == "FP32"  # big-endian data is still FP32
    with pytest.raises(ValueError, match="complex64"):
        datatype_from_numpy(np.dtype(np.complex64))


# -- contracts/wire.py: the BYTES codec and the classification strings, shared by server and client --------------


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_bytes_elements_round_trip(items: list[bytes]) -> None:
    raw = wire.pack_bytes(items)
    assert wire.unpack_bytes(raw, len(items)) == items == wire.split_bytes(raw)
    assert wire.unpack_bytes(memoryview(raw), len(items)) == items


@pytest.mark.parametrize(("raw", "count", "words"), [
    (b"\x05\x00\x00\x00abc", 1, "claims 5 bytes"),
    (b"\x01\x00\x00\x00ab", 1, "left over"),
    (b"\x01\x00", 1, "too few"),
    (b"\x00\x00\x00\x00\x01", 2, "too few"),
])  # fmt: skip
def test_malformed_bytes_elements_are_named(raw: bytes, count: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        wire.unpack_bytes(raw, count)


def test_classification_entries_round_trip_with_and_without_labels() -> None:
    assert wire.format_class(0.5, 1, ["zero", "one:two"]) == b"0.500000:1:one:two"
    assert wire.parse_class(b"0.500000:1:one:two") == (0.5, 1, "one:two")
    assert wire.parse_class(wire.format_class(-2.0, 7, [])) == (-2.0, 7, "")
    with pytest.raises(ValueError):
        wire.parse_class(b"nonsense")
