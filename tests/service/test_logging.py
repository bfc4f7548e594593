"""The logging extension: GET/POST /v2/logging and gRPC LogSettings, with tritonclient's get_log_settings and
update_log_settings, and what each setting does to the records Python's logging lets through.

Records are made here on a logger below `cnnserve`, as the server's modules log, and read back from pytest's
capture handler, which sits among the root logger's handlers as the CLI's console handler does.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.conftest import ServerThread

PROBE = logging.getLogger("cnnserve.service.probe")
SETTINGS = {"log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format"}


@pytest.fixture
def server(tmp_path: Path, start_server: Any) -> ServerThread:
    onnx_models.write_planes(tmp_path)
    return start_server(tmp_path)  # type: ignore[no-any-return]


def grpc_settings(server: ServerThread, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """tritonclient.grpc's answer, flattened to Triton's JSON form."""
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        if changes is None:
            answer = client.get_log_settings(as_json=True)
        else:
            answer = client.update_log_settings(changes, as_json=True)
    return {name: next(iter(value.values())) for name, value in answer["settings"].items()}


def post(server: ServerThread, document: object) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{server.rest_url}/v2/logging",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def emitted(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The probe records that got through since the last call, as 'LEVEL message'."""
    records = [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == PROBE.name]
    caplog.clear()
    return records


def probe_every_level() -> None:
    PROBE.debug("event=probe")
    PROBE.info("event=probe")
    PROBE.warning("event=probe")
    PROBE.error("event=probe")


def test_logging_is_listed_and_both_doors_read_the_same_settings(server: ServerThread) -> None:
    with triton_http.InferenceServerClient(server.rest_address) as http:
        assert "logging" in http.get_server_metadata()["extensions"]
        over_http = http.get_log_settings()
    with triton_grpc.InferenceServerClient(server.grpc_address) as client:
        assert "logging" in client.get_server_metadata().extensions
    assert set(over_http) == SETTINGS
    assert grpc_settings(server) == over_http
    assert over_http["log_file"] == "" and over_http["log_format"] == "default"
    assert all(isinstance(over_http[name], bool) for name in ("log_info", "log_warning", "log_error"))


def test_verbose_level_lets_debug_records_through(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    after = grpc_settings(server, {"log_verbose_level": 2, "log_info": True, "log_warning": True, "log_error": True})
    assert after["log_verbose_level"] == 2
    probe_every_level()
    assert emitted(caplog) == ["DEBUG event=probe", "INFO event=probe", "WARNING event=probe", "ERROR event=probe"]
    assert grpc_settings(server, {"log_verbose_level": 0})["log_verbose_level"] == 0
    probe_every_level()
    assert emitted(caplog) == ["INFO event=probe", "WARNING event=probe", "ERROR event=probe"]


def test_the_switches_are_independent(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    """Python's levels are thresholds; Triton's switches are not: warnings off with info on drops warnings only."""
    with triton_http.InferenceServerClient(server.rest_address) as http:
        after = http.update_log_settings({"log_info": True, "log_warning": False, "log_error": True})
        assert (after["log_info"], after["log_warning"], after["log_error"]) == (True, False, True)
        probe_every_level()
        assert emitted(caplog) == ["INFO event=probe", "ERROR event=probe"]
        http.update_log_settings({"log_info": False, "log_warning": True})
        probe_every_level()
        assert emitted(caplog) == ["WARNING event=probe", "ERROR event=probe"]
        http.update_log_settings({"log_error": False, "log_warning": False})
        probe_every_level()
        assert emitted(caplog) == []
        logging.getLogger("aiohttp.probe").error("event=probe")  # other libraries' records too
        assert not [r for r in caplog.records if r.name == "aiohttp.probe"]
        assert http.get_log_settings()["log_error"] is False


def test_iso8601_stamps_lines_in_utc(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    original = caplog.handler.formatter
    grpc_settings(server, {"log_format": "ISO8601", "log_info": True})
    PROBE.info("event=probe")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO cnnserve\.service\.probe event=probe", caplog.text.strip()
    )
    assert grpc_settings(server)["log_format"] == "ISO8601"
    grpc_settings(server, {"log_format": "default"})
    assert caplog.handler.formatter is original


def test_log_file_is_never_set(server: ServerThread, tmp_path: Path) -> None:
    target = tmp_path / "chosen-by-a-client.log"
    with pytest.raises(InferenceServerException) as info:
        grpc_settings(server, {"log_file": str(target)})
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    status, answer = post(server, {"log_file": str(target)})
    assert status == 501 and "log_file" in answer["error"]
    assert not target.exists()
    status, answer = post(server, {"log_file": None, "log_verbose_level": 1})  # null: left as it is
    assert status == 200 and answer["log_file"] == "" and answer["log_verbose_level"] == 1


@pytest.mark.parametrize(
    "document",
    [
        {"log_info": "yes"},
        {"log_info": 1},
        {"log_verbose_level": -1},
        {"log_verbose_level": True},
        {"log_verbose_level": 1.5},
        {"log_format": "json"},
        {"log_info": False, "log_format": "json"},  # the good part is not applied either
        {"log_warnings": False},  # Triton's own example spells it so; it names nothing
        [],
    ],
)
def test_bad_settings_are_refused_and_change_nothing(server: ServerThread, document: object) -> None:
    before = grpc_settings(server)
    status, answer = post(server, document)
    assert status == 400, answer
    assert grpc_settings(server) == before


def test_a_grpc_value_of_the_wrong_kind_is_invalid_argument(server: ServerThread) -> None:
    request = pb.LogSettingsRequest()
    request.settings["log_info"].uint32_param = 1
    with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).LogSettings(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stopping_the_server_undoes_what_clients_set(tmp_path: Path, start_server: Any) -> None:
    logger = logging.getLogger("cnnserve")
    level = logger.level
    root_handlers = logging.getLogger().handlers
    formatters = [h.formatter for h in root_handlers]
    onnx_models.write_planes(tmp_path)
    server = start_server(tmp_path)
    grpc_settings(server, {"log_verbose_level": 1, "log_warning": False, "log_format": "ISO8601"})
    assert logger.level == logging.DEBUG
    server.stop()
    assert logger.level == level
    assert [h.formatter for h in root_handlers] == formatters
    assert not [f for h in root_handlers for f in h.filters if type(f).__name__ == "_Gate"]


def test_log_settings_need_the_token(tmp_path: Path, start_server: Any) -> None:
    onnx_models.write_planes(tmp_path)
    server = start_server(tmp_path, auth_tokens=("a-token-of-32-characters-or-more!!",))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.rest_url}/v2/logging", timeout=30)
    assert info.value.code == 401
    request = urllib.request.Request(
        f"{server.rest_url}/v2/logging", headers={"Authorization": "Bearer a-token-of-32-characters-or-more!!"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert set(json.loads(reply.read())) == SETTINGS
    with grpc.insecure_channel(server.grpc_address) as channel, pytest.raises(grpc.RpcError) as rpc:
        pb_grpc.GRPCInferenceServiceStub(channel).LogSettings(pb.LogSettingsRequest(), timeout=10)
    assert rpc.value.code() == grpc.StatusCode.UNAUTHENTICATED
