"""Request traces through a real server exporting OTLP/HTTP to a real receiver: the caller's trace continued on both
doors, the queue wait apart from the run, one run span linked to every request it served, refusals as events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.api import grpc_service_pb2_grpc as pb_grpc
from cnnserve.service import tracing
from cnnserve.service.edge import tracing as edge_tracing
from cnnserve.service.errors import FailedPrecondition, InvalidInput
from cnnserve.service.protocol.trace_settings import TraceSettings
from cnnserve.service.settings import ConfigError, Settings
from tests import onnx_models
from tests.conftest import ServerThread, loopback_settings


@dataclass
class SpanRecord:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, object]
    events: list[tuple[str, dict[str, object]]]
    event_ns: dict[str, int]
    links: list[tuple[str, str]]  # (trace id, span id)
    error: bool
    service: str


def _value(value: AnyValue) -> object:
    return getattr(value, value.WhichOneof("value") or "string_value")


@dataclass
class Receiver:
    """An OTLP/HTTP trace endpoint: POST /v1/traces, protobuf ExportTraceServiceRequest bodies."""

    port: int = 0
    spans: list[SpanRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, body: bytes) -> None:
        message = ExportTraceServiceRequest.FromString(body)
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    record = SpanRecord(
                        s.name,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        {a.key: _value(a.value) for a in s.attributes},
                        [(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in s.events],
                        {e.name: e.time_unix_nano for e in s.events},
                        [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        s.status.code == Status.STATUS_CODE_ERROR,
                        str(resource.get("service.name")),
                    )
                    with self.lock:
                        self.spans.append(record)

    def wait_for(self, found: Callable[[list[SpanRecord]], bool], timeout_s: float = 10.0) -> list[SpanRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                spans = list(self.spans)
            if found(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.02)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
                self.send_response(404)
            else:
                receiver.take(body)
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    collected = Receiver()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(collected))
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    collected.port = http.server_address[1]
    yield collected
    http.shutdown()
    http.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("repo")
    # Held for company up to 0.3 s, so requests sent together share a batch.
    onnx_models.write_classifier(
        repo, dynamic_batching={"max_queue_delay_us": 300_000, "max_queue_size": 256, "wait_when_idle": True}
    )
    # One request per batch, 0.1-0.3 s each, room for two waiting: easy to fill (as in test_server_metrics.py).
    onnx_models.write_slow_classifier(
        repo, work=150, max_batch_size=1, dynamic_batching={"max_queue_delay_us": 0, "max_queue_size": 2}
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_TRACES_EXPORTER", "otlp")
        env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        env.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        env.delenv("OTEL_SERVICE_NAME", raising=False)
        with ServerThread(loopback_settings(repo, trace=True)) as running:
            yield running
    assert tracing.tracer is None  # stop turned it off


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


def infer_request(model: str, batch: np.ndarray) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=list(batch.shape))],
        raw_input_contents=[batch.tobytes()],
    )


def caller(seed: int) -> tuple[str, str, str]:
    """A caller's (trace id, span id, traceparent), as an instrumented client would send them."""
    rng = np.random.default_rng(seed)
    trace_id, span_id = rng.bytes(16).hex(), rng.bytes(8).hex()
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def children(spans: list[SpanRecord], parent: SpanRecord) -> dict[str, SpanRecord]:
    return {s.name: s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id}


def request_span(spans: list[SpanRecord], trace_id: str) -> SpanRecord | None:
    return next((s for s in spans if s.trace_id == trace_id and "cnnserve.outcome" in s.attributes), None)


def run_of(spans: list[SpanRecord], request: SpanRecord) -> list[SpanRecord]:
    return [s for s in spans if s.name == "batch run" and (request.trace_id, request.span_id) in s.links]


def test_grpc_request_continues_the_callers_trace(server: ServerThread, receiver: Receiver) -> None:
    trace_id, parent_id, traceparent = caller(1)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(infer_request("classifier", images(3, 1)), metadata=(("traceparent", traceparent),), timeout=10)

    def complete(spans: list[SpanRecord]) -> bool:
        request = request_span(spans, trace_id)
        return request is not None and bool(run_of(spans, request)) and "queue wait" in children(spans, request)

    spans = receiver.wait_for(complete)
    request = request_span(spans, trace_id)
    assert request is not None
    assert request.name == "ModelInfer" and request.parent_span_id == parent_id
    assert request.service == "cnnserve"
    assert request.attributes["cnnserve.model.name"] == "classifier"
    assert request.attributes["cnnserve.model.version"] == "1"
    assert request.attributes["cnnserve.request.items"] == 3
    assert request.attributes["cnnserve.outcome"] == "success"
    assert request.attributes["cnnserve.execution_provider"] == "CPUExecutionProvider"
    assert not request.error
    assert [name for name, _ in request.events] == ["admitted", "decoded", "answered"]
    steps = children(spans, request)
    # Decode and encode are events (a span costs several times more); the run is linked to every request it
    # served, and the child of the first of them (this one, alone in its batch).
    assert steps.keys() == {"queue wait", "batch run"}
    [run] = run_of(spans, request)
    assert run.parent_span_id == request.span_id
    wait = steps["queue wait"]
    # The queue wait ends as the run starts.
    assert wait.end_ns == run.start_ns and wait.start_ns <= wait.end_ns <= run.end_ns
    assert request.event_ns["decoded"] <= wait.start_ns
    assert run.end_ns <= request.event_ns["answered"] <= request.end_ns
    assert run.attributes["cnnserve.model.name"] == "classifier"
    assert run.attributes["cnnserve.batch.items"] >= 3  # type: ignore[operator]


def test_rest_request_continues_the_callers_trace(server: ServerThread, receiver: Receiver) -> None:
    trace_id, parent_id, traceparent = caller(2)
    batch = images(2, 2)
    body = json.dumps(
        {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(batch.shape), "data": batch.ravel().tolist()}]}
    ).encode()
    headers = {"Content-Type": "application/json", "traceparent": traceparent, "tracestate": "vendor=1"}
    post = urllib.request.Request(f"{server.rest_url}/v2/models/classifier/infer", body, headers, method="POST")
    with urllib.request.urlopen(post, timeout=10) as reply:
        assert reply.status == 200

    def complete(spans: list[SpanRecord]) -> bool:
        request = request_span(spans, trace_id)
        return request is not None and "queue wait" in children(spans, request)

    spans = receiver.wait_for(complete)
    request = request_span(spans, trace_id)
    assert request is not None
    assert request.name == "POST /v2/models/{model}/infer"  # the route: one name for every model
    assert request.parent_span_id == parent_id
    assert request.attributes["cnnserve.model.name"] == "classifier"
    assert request.attributes["cnnserve.request.items"] == 2
    assert "queue wait" in children(spans, request)
    assert [name for name, _ in request.events] == ["admitted", "decoded", "answered"]


def test_requests_that_shared_a_batch_link_to_one_run_span(server: ServerThread, receiver: Receiver) -> None:
    callers = [caller(100 + i) for i in range(4)]
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        futures = [
            stub.ModelInfer.future(infer_request("classifier", images(1, i)), metadata=(("traceparent", tp),))
            for i, (_, _, tp) in enumerate(callers)
        ]
        for future in futures:
            future.result()
    trace_ids = {trace_id for trace_id, _, _ in callers}

    def complete(spans: list[SpanRecord]) -> bool:
        requests = [request_span(spans, t) for t in trace_ids]
        return all(r is not None and run_of(spans, r) for r in requests)

    spans = receiver.wait_for(complete)
    requests = [request_span(spans, t) for t in trace_ids]
    runs: dict[str, SpanRecord] = {}
    for request in requests:
        assert request is not None
        [run] = run_of(spans, request)  # one run span per request, never a copy per request
        runs[run.span_id] = run
    shared = [run for run in runs.values() if len(run.links) > 1]
    assert shared, "the four requests, sent together to a model that waits for company, ran in one batch at least"
    for run in shared:
        assert run.attributes["cnnserve.batch.requests"] == len(run.links)
        # The run belongs to the first request's trace (a parent-based sampler keeps it with that one).
        assert (run.trace_id, run.parent_span_id) in run.links


def test_a_refusal_is_an_event_and_an_error(server: ServerThread, receiver: Receiver) -> None:
    callers = [caller(200 + i) for i in range(8)]
    codes = []
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        futures = [
            stub.ModelInfer.future(infer_request("slow", images(1, i)), metadata=(("traceparent", tp),), timeout=30)
            for i, (_, _, tp) in enumerate(callers)
        ]
        for future in futures:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    refused_trace = callers[codes.index(grpc.StatusCode.RESOURCE_EXHAUSTED)][0]
    spans = receiver.wait_for(lambda spans: request_span(spans, refused_trace) is not None)
    request = request_span(spans, refused_trace)
    assert request is not None
    assert request.error
    assert request.attributes["cnnserve.outcome"] == "resource_exhausted"
    assert ("refused", "queue_full") in [(name, attributes.get("reason")) for name, attributes in request.events]
    assert not run_of(spans, request)  # refused on arrival: it never ran


def test_a_request_without_traceparent_starts_its_own_trace(server: ServerThread, receiver: Receiver) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(infer_request("classifier", images(1, 7)), timeout=10)
    assert reply.model_name == "classifier"
    spans = receiver.wait_for(lambda spans: any(s.name == "ModelInfer" and not s.parent_span_id for s in spans))
    assert any(s.name == "ModelInfer" and not s.parent_span_id for s in spans)


def test_tracing_stays_off_unless_asked(tmp_path: Path) -> None:
    before = tracing.tracer  # the module's server has it on
    settings = Settings(model_repository=tmp_path)
    assert edge_tracing.start(settings, {"OTEL_TRACES_EXPORTER": "otlp"}) is None
    on = Settings(model_repository=tmp_path, trace=True)
    assert edge_tracing.start(on, {"OTEL_TRACES_EXPORTER": "none"}) is None
    assert edge_tracing.start(on, {"OTEL_SDK_DISABLED": "true"}) is None
    assert tracing.tracer is before


def test_an_unknown_exporter_or_protocol_is_refused_at_start(tmp_path: Path) -> None:
    before = tracing.tracer
    on = Settings(model_repository=tmp_path, trace=True)
    with pytest.raises(ConfigError, match="zipkin"):
        edge_tracing.start(on, {"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="http/json"):
        edge_tracing.start(on, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert tracing.tracer is before


def rest_json(url: str, document: object | None = None) -> tuple[int, dict[str, object]]:
    data = None if document is None else json.dumps(document).encode()
    call = urllib.request.Request(
        url, data, {"Content-Type": "application/json"}, method="GET" if data is None else "POST"
    )
    try:
        with urllib.request.urlopen(call, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_trace_settings_choose_which_requests_trace_over_both_doors(server: ServerThread, receiver: Receiver) -> None:
    status, settings = rest_json(f"{server.rest_url}/v2/trace/setting")
    assert status == 200
    assert settings == {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "-1",
                        "trace_mode": "opentelemetry"}  # fmt: skip
    (first, _, first_parent), (second, _, second_parent), (third, _, third_parent) = (caller(300 + i) for i in range(3))
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        once = pb.TraceSettingRequest(
            model_name="classifier", settings={"trace_count": pb.TraceSettingRequest.SettingValue(value=["1"])}
        )
        assert list(stub.TraceSetting(once, timeout=10).settings["trace_count"].value) == ["1"]
        try:
            for traceparent in (first_parent, second_parent):
                stub.ModelInfer(infer_request("classifier", images(1, 3)), metadata=(("traceparent", traceparent),))
            status, used = rest_json(f"{server.rest_url}/v2/models/classifier/trace/setting")
            assert (status, used["trace_count"]) == (200, "0")
            assert rest_json(f"{server.rest_url}/v2/trace/setting")[1]["trace_count"] == "-1"  # the global one
        finally:
            status, reset = rest_json(f"{server.rest_url}/v2/models/classifier/trace/setting", {"trace_count": None})
        assert (status, reset["trace_count"]) == (200, "-1")  # the model follows the global setting again
        stub.ModelInfer(infer_request("classifier", images(1, 3)), metadata=(("traceparent", third_parent),))
    spans = receiver.wait_for(lambda spans: request_span(spans, third) is not None)
    assert request_span(spans, first) is not None
    assert request_span(spans, second) is None  # trace_count 1: the first request took it


def test_trace_settings_refuse_what_they_cannot_do(server: ServerThread) -> None:
    model_url = f"{server.rest_url}/v2/models/classifier/trace/setting"
    assert rest_json(model_url, {"trace_level": "VERBOSE"})[0] == 400
    assert rest_json(model_url, {"trace_rate": "0"})[0] == 400
    assert rest_json(model_url, {"trace_file": "/tmp/trace.json"})[0] == 501  # as setting log_file
    assert rest_json(f"{server.rest_url}/v2/models/nonexistent/trace/setting")[0] == 404
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        bad = pb.TraceSettingRequest(settings={"log_frequency": pb.TraceSettingRequest.SettingValue(value=["10"])})
        with pytest.raises(grpc.RpcError) as refused:
            stub.TraceSetting(bad, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert rest_json(model_url)[1]["trace_level"] == ["TIMESTAMPS"]  # nothing changed


def test_trace_rate_count_and_levels_per_model() -> None:
    traces = TraceSettings(on=True)
    assert [traces.sample("a") for _ in range(3)] == [True] * 3
    traces.update({"trace_rate": ["3"]})
    assert [traces.sample("a") for _ in range(6)] == [True, False, False] * 2
    traces.update({"trace_level": ["OFF"]}, model="b")
    assert not traces.sample("b") and traces.sample("c")
    traces.update({"trace_count": ["2"], "trace_rate": ["1"], "trace_level": ["TENSORS"]}, model="b")
    assert [traces.sample("b") for _ in range(3)] == [True, True, False]
    assert traces.current("b")["trace_count"] == ["0"] and traces.level("b") == "TENSORS"
    traces.update({"trace_count": [], "trace_level": [], "trace_rate": []}, model="b")
    assert traces.current("b") == traces.current()
    traces.update({"trace_rate": []})
    assert traces.current()["trace_rate"] == ["1"]
    with pytest.raises(InvalidInput):
        traces.update({"trace_count": ["-2"]})
    with pytest.raises(InvalidInput):
        traces.update({"trace_rate": ["1", "2"]})
    with pytest.raises(FailedPrecondition):
        TraceSettings(on=False).update({"trace_level": ["TIMESTAMPS"]})


def test_the_grpc_protocol_and_the_console_exporter_start_and_stop(tmp_path: Path) -> None:
    before = tracing.tracer  # the module's server's: put back, as this test turns tracing on and off process-wide
    on = Settings(model_repository=tmp_path, trace=True)
    env = {"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "x"}
    try:
        provider = edge_tracing.start(on, env)
        assert provider is not None and tracing.tracer is not None
        assert provider.resource.attributes["service.name"] == "x"
        asyncio.run(edge_tracing.stop(provider))  # nothing recorded: nothing to send, so no collector is needed
        assert tracing.tracer is None
    finally:
        tracing.tracer = before


def test_a_rest_request_refused_by_the_door_is_an_error_span(server: ServerThread, receiver: Receiver) -> None:
    trace_id, _, traceparent = caller(400)
    headers = {"Content-Type": "application/json", "traceparent": traceparent}
    post = urllib.request.Request(f"{server.rest_url}/v2/models/classifier/infer", b"{not json", headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 400
    spans = receiver.wait_for(lambda spans: request_span(spans, trace_id) is not None)
    request = request_span(spans, trace_id)
    assert request is not None and request.error
    assert request.attributes["cnnserve.outcome"] == "invalid_argument"


def test_a_sampled_request_is_the_exemplar_of_its_latency_buckets(server: ServerThread, receiver: Receiver) -> None:
    """Scraped as OpenMetrics (Prometheus's Accept), the request- and queue-duration buckets a sampled request fell
    in name its trace; an unsampled one leaves none; the classic text format carries no exemplars."""
    trace_id, _, traceparent = caller(7)
    unsampled_id, _, unsampled = caller(8)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(infer_request("classifier", images(1, 8)), metadata=(("traceparent", unsampled[:-2] + "00"),),
                        timeout=10)  # fmt: skip
        stub.ModelInfer(infer_request("classifier", images(1, 7)), metadata=(("traceparent", traceparent),), timeout=10)

    accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    scrape = urllib.request.Request(f"{server.http_url}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(scrape, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        text = reply.read().decode()
    exemplars: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.exemplar is not None and sample.labels.get("model") == "classifier":
                exemplars.setdefault(family.name, set()).add(sample.exemplar.labels["trace_id"])
    assert trace_id in exemplars["cnnserve_request_duration_seconds"]
    assert trace_id in exemplars["cnnserve_queue_duration_seconds"]
    assert unsampled_id not in set().union(*exemplars.values())

    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        assert "trace_id" not in reply.read().decode()
