"""Triton's system shared memory extension on both doors, driven by tritonclient as Triton's own examples drive it
(simple_grpc_shm_client.py, simple_http_shm_client.py, simple_*_shm_string_client.py, reuse_infer_objects_client.py,
in triton-inference-server/client src/python/examples), and every refusal: ranges, keys, files, tokens, the switch.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from onnx import TensorProto, checker, helper, save
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.service.edge.cli import settings_from_args
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings

DOORS = ("grpc", "http")
TOKEN = "shm-test-token"
INPUT0 = np.arange(16, dtype=np.int32)
INPUT1 = np.ones(16, dtype=np.int32)
BYTE_SIZE = INPUT0.nbytes  # 64: one [1,16] INT32 tensor
SHM_DIR = "/dev/shm"


def _write_model(repo: Path, name: str, strings: bool) -> None:
    """Triton's `simple`: INPUT0, INPUT1 INT32 [N,16] -> OUTPUT0 = sum, OUTPUT1 = difference. With `strings`, its
    `simple_string`: the same on decimal strings (BYTES), an empty string read as 0 (warm-up sends empty strings)."""
    elem = TensorProto.STRING if strings else TensorProto.INT32
    nodes, operands, initializers = [], ["INPUT0", "INPUT1"], []
    if strings:  # [N,16] strings -> [N,16] int32: "" becomes "0", then Cast
        texts = (("empty", b""), ("zero", b"0"))
        initializers = [helper.make_tensor(n, elem, [], [t]) for n, t in texts]  # type: ignore[list-item]  # stubs: no bytes
        for source in ("INPUT0", "INPUT1"):
            nodes += [
                helper.make_node("Equal", [source, "empty"], [source + "_empty"]),
                helper.make_node("Where", [source + "_empty", "zero", source], [source + "_text"]),
                helper.make_node("Cast", [source + "_text"], [source + "_int"], to=TensorProto.INT32),
            ]
        operands = ["INPUT0_int", "INPUT1_int"]
    results = ["SUM", "DIFF"] if strings else ["OUTPUT0", "OUTPUT1"]
    nodes += [helper.make_node("Add", operands, [results[0]]), helper.make_node("Sub", operands, [results[1]])]
    if strings:  # [N,16] int32 -> [N,16] strings
        nodes += [helper.make_node("Cast", [results[i]], [f"OUTPUT{i}"], to=TensorProto.STRING) for i in (0, 1)]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, elem, ["N", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, elem, ["N", 16]) for n in ("OUTPUT0", "OUTPUT1")],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])  # Equal on strings: opset 19
    model.ir_version = 9
    checker.check_model(model)
    (repo / name / "1").mkdir(parents=True)
    save(model, str(repo / name / "1" / "model.onnx"))
    (repo / name / "config.json").write_text(json.dumps({"name": name, "max_batch_size": 8}))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shm") / "repo"
    _write_model(path, "simple", strings=False)
    _write_model(path, "simple_string", strings=True)
    onnx_models.write_slow_classifier(path, work=150)
    return path


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(loopback_settings(repo, allow_client_shm=True)) as running:
        yield running


def client_for(door: str, running: ServerThread) -> Any:
    if door == "grpc":
        return grpcclient.InferenceServerClient(running.grpc_address)
    return httpclient.InferenceServerClient(running.rest_address)


def module_for(door: str) -> Any:
    return grpcclient if door == "grpc" else httpclient


def code_of(err: InferenceServerException) -> str:
    """The status as each client states it: 'StatusCode.INVALID_ARGUMENT' (gRPC) or '400' (HTTP)."""
    return str(err.status())


def expected(door: str, grpc_code: str, http_code: int) -> str:
    return f"StatusCode.{grpc_code}" if door == "grpc" else str(http_code)


def output_meta(door: str, output: Any) -> tuple[str, list[int]]:
    if door == "grpc":
        return output.datatype, list(output.shape)
    return output["datatype"], output["shape"]


class Regions:
    """Shared memory objects a test creates with tritonclient (unique keys), destroyed at the end."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.plain_paths: list[Path] = []
        self.tag = uuid.uuid4().hex[:10]

    def key(self, name: str) -> str:
        return f"/cnnserve_test_{self.tag}_{name}"

    def create(self, name: str, byte_size: int) -> Any:
        handle = shm.create_shared_memory_region(name, self.key(name), byte_size)
        self.handles.append(handle)
        return handle

    def plain(self, name: str, byte_size: int) -> Path:
        """An object the test process does not map (tritonclient's handles do), so /proc/self/maps shows only the
        server's mappings of it; read and written with pread/pwrite."""
        path = Path(SHM_DIR, self.key(name).lstrip("/"))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, byte_size)
        os.close(fd)
        self.plain_paths.append(path)
        return path

    def close(self) -> None:
        for handle in self.handles:
            shm.destroy_shared_memory_region(handle)
        for path in self.plain_paths:
            path.unlink()


@pytest.fixture
def regions() -> Iterator[Regions]:
    made = Regions()
    yield made
    made.close()


@pytest.fixture(autouse=True)
def nothing_left_registered(server: ServerThread) -> Iterator[None]:
    yield
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.unregister_system_shared_memory()


# -- Triton's examples -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
def test_triton_shm_example(door: str, server: ServerThread, regions: Regions) -> None:
    """simple_{grpc,http}_shm_client.py: both inputs in one region, both outputs in another, at offsets."""
    client, lib = client_for(door, server), module_for(door)
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()  # as the example does first: no CUDA region here, so nothing to do
    output_handle = regions.create("output_data", BYTE_SIZE * 2)
    client.register_system_shared_memory("output_data", regions.key("output_data"), BYTE_SIZE * 2)
    input_handle = regions.create("input_data", BYTE_SIZE * 2)
    shm.set_shared_memory_region(input_handle, [INPUT0])
    shm.set_shared_memory_region(input_handle, [INPUT1], offset=BYTE_SIZE)
    client.register_system_shared_memory("input_data", regions.key("input_data"), BYTE_SIZE * 2)

    inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("input_data", BYTE_SIZE)
    inputs[1].set_shared_memory("input_data", BYTE_SIZE, offset=BYTE_SIZE)
    outputs = [lib.InferRequestedOutput("OUTPUT0"), lib.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output_data", BYTE_SIZE)
    outputs[1].set_shared_memory("output_data", BYTE_SIZE, offset=BYTE_SIZE)
    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs)

    answers = []
    for name, offset in (("OUTPUT0", 0), ("OUTPUT1", BYTE_SIZE)):
        datatype, shape = output_meta(door, results.get_output(name))
        assert (datatype, shape) == ("INT32", [1, 16])
        answers.append(shm.get_contents_as_numpy(output_handle, utils.triton_to_np_dtype(datatype), shape, offset))
    np.testing.assert_array_equal(answers[0][0], INPUT0 + INPUT1)
    np.testing.assert_array_equal(answers[1][0], INPUT0 - INPUT1)

    status = client.get_system_shared_memory_status()
    if door == "grpc":
        listed = {name: (r.key, r.offset, r.byte_size) for name, r in status.regions.items()}
    else:  # Triton's REST form: a list of {"name", "key", "offset", "byte_size"}
        listed = {r["name"]: (r["key"], r["offset"], r["byte_size"]) for r in status}
    assert listed == {
        "input_data": (regions.key("input_data"), 0, BYTE_SIZE * 2),
        "output_data": (regions.key("output_data"), 0, BYTE_SIZE * 2),
    }
    client.unregister_system_shared_memory()
    assert len(client.get_system_shared_memory_status(**({"as_json": True} if door == "grpc" else {}))) == 0
    client.close()


@pytest.mark.parametrize("door", DOORS)
def test_output_reply_says_where_the_data_is_and_carries_none(
    door: str, server: ServerThread, regions: Regions
) -> None:
    """One input in shared memory, one in the request; one output to a region, one in the reply."""
    client, lib = client_for(door, server), module_for(door)
    regions.create("in", BYTE_SIZE)
    shm.set_shared_memory_region(regions.handles[-1], [INPUT0])
    out_handle = regions.create("out", 4096 + BYTE_SIZE * 2)
    client.register_system_shared_memory("in", regions.key("in"), BYTE_SIZE)
    client.register_system_shared_memory("out", regions.key("out"), BYTE_SIZE + 100, offset=4000)  # not page-aligned
    inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("in", BYTE_SIZE)
    inputs[1].set_data_from_numpy(INPUT1[None] * 3)
    outputs = [lib.InferRequestedOutput("OUTPUT0"), lib.InferRequestedOutput("OUTPUT1")]
    outputs[1].set_shared_memory("out", BYTE_SIZE, offset=36)
    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs)
    np.testing.assert_array_equal(results.as_numpy("OUTPUT0")[0], INPUT0 + 3)
    written = shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=4036)
    np.testing.assert_array_equal(written[0], INPUT0 - 3)
    placed = results.get_output("OUTPUT1")
    # As Triton answers: name, datatype and shape, no data and no parameters (Triton's C++ HTTP client, perf_analyzer's,
    # reads binary_data_size from an output's parameters whenever it finds them).
    if door == "grpc":
        assert not placed.parameters and results.get_response().raw_output_contents[1] == b""
    else:
        assert set(placed) == {"name", "datatype", "shape"}
    assert list(placed.shape if door == "grpc" else placed["shape"]) == [1, 16]
    client.close()


@pytest.mark.parametrize("door", DOORS)
def test_triton_shm_string_example(door: str, server: ServerThread, regions: Regions) -> None:
    """simple_{grpc,http}_shm_string_client.py: BYTES tensors, serialized, in and out of shared memory."""
    client, lib = client_for(door, server), module_for(door)
    in0 = np.array([str(x).encode() for x in INPUT0], dtype=object)
    in1 = np.array([str(x).encode() for x in INPUT1], dtype=object)
    expected_sum = np.array([str(x).encode() for x in INPUT0 + INPUT1], dtype=object)
    expected_diff = np.array([str(x).encode() for x in INPUT0 - INPUT1], dtype=object)
    serialized = [utils.serialize_byte_tensor(a) for a in (in0, in1, expected_sum, expected_diff)]
    sizes = [utils.serialized_byte_size(s) for s in serialized]
    handles = {}
    for name, size in zip(("input0", "input1", "output0", "output1"), sizes, strict=True):
        handles[name] = regions.create(name, size)
        client.register_system_shared_memory(name, regions.key(name), size)
    shm.set_shared_memory_region(handles["input0"], [serialized[0]])
    shm.set_shared_memory_region(handles["input1"], [serialized[1]])
    inputs = [lib.InferInput("INPUT0", [1, 16], "BYTES"), lib.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_shared_memory("input0", sizes[0])
    inputs[1].set_shared_memory("input1", sizes[1])
    outputs = [lib.InferRequestedOutput("OUTPUT0"), lib.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output0", sizes[2])
    outputs[1].set_shared_memory("output1", sizes[3])
    results = client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    for name, want in (("OUTPUT0", expected_sum), ("OUTPUT1", expected_diff)):
        datatype, shape = output_meta(door, results.get_output(name))
        got = shm.get_contents_as_numpy(handles[name.lower()], utils.triton_to_np_dtype(datatype), shape)
        assert list(got[0]) == list(want)
    client.close()


@pytest.mark.parametrize("door", DOORS)
def test_triton_reuse_infer_objects_example(door: str, server: ServerThread, regions: Regions) -> None:
    """reuse_infer_objects_client.py: the same InferInput/InferRequestedOutput objects switch between shared memory
    and the request, and back."""
    client, lib = client_for(door, server), module_for(door)
    handles = {}
    for name in ("output0_data", "output1_data", "input0_data", "input1_data"):
        handles[name] = regions.create(name, BYTE_SIZE)
        client.register_system_shared_memory(name, regions.key(name), BYTE_SIZE)
    shm.set_shared_memory_region(handles["input0_data"], [INPUT0])
    shm.set_shared_memory_region(handles["input1_data"], [INPUT1])
    inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
    outputs = [lib.InferRequestedOutput("OUTPUT0"), lib.InferRequestedOutput("OUTPUT1")]

    def infer_and_validate(use_shared_memory: bool) -> None:
        second = INPUT1 if use_shared_memory else INPUT1 * 2
        if use_shared_memory:
            inputs[0].set_shared_memory("input0_data", BYTE_SIZE)
            inputs[1].set_shared_memory("input1_data", BYTE_SIZE)
            outputs[0].set_shared_memory("output0_data", BYTE_SIZE)
            outputs[1].set_shared_memory("output1_data", BYTE_SIZE)
        else:
            inputs[0].set_data_from_numpy(INPUT0[None])
            inputs[1].set_data_from_numpy(second[None])
            outputs[0].unset_shared_memory()
            outputs[1].unset_shared_memory()
        results = client.infer(model_name="simple", inputs=inputs, outputs=outputs)
        got = []
        for name in ("OUTPUT0", "OUTPUT1"):
            if use_shared_memory:
                datatype, shape = output_meta(door, results.get_output(name))
                handle = handles[f"output{name[-1]}_data"]
                got.append(shm.get_contents_as_numpy(handle, utils.triton_to_np_dtype(datatype), shape))
            else:
                got.append(results.as_numpy(name))
        np.testing.assert_array_equal(got[0][0], INPUT0 + second)
        np.testing.assert_array_equal(got[1][0], INPUT0 - second)

    infer_and_validate(True)
    infer_and_validate(False)
    infer_and_validate(True)
    client.close()


# -- what the server lists and keeps ------------------------------------------------------------------------------


def test_metadata_lists_the_extension_only_when_it_is_on(repo: Path, server: ServerThread, start_server: Any) -> None:
    off = start_server(repo)
    for running, listed in ((server, True), (off, False)):
        with grpcclient.InferenceServerClient(running.grpc_address) as client:
            assert ("system_shared_memory" in client.get_server_metadata().extensions) is listed
        rest = httpclient.InferenceServerClient(running.rest_address)
        assert ("system_shared_memory" in rest.get_server_metadata()["extensions"]) is listed
        rest.close()


def _mapped(path: Path) -> bool:
    """Whether this process (the server runs in it) maps the object at `path` (one of Regions.plain)."""
    return str(path) in Path("/proc/self/maps").read_text()


def test_unregistering_a_region_in_use_waits_for_its_request(server: ServerThread, regions: Regions) -> None:
    """The request that named the region is answered through it; the name is free at once; the mapping goes when
    the request is done."""
    images = np.random.default_rng(0).random((1, 1, 4, 4), dtype=np.float32)
    path = regions.plain("slow", 4096)
    fd = os.open(path, os.O_RDWR)
    os.pwrite(fd, images.tobytes(), 0)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    client.register_system_shared_memory("slow", regions.key("slow"), 4096)
    image_input = grpcclient.InferInput("images", [1, 1, 4, 4], "FP32")
    image_input.set_shared_memory("slow", images.nbytes)
    logits = grpcclient.InferRequestedOutput("logits")
    logits.set_shared_memory("slow", 40, offset=1024)
    answered: list[Any] = []
    call = threading.Thread(target=lambda: answered.append(client.infer("slow", [image_input], outputs=[logits])))
    call.start()
    deadline = time.monotonic() + 10
    while server.server.gate.in_progress == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # past decoding, into the model's run
    client.unregister_system_shared_memory("slow")
    assert len(client.get_system_shared_memory_status(as_json=True)) == 0
    assert _mapped(path), "unmapped while its request runs"
    client.register_system_shared_memory("slow", regions.key("slow"), 4096)  # the name is free again
    client.unregister_system_shared_memory("slow")
    call.join(30)
    assert answered, "the request failed"
    written = np.frombuffer(os.pread(fd, 40, 1024), np.float32).reshape(1, 10)
    os.close(fd)
    np.testing.assert_allclose(written, onnx_models.classifier_reference(images), rtol=1e-4, atol=1e-5)
    assert not _mapped(path)
    client.close()


def test_shutdown_unmaps_every_region(repo: Path, regions: Regions) -> None:
    path = regions.plain("kept", 128)
    with ServerThread(loopback_settings(repo, allow_client_shm=True)) as running:
        with grpcclient.InferenceServerClient(running.grpc_address) as client:
            client.register_system_shared_memory("kept", regions.key("kept"), 128)
        assert _mapped(path)
    assert not _mapped(path)


@pytest.mark.parametrize("door", DOORS)
def test_an_object_shrunk_after_registration_is_refused_not_faulted(
    door: str, server: ServerThread, regions: Regions
) -> None:
    handle = regions.create("shrinks", 8192)
    client, lib = client_for(door, server), module_for(door)
    client.register_system_shared_memory("shrinks", regions.key("shrinks"), 8192)
    os.truncate(Path(SHM_DIR, regions.key("shrinks").lstrip("/")), 4096)  # its client cut it short
    inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("shrinks", BYTE_SIZE, offset=4096 + 64)  # on the page that is gone
    inputs[1].set_data_from_numpy(INPUT1[None])
    with pytest.raises(InferenceServerException) as refused:
        client.infer("simple", inputs)
    assert code_of(refused.value) == expected(door, "FAILED_PRECONDITION", 412)
    assert "shrunk to 4096 bytes" in refused.value.message()
    inputs[0] = lib.InferInput("INPUT0", [1, 16], "INT32")  # set_shared_memory(offset=0) keeps an offset set before
    inputs[0].set_shared_memory("shrinks", BYTE_SIZE)  # the page that is left still serves
    shm.set_shared_memory_region(handle, [INPUT0])
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0")[0], INPUT0 + 1)
    client.close()


# -- refusals ---------------------------------------------------------------------------------------------------


def _simple_inputs(lib: Any, region: str, byte_size: int, offset: int = 0) -> list[Any]:
    inputs = [lib.InferInput("INPUT0", [1, 16], "INT32"), lib.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(region, byte_size, offset=offset)
    inputs[1].set_data_from_numpy(INPUT1[None])
    return inputs


@pytest.mark.parametrize("door", DOORS)
def test_ranges_are_checked_against_the_region(door: str, server: ServerThread, regions: Regions) -> None:
    client, lib = client_for(door, server), module_for(door)
    regions.create("small", 100)
    client.register_system_shared_memory("small", regions.key("small"), 100)
    cases: list[tuple[list[Any], list[Any], str]] = [
        (_simple_inputs(lib, "small", BYTE_SIZE, offset=64), [], "runs past the end of shared memory region 'small'"),
        (_simple_inputs(lib, "small", 32), [], "shared_memory_byte_size is 32"),  # [1,16] INT32 needs 64
        (_simple_inputs(lib, "small", BYTE_SIZE, offset=200), [], "(100 bytes)"),
    ]
    too_small = lib.InferRequestedOutput("OUTPUT0")
    too_small.set_shared_memory("small", 16)
    cases.append((_simple_inputs(lib, "small", BYTE_SIZE), [too_small], "more than its shared_memory_byte_size 16"))
    for inputs, outputs, words in cases:
        with pytest.raises(InferenceServerException) as refused:
            client.infer("simple", inputs, outputs=outputs or None)
        assert code_of(refused.value) == expected(door, "INVALID_ARGUMENT", 400), refused.value.message()
        assert words in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("simple", _simple_inputs(lib, "nowhere", BYTE_SIZE))
    assert code_of(unknown.value) == expected(door, "NOT_FOUND", 404)
    assert "Unable to find shared memory region: 'nowhere'" in unknown.value.message()
    with pytest.raises(InferenceServerException) as status:
        client.get_system_shared_memory_status("nowhere")
    assert code_of(status.value) == expected(door, "NOT_FOUND", 404)
    client.unregister_system_shared_memory("nowhere")  # Triton's rule: unregistering an unknown name is no error
    client.close()


@pytest.mark.parametrize("door", DOORS)
def test_registration_refusals(door: str, server: ServerThread, regions: Regions, tmp_path: Path) -> None:
    client = client_for(door, server)
    regions.create("real", 256)
    real = regions.key("real")
    leaf = real.lstrip("/")
    link, fifo, foreign, shared = (Path(SHM_DIR, f"{leaf}_{kind}") for kind in ("link", "fifo", "foreign", "shared"))
    os.symlink(Path(SHM_DIR, leaf), link)
    os.mkfifo(fifo, 0o600)
    for path, mode in ((foreign, 0o600), (shared, 0o666)):
        path.write_bytes(bytes(256))
        os.chmod(path, mode)
    os.chown(foreign, 65534, 65534)  # nobody's
    try:
        invalid = {
            (real + "/../etc", 0, 16): "is not a shared memory object's name",
            ("/..", 0, 16): "is not a shared memory object's name",
            ("/", 0, 16): "is not a shared memory object's name",
            ("/" + leaf + "_link", 0, 16): "symbolic link",
            ("/" + leaf + "_fifo", 0, 16): "not a shared memory object",
            ("/" + leaf + "_foreign", 0, 16): "belongs to another user",
            ("/" + leaf + "_shared", 0, 16): "may be written by users other than its owner",
            ("/" + leaf + "_absent", 0, 16): "no shared memory object has this key",
            (real, 200, 100): "runs past the end of key",
            (real, 0, 0): "byte_size > 0",
        }
        for (key, offset, size), words in invalid.items():
            with pytest.raises(InferenceServerException) as refused:
                client.register_system_shared_memory("bad", key, size, offset=offset)
            assert code_of(refused.value) == expected(door, "INVALID_ARGUMENT", 400), (key, refused.value.message())
            assert words in refused.value.message(), (key, refused.value.message())
            assert "/dev/shm" not in refused.value.message()  # the client's terms, never the server's path
        client.register_system_shared_memory("real", real, 256)
        with pytest.raises(InferenceServerException) as twice:
            client.register_system_shared_memory("real", real, 128)
        assert code_of(twice.value) == expected(door, "ALREADY_EXISTS", 409)
        assert "shared memory region 'real' already in manager" in twice.value.message()
    finally:
        for path in (link, fifo, foreign, shared):
            path.unlink()
        client.close()


def test_shared_memory_inputs_count_against_the_request_limits(repo: Path, start_server: Any, regions: Regions
                                                              ) -> None:  # fmt: skip
    running = start_server(repo, allow_client_shm=True, max_request_tensor_bytes=100)
    regions.create("big", BYTE_SIZE)
    with grpcclient.InferenceServerClient(running.grpc_address) as client:
        client.register_system_shared_memory("big", regions.key("big"), BYTE_SIZE)
        inputs = _simple_inputs(grpcclient, "big", BYTE_SIZE)  # 64 bytes in shared memory + 64 in the request
        with pytest.raises(InferenceServerException) as refused:
            client.infer("simple", inputs)
    assert code_of(refused.value) == "StatusCode.INVALID_ARGUMENT"
    assert "max_request_tensor_bytes" in refused.value.message()


@pytest.mark.parametrize("door", DOORS)
def test_off_by_default_and_says_how_to_turn_it_on(door: str, repo: Path, start_server: Any, regions: Regions) -> None:
    running = start_server(repo)
    client, lib = client_for(door, running), module_for(door)
    path = regions.plain("any", 128)
    calls = [
        lambda: client.get_system_shared_memory_status(),
        lambda: client.register_system_shared_memory("any", regions.key("any"), 128),
        lambda: client.unregister_system_shared_memory(),
        lambda: client.infer("simple", _simple_inputs(lib, "any", BYTE_SIZE)),
    ]
    for call in calls:
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert code_of(refused.value) == expected(door, "UNIMPLEMENTED", 501)
        assert "--allow-client-shm" in refused.value.message()
    assert not _mapped(path)
    client.close()


@pytest.mark.parametrize("door", DOORS)
def test_cuda_shared_memory_is_refused_as_unsupported(door: str, server: ServerThread) -> None:
    client = client_for(door, server)
    calls = [
        lambda: client.get_cuda_shared_memory_status(),
        lambda: client.register_cuda_shared_memory("gpu", "aGFuZGxl", 0, 64),  # base64 of an IPC handle
    ]
    for call in calls:
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert code_of(refused.value) == expected(door, "UNIMPLEMENTED", 501)
        assert "CUDA shared memory is not supported" in refused.value.message()
    client.unregister_cuda_shared_memory()  # nothing registered, nothing to do: perf_analyzer's clean-up calls it
    client.close()


def test_shared_memory_calls_need_a_token(repo: Path, start_server: Any, regions: Regions) -> None:
    running = start_server(repo, allow_client_shm=True, auth_tokens=(TOKEN,))
    regions.create("guarded", 128)
    with grpc.insecure_channel(running.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        register = pb.SystemSharedMemoryRegisterRequest(name="guarded", key=regions.key("guarded"), byte_size=128)
        calls = [
            lambda metadata: stub.SystemSharedMemoryRegister(register, metadata=metadata, timeout=10),
            lambda metadata: stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(), metadata=metadata),
            lambda metadata: stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(),
                                                               metadata=metadata),
            lambda metadata: stub.CudaSharedMemoryUnregister(pb.CudaSharedMemoryUnregisterRequest(), metadata=metadata),
        ]  # fmt: skip
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call(())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            call((("authorization", f"Bearer {TOKEN}"),))
    rest = httpclient.InferenceServerClient(running.rest_address)
    for call in (
        lambda headers: rest.register_system_shared_memory("guarded", regions.key("guarded"), 128, headers=headers),
        lambda headers: rest.get_system_shared_memory_status(headers=headers),
        lambda headers: rest.unregister_system_shared_memory(headers=headers),
    ):
        with pytest.raises(InferenceServerException) as denied:
            call(None)
        assert code_of(denied.value) == "401"
        call({"Authorization": f"Bearer {TOKEN}"})
    rest.close()


def test_the_switch_reads_as_triton_s_flag_and_from_the_environment() -> None:
    assert not settings_from_args([], env={}).allow_client_shm
    for argv in (["--allow-client-shm"], ["--allow-client-shm=true"], ["--allow-client-shm", "1"]):
        assert settings_from_args(argv, env={}).allow_client_shm, argv
    assert not settings_from_args(["--allow-client-shm=false"], env={"CNNSERVE_ALLOW_CLIENT_SHM": "1"}).allow_client_shm
    assert settings_from_args([], env={"CNNSERVE_ALLOW_CLIENT_SHM": "true"}).allow_client_shm
    with pytest.raises(SystemExit):
        settings_from_args(["--allow-client-shm=maybe"], env={})


def test_a_stream_reads_and_writes_regions_too(server: ServerThread, regions: Regions) -> None:
    """ModelStreamInfer takes the same path: inputs from a region, the output into one, the reply without its data."""
    handle = regions.create("stream", BYTE_SIZE * 3)
    shm.set_shared_memory_region(handle, [INPUT0, INPUT1])
    answers: list[Any] = []
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        client.register_system_shared_memory("stream", regions.key("stream"), BYTE_SIZE * 3)
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory("stream", BYTE_SIZE)
        inputs[1].set_shared_memory("stream", BYTE_SIZE, offset=BYTE_SIZE)
        output = grpcclient.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory("stream", BYTE_SIZE, offset=BYTE_SIZE * 2)
        client.start_stream(callback=lambda result, error: answers.append(error or result))
        client.async_stream_infer("simple", inputs, outputs=[output])
        client.stop_stream()
    assert len(answers) == 1 and not isinstance(answers[0], InferenceServerException), answers
    assert answers[0].get_response().raw_output_contents == [b""]
    written = shm.get_contents_as_numpy(handle, np.int32, [1, 16], offset=BYTE_SIZE * 2)
    np.testing.assert_array_equal(written[0], INPUT0 + INPUT1)
