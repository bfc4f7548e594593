"""Who gets in, over what, and how much they may send: TLS and mutual TLS on both listeners (certificates from a CA
the test makes), bearer tokens (missing, wrong, rotated), open health, repository path safety, request limits.
All against real servers, with tritonclient and the project's client."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.client.cli import main as client_main
from cnnserve.client.client import Client
from cnnserve.client.errors import ClientError
from cnnserve.service.edge.cli import settings_from_args
from cnnserve.service.edge.server import InferenceServer
from cnnserve.service.settings import ConfigError, Settings
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings
from tests.service import graphs
from tests.service.certs import Pki, make_pki

TOKEN, ENV_TOKEN, NEW_TOKEN = "tok-3f9c2a7e51d84b06", "env-token-8d1e0b", "tok-rotated-c41f77"
BEARER = (("authorization", f"Bearer {TOKEN}"),)


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def infer_request(batch: np.ndarray, model: str = "classifier", **fields: Any) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=list(batch.shape))],
        raw_input_contents=[batch.tobytes()],
        **fields,
    )


def logits_of(reply: pb.ModelInferResponse) -> np.ndarray:
    return np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(-1, 10)


def status_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()  # type: ignore[no-any-return]


def https_status(url: str, context: ssl.SSLContext, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    onnx_models.write_classifier(root)
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- settings --------------------------------------------------------------------------------------------------


def test_security_settings_from_environment_and_flags(tmp_path: Path) -> None:
    env = {
        "CNNSERVE_TLS_CERT_FILE": "/certs/server.pem",
        "CNNSERVE_TLS_KEY_FILE": "/certs/server.key",
        "CNNSERVE_TLS_CLIENT_CA_FILE": "/certs/ca.pem",
        "CNNSERVE_AUTH_TOKENS": f"{TOKEN}, {ENV_TOKEN}",
        "CNNSERVE_AUTH_OPEN_HEALTH": "false",
        "CNNSERVE_MAX_CONCURRENT_STREAMS": "7",
    }
    settings = Settings.from_env(env)
    assert settings.tls_cert_file == Path("/certs/server.pem") and settings.tls_client_ca_file == Path("/certs/ca.pem")
    assert settings.auth_tokens == (TOKEN, ENV_TOKEN) and settings.auth and settings.tls
    assert not settings.auth_open_health and settings.max_concurrent_streams == 7
    assert TOKEN not in repr(settings)  # a settings dump in a log or traceback shows no token

    flags = settings_from_args(
        ["--auth-token-file", "tokens.txt", "--no-auth-open-health", "--max-elements-per-request", "10",
         "--max-request-tensor-bytes", "100", "--no-allow-insecure", "--tls-cert-file", "c.pem", "--tls-key-file",
         "k.pem"],
        env={},
    )  # fmt: skip
    assert flags.auth_token_file == Path("tokens.txt") and not flags.auth_open_health and not flags.allow_insecure
    assert (flags.max_elements_per_request, flags.max_request_tensor_bytes) == (10, 100)
    defaults = Settings()
    assert defaults.allow_insecure and not defaults.auth and not defaults.tls and defaults.auth_open_health


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"tls_cert_file": Path("c.pem")}, id="cert-without-key"),
        pytest.param({"tls_client_ca_file": Path("ca.pem")}, id="client-ca-without-tls"),
        pytest.param({"allow_insecure": False}, id="plaintext-not-allowed"),
        pytest.param({"max_concurrent_streams": 0}, id="no-streams"),
        pytest.param({"max_request_tensor_bytes": -1}, id="negative-bytes"),
        pytest.param({"max_jpeg_scans": 0}, id="no-jpeg-scans"),
    ],
)
def test_unusable_security_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Settings(**overrides)


def test_missing_tls_or_token_files_stop_the_start(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="tls_cert_file"):
        InferenceServer(loopback_settings(tmp_path, tls_cert_file=tmp_path / "nope.pem", tls_key_file=pki.server_key))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM"):
        InferenceServer(loopback_settings(tmp_path, tls_cert_file=not_pem, tls_key_file=pki.server_key))
    with pytest.raises(ConfigError, match="auth_token_file"):
        InferenceServer(loopback_settings(tmp_path, auth_token_file=tmp_path / "no-tokens.txt"))


def test_serve_command_names_an_unusable_file_in_one_line(tmp_path: Path) -> None:
    from cnnserve.service.edge.cli import main as serve_main

    with pytest.raises(SystemExit, match="auth_token_file"):
        serve_main(["--model-repository", str(tmp_path), "--auth-token-file", str(tmp_path / "missing")])


# -- TLS -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(repo: Path, pki: Pki) -> Iterator[ServerThread]:
    with ServerThread(loopback_settings(repo, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)) as server:
        yield server


def test_tls_works_with_tritonclient_and_the_projects_client(tls_server: ServerThread, pki: Pki) -> None:
    batch = images(3)
    with triton.InferenceServerClient(tls_server.grpc_address, ssl=True, root_certificates=str(pki.ca)) as client:
        assert client.is_server_ready()
        inp = triton.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        logits = client.infer("classifier", [inp]).as_numpy("logits")
    np.testing.assert_allclose(logits, onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
    with Client(tls_server.grpc_address, root_certificates=pki.ca, timeout=10) as ours:
        assert ours.health().ready and ours.health_check()
        answer = ours.infer("classifier", {"images": batch})["logits"]
    np.testing.assert_allclose(answer, onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)


def test_tls_refuses_plaintext_and_untrusted_certificates(tls_server: ServerThread, pki: Pki) -> None:
    with grpc.insecure_channel(tls_server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert status_of(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    with Client(tls_server.grpc_address, root_certificates=pki.other_ca, timeout=5) as wrong_ca:
        with pytest.raises(ClientError) as refused:
            wrong_ca.health()
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE


def test_http_port_speaks_tls_too(tls_server: ServerThread, pki: Pki) -> None:
    https = f"https://127.0.0.1:{tls_server.server.http_port}"
    assert https_status(f"{https}/v2/health/ready", ssl.create_default_context(cafile=pki.ca)) == 200
    assert https_status(f"{https}/metrics", ssl.create_default_context(cafile=pki.ca)) == 200
    with pytest.raises(urllib.error.URLError):  # someone else's CA: the certificate does not verify
        https_status(f"{https}/metrics", ssl.create_default_context(cafile=pki.other_ca))
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext HTTP to a TLS port gets no answer
        http_status(f"http://127.0.0.1:{tls_server.server.http_port}/metrics")


def test_client_cli_takes_a_ca_file_and_a_token_file(tls_server: ServerThread, pki: Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"# for the test\n{TOKEN}\n")
    args = ["--url", tls_server.grpc_address, "--tls-ca", str(pki.ca), "--token-file", str(token_file)]
    assert client_main(["health", *args]) == 0
    assert client_main(["health", "--url", tls_server.grpc_address, "--timeout-s", "3"]) == 1  # plaintext: refused


def test_mutual_tls_lets_in_only_certificates_the_ca_signed(repo: Path, pki: Pki, start_server: Any) -> None:
    server = start_server(repo, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca)
    address, batch = server.grpc_address, images(2)
    with Client(address, root_certificates=pki.ca, certificate_chain=pki.client_cert, private_key=pki.client_key) as ok:
        np.testing.assert_allclose(
            ok.infer("classifier", {"images": batch})["logits"], onnx_models.classifier_reference(batch), rtol=1e-5,
            atol=1e-5,
        )  # fmt: skip
    with triton.InferenceServerClient(
        address, ssl=True, root_certificates=str(pki.ca), private_key=str(pki.client_key),
        certificate_chain=str(pki.client_cert),
    ) as client:  # fmt: skip
        assert client.is_server_ready()
    for cert, key in ((None, None), (pki.stranger_cert, pki.stranger_key)):  # no certificate; a stranger's
        with Client(address, root_certificates=pki.ca, certificate_chain=cert, private_key=key, timeout=5) as c:
            with pytest.raises(ClientError) as refused:
                c.health()
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE

    https = f"https://127.0.0.1:{server.server.http_port}/metrics"
    with_cert = ssl.create_default_context(cafile=pki.ca)
    with_cert.load_cert_chain(pki.client_cert, pki.client_key)
    assert https_status(https, with_cert) == 200
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        https_status(https, ssl.create_default_context(cafile=pki.ca))


# -- bearer tokens ---------------------------------------------------------------------------------------------


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.txt"
    path.write_text(f"# team tokens\n{TOKEN}\n\n")
    return path


def replace_file(path: Path, text: str) -> None:
    """How an operator rotates: write a new file, rename it over the old one."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


def test_calls_without_a_valid_token_are_unauthenticated(
    repo: Path, token_file: Path, start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = start_server(
        repo, auth_token_file=token_file, auth_tokens=(ENV_TOKEN,), model_control_mode="explicit",
        startup_models=("classifier",),
    )  # fmt: skip
    batch = images(2)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        refusals = {
            "none": (),
            "wrong": (("authorization", "Bearer not-the-token"),),
            "no scheme": (("authorization", TOKEN),),
            "other scheme": (("authorization", f"Basic {TOKEN}"),),
            "empty": (("authorization", "Bearer "),),
            "prefix": (("authorization", f"Bearer {TOKEN[:-1]}"),),
        }
        for metadata in refusals.values():
            calls = protected_calls(stub, metadata)
            for call in calls:
                assert status_of(call) == grpc.StatusCode.UNAUTHENTICATED
        assert server.server.models.is_ready("classifier")  # the refused unload did nothing

        # Either token works, in either case of the scheme; the answer is the model's.
        for metadata in (BEARER, (("authorization", f"bearer {ENV_TOKEN}"),)):
            reply = stub.ModelInfer(infer_request(batch), metadata=metadata, timeout=10)
            np.testing.assert_allclose(logits_of(reply), onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)
        [streamed] = list(stub.ModelStreamInfer(iter([infer_request(batch)]), metadata=BEARER, timeout=10))
        assert not streamed.error_message

        # Health, readiness and reflection stay open for probes (auth_open_health defaults to true).
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest(service="ready")).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        assert stub.ServerReady(pb.ServerReadyRequest()).ready and stub.ServerLive(pb.ServerLiveRequest()).live
        assert http_status(f"{server.http_url}/metrics") == 200
        with urllib.request.urlopen(f"{server.http_url}/metrics") as page:
            assert b"cnnserve_unauthenticated_requests_total 36.0" in page.read()

    with triton.InferenceServerClient(server.grpc_address) as client:
        assert_token_required(client, batch)
    with Client(server.grpc_address, token=TOKEN) as ours:
        assert [m.name for m in ours.models()] == ["classifier"]
    with Client(server.grpc_address) as anonymous, pytest.raises(ClientError) as info:
        anonymous.models()
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED

    # Rotation: the file is replaced; the old token stops working at the next call, the new one works.
    replace_file(token_file, f"{NEW_TOKEN}\n")
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        old = lambda: stub.ModelInfer(infer_request(batch), metadata=BEARER, timeout=5)  # noqa: E731
        assert status_of(old) == grpc.StatusCode.UNAUTHENTICATED
        assert stub.ModelInfer(infer_request(batch), metadata=(("authorization", f"Bearer {NEW_TOKEN}"),)).outputs
        assert stub.ModelInfer(infer_request(batch), metadata=(("authorization", f"Bearer {ENV_TOKEN}"),)).outputs
        token_file.unlink()  # a vanished file accepts none of its tokens (fail closed); the fixed ones still work
        new = lambda: stub.ModelInfer(infer_request(batch), metadata=(("authorization", f"Bearer {NEW_TOKEN}"),))  # noqa: E731
        assert status_of(new) == grpc.StatusCode.UNAUTHENTICATED

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "event=unauthenticated" in logged and "event=auth_tokens_reloaded" in logged
    for secret in (TOKEN, ENV_TOKEN, NEW_TOKEN, TOKEN[:-1]):
        assert secret not in logged and secret not in caplog.text


def protected_calls(
    stub: pb_grpc.GRPCInferenceServiceStub, metadata: tuple[tuple[str, str], ...]
) -> list[Callable[[], object]]:
    """Inference, metadata and repository calls: none may be made without a valid token."""
    batch = images(2)
    return [
        lambda: stub.ModelInfer(infer_request(batch), metadata=metadata, timeout=5),
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="classifier"), metadata=metadata),
        lambda: stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=metadata),
        lambda: stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="classifier"), metadata=metadata),
        lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="classifier"), metadata=metadata),
        lambda: list(stub.ModelStreamInfer(iter([infer_request(batch)]), metadata=metadata, timeout=5)),
    ]


def test_closed_health_needs_a_token_too(repo: Path, start_server: Any) -> None:
    server = start_server(repo, auth_tokens=(TOKEN,), auth_open_health=False)
    with grpc.insecure_channel(server.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        check = lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)  # noqa: E731
        assert status_of(check) == grpc.StatusCode.UNAUTHENTICATED
        assert status_of(lambda: stub.ServerLive(pb.ServerLiveRequest())) == grpc.StatusCode.UNAUTHENTICATED
        assert health.Check(health_pb2.HealthCheckRequest(service=""), metadata=BEARER).status == 1
    for path in ("/metrics", "/v2/health/live"):
        assert http_status(f"{server.http_url}{path}") == 401
        assert http_status(f"{server.http_url}{path}", token="wrong") == 401
        assert http_status(f"{server.http_url}{path}", token=TOKEN) == 200


def assert_token_required(client: triton.InferenceServerClient, batch: np.ndarray) -> None:
    """tritonclient without a token is refused UNAUTHENTICATED; with the bearer token it gets correct logits."""
    inp = triton.InferInput("images", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("classifier", [inp])
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    logits = client.infer("classifier", [inp], headers={"authorization": f"Bearer {TOKEN}"}).as_numpy("logits")
    np.testing.assert_allclose(logits, onnx_models.classifier_reference(batch), rtol=1e-5, atol=1e-5)


def test_tls_and_token_together_with_tritonclient(repo: Path, pki: Pki, start_server: Any) -> None:
    server = start_server(repo, tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, auth_tokens=(TOKEN,))
    batch = images(1)
    with triton.InferenceServerClient(server.grpc_address, ssl=True, root_certificates=str(pki.ca)) as client:
        assert_token_required(client, batch)
    with Client(server.grpc_address, root_certificates=pki.ca, token=TOKEN) as ours:
        assert ours.infer("classifier", {"images": batch})["logits"].shape == (1, 10)


# -- repository paths ---------------------------------------------------------------------------------------------


def test_no_request_reaches_a_path_outside_the_repository(tmp_path: Path, start_server: Any) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    onnx_models.write_classifier(repo)
    onnx_models.write_classifier(outside, name="secret")
    (repo / "linked").symlink_to(outside / "secret", target_is_directory=True)  # a model folder that escapes
    onnx_models.write_classifier(repo, name="sneaky")
    (repo / "sneaky" / "2").symlink_to(
        outside / "secret" / "1", target_is_directory=True
    )  # a version folder that escapes
    server = start_server(repo, model_control_mode="explicit")
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name in ("../outside/secret", "..", "/etc", str(outside / "secret"), "linked", "a/b", "", ".hidden",
                     "classifier/../../outside/secret", "x" * 300, "secret"):  # fmt: skip
            load = pb.RepositoryModelLoadRequest(model_name=name)
            assert status_of(partial(stub.RepositoryModelLoad, load)) == grpc.StatusCode.NOT_FOUND, name
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="sneaky"))
        index = {(m.name, m.version): m.state for m in stub.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        assert index == {("classifier", ""): "UNAVAILABLE", ("sneaky", "1"): "READY"}  # no "linked", no version 2
        for version in ("2", "../1", "-1", "01", "²", "1" * 5000, " 1", "1.0"):
            request = infer_request(images(1), model="sneaky", model_version=version)
            assert status_of(partial(stub.ModelInfer, request, timeout=5)) == grpc.StatusCode.NOT_FOUND, version
        assert stub.ModelInfer(infer_request(images(1), model="sneaky", model_version="1")).outputs


# -- limits -----------------------------------------------------------------------------------------------------


def strings_request(count: int) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="strings",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[count])],
        raw_input_contents=[b"\0\0\0\0" * count],  # `count` empty strings: 4 bytes each on the wire
    )


def test_request_limits_are_clear_errors(tmp_path: Path, start_server: Any) -> None:
    onnx_models.write_classifier(tmp_path, max_batch_size=256)
    graphs.strings(tmp_path / "strings" / "1" / "model.onnx")
    graphs.write_config(tmp_path / "strings", max_batch_size=0)
    server = start_server(
        tmp_path, max_elements_per_request=16 * 32, max_request_tensor_bytes=16 * 1024, max_message_bytes=6 * 1024
    )
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(infer_request(images(32))).outputs  # 512 elements: at the limit
        over = status_of(lambda: stub.ModelInfer(infer_request(images(33))))
        assert over == grpc.StatusCode.INVALID_ARGUMENT  # 528 elements

        # 300 empty strings are 1.2 KB on the wire but ~19 KB to hold: charged for what they cost, refused.
        assert status_of(lambda: stub.ModelInfer(strings_request(300))) == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.ModelInfer(strings_request(100)).outputs[0].shape == [100]

        # Receive and send limits: 7 KB in is refused; 2 KB in whose top-10 answer is ~7 KB out is refused too.
        assert status_of(lambda: stub.ModelInfer(infer_request(images(110)))) == grpc.StatusCode.RESOURCE_EXHAUSTED
        request = infer_request(images(32))
        request.outputs.add(name="logits").parameters["classification"].int64_param = 10
        assert status_of(lambda: stub.ModelInfer(request)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerLive(pb.ServerLiveRequest()).live


def test_max_concurrent_streams_refuses_the_next_call_and_frees_slots(repo: Path, start_server: Any) -> None:
    server = start_server(repo, max_concurrent_streams=2)
    channel = grpc.insecure_channel(server.grpc_address)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    holds = [threading_stream(stub) for _ in range(2)]  # two idle ModelStreamInfer calls hold both slots
    try:
        code = status_of(lambda: stub.ModelInfer(infer_request(images(1)), timeout=5))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        for release, call in holds:
            release()
            call.cancel()
    channel.close()
    with grpc.insecure_channel(server.grpc_address) as fresh:  # the slots were given back
        stub = pb_grpc.GRPCInferenceServiceStub(fresh)
        for _ in range(3):
            assert wait_ok(partial(stub.ModelInfer, infer_request(images(1)), timeout=5))


def threading_stream(stub: pb_grpc.GRPCInferenceServiceStub) -> tuple[Callable[[], None], Any]:
    """An open ModelStreamInfer that has sent one request and got its answer; release() lets it end."""
    done = threading.Event()

    def requests() -> Iterator[pb.ModelInferRequest]:
        yield infer_request(images(1))
        done.wait(30)

    call = stub.ModelStreamInfer(requests(), timeout=30)
    assert not next(call).error_message
    return done.set, call


def wait_ok(call: Callable[[], object], timeout_s: float = 5.0) -> bool:
    """A freed slot is given back when the server has seen the cancellation: retry briefly."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            call()
            return True
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- malformed messages ------------------------------------------------------------------------------------------


def test_bytes_that_are_no_protobuf_message_are_invalid_argument(tls_server: ServerThread, pki: Pki) -> None:
    """gRPC alone answers UNKNOWN with the parser's exception text; the guard answers like any other bad input."""
    garbage = b"\x0a\x05\xff\xfe\xfd\xfc\xfb"  # field 1 (a string) holding bytes that are not UTF-8
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    with grpc.secure_channel(tls_server.grpc_address, credentials) as channel:
        for method in ("/inference.GRPCInferenceService/ModelInfer", "/inference.GRPCInferenceService/ModelMetadata",
                       "/grpc.health.v1.Health/Check"):  # fmt: skip
            call = partial(channel.unary_unary(method), garbage, timeout=5)
            assert status_of(call) == grpc.StatusCode.INVALID_ARGUMENT, method
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
        assert status_of(lambda: list(watch(garbage, timeout=5))) == grpc.StatusCode.INVALID_ARGUMENT
        for method in ("/inference.GRPCInferenceService/ModelStreamInfer",
                       "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"):  # fmt: skip
            stream = channel.stream_stream(method)
            replies = partial(lambda s: list(s(iter([garbage]), timeout=5)), stream)
            assert status_of(replies) == grpc.StatusCode.INVALID_ARGUMENT, method
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready  # and the server is none the worse


def test_load_failures_reach_clients_without_server_paths(tmp_path: Path, start_server: Any) -> None:
    """A bad config and a corrupt graph: the index reasons and an explicit load's refusal name the file inside the
    repository (`bad/config.json`), never where the repository lies on the server."""
    repo = tmp_path / "a-private-place" / "repo"
    onnx_models.write_corrupt(repo, name="broken")
    onnx_models.write_classifier(repo, name="bad")
    (repo / "bad" / "config.json").write_text("{not json")
    running = start_server(repo, model_control_mode="explicit", startup_models=("broken", "bad"))
    client = triton.InferenceServerClient(running.grpc_address)
    reasons = {row.name: row.reason for row in client.get_model_repository_index().models}
    assert "bad/config.json" in reasons["bad"] and "broken" in reasons["broken"]
    for name in ("broken", "bad"):
        assert reasons[name] and "a-private-place" not in reasons[name], reasons[name]
        with pytest.raises(InferenceServerException) as caught:
            client.load_model(name)
        assert "a-private-place" not in str(caught.value.message())


def test_a_config_linked_from_outside_the_model_folder_is_refused(tmp_path: Path, start_server: Any) -> None:
    """config.json gets the check model files get: a symlink out of its folder is a load error, never read."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"max_batch_size": 4}')
    repo = tmp_path / "repo"
    onnx_models.write_classifier(repo, name="linked")
    (repo / "linked" / "config.json").unlink()
    os.symlink(secret, repo / "linked" / "config.json")
    onnx_models.write_classifier(repo, name="plain")
    running = start_server(repo)
    client = triton.InferenceServerClient(running.grpc_address)
    assert client.is_model_ready("plain") and not client.is_model_ready("linked")
    reason = {row.name: row.reason for row in client.get_model_repository_index().models}["linked"]
    assert "link" in reason and str(tmp_path) not in reason
