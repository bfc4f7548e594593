"""The KServe v2 REST API with the Triton extensions tritonclient.http calls: each handler converts the request,
calls the data plane (dataplane.py) the gRPC servicer calls, and converts the answer back. Each route names its
operation (operations.py), which the door's auth reads.

Errors: a ServiceError is answered {"error": message} with its status's HTTP code (service/errors.py); anything
else is logged with its traceback and answered 500 with a generic message, as on gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from aiohttp import web
from opentelemetry.trace import Span

from cnnserve.api import grpc_service_pb2 as pb
from cnnserve.contracts.wire import pack_bytes
from cnnserve.service import tracing
from cnnserve.service.errors import InvalidInput
from cnnserve.service.kinds.base import INFER, PNG_PARAMETERS, Kind, ParameterValue, first_png
from cnnserve.service.protocol import rest_codec
from cnnserve.service.protocol.dataplane import DataPlane
from cnnserve.service.protocol.operations import Operation
from cnnserve.service.protocol.rest_replies import JSON, Handler, json_reply, message_dict
from cnnserve.service.scheduling.memory import Reservation
from cnnserve.service.settings import Settings
from cnnserve.service.types import ModelSpec

logger = logging.getLogger(__name__)

GET_ONLY = frozenset({"ready", "config", "stats"})
"""The fixed GET paths below /v2/models/{model}: POST .../{operation} names no kind operation by them."""
IMAGE_TYPES = ("image/png", "image/jpeg")


class Route(NamedTuple):
    """One REST route and the operation it performs: the door's auth asks operations.py about that operation."""

    method: str
    path: str
    handler: Handler
    operation: Operation


class RestApi:
    def __init__(self, settings: Settings, plane: DataPlane) -> None:
        self._plane = plane
        self.max_json_bytes = settings.max_rest_json_bytes
        self._body_timeout_s = settings.rest_timeout_s

    async def _read(self, request: web.Request, held: Reservation) -> bytes:
        """The whole body, bounded by the app's client_max_size (413), by rest_timeout_s (408): a client that
        trickles its body cannot hold a connection and a growing buffer for ever, and by the byte budget, which
        `held` takes the declared length from before a byte is read (429 when it is short)."""
        if request.content_length:
            held.hold_at_least(request.content_length)
        try:
            async with asyncio.timeout(self._body_timeout_s):
                body = await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                reason=f"request body not received within {self._body_timeout_s:g} s"
            ) from None
        held.hold_at_least(len(body))  # a chunked body says its length only once read
        return body

    def routes(self) -> list[Route]:
        """Fixed paths before /v2/models/{model}, so that 'stats' is not taken for a model's name."""
        op = Operation
        model, version = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
        return [
            Route("GET", "/v2/health/live", self.live, op.LIVE),
            Route("GET", "/v2/health/ready", self.ready, op.READY),
            Route("GET", "/v2", self.server_metadata, op.SERVER_METADATA),
            Route("GET", "/v2/models/stats", self.stats, op.MODEL_STATISTICS),
            Route("POST", "/v2/repository/index", self.repository_index, op.REPOSITORY_INDEX),
            Route("POST", "/v2/repository/models/{model}/load", self.load, op.LOAD),
            Route("POST", "/v2/repository/models/{model}/unload", self.unload, op.UNLOAD),
            Route("GET", "/v2/logging", self.log_settings, op.LOG_SETTINGS),
            Route("POST", "/v2/logging", self.log_settings, op.LOG_SETTINGS),
            *[Route(method, path, self.trace_setting, op.TRACE)
              for path in ("/v2/trace/setting", model + "/trace/setting") for method in ("GET", "POST")],
            *[Route(method, base + path, handler, op.SHARED_MEMORY)
              for base, status, register, unregister in (
                  ("/v2/systemsharedmemory", self.shm_status, self.shm_register, self.shm_unregister),
                  ("/v2/cudasharedmemory", self.cuda_shm_status, self.cuda_shm_register, self.cuda_shm_unregister))
              for method, path, handler in (
                  ("GET", "/status", status), ("GET", "/region/{region}/status", status),
                  ("POST", "/region/{region}/register", register),
                  ("POST", "/unregister", unregister), ("POST", "/region/{region}/unregister", unregister))],
            *[route for base in (model, version) for route in (
                Route("GET", base, self.model_metadata, op.MODEL_METADATA),
                Route("GET", base + "/ready", self.model_ready, op.MODEL_READY),
                Route("GET", base + "/config", self.model_config, op.MODEL_CONFIG),
                Route("GET", base + "/stats", self.stats, op.MODEL_STATISTICS),
                Route("POST", base + "/infer", self.infer, op.INFER),
            )],
            # Last, so that fixed paths win: operations and files a model's kind adds (kinds/base.py).
            *[route for base in (model, version) for route in (
                Route("POST", base + "/{operation}", self.infer, op.MODEL_OPERATION),
                Route("GET", base + "/{operation}/{file}", self.model_file, op.MODEL_FILE),
            )],
        ]  # fmt: skip

    # -- health and metadata -------------------------------------------------------------------------------

    # The status says it (200 or 503, what tritonclient reads); the body says it too, as KServe's servers answer and
    # its InferenceRESTClient reads: {"live": ...}, {"ready": ...}, {"name": ..., "ready": ...}.

    async def live(self, request: web.Request) -> web.Response:
        live = self._plane.live()
        return json_reply({"live": live}, 200 if live else 503)

    async def ready(self, request: web.Request) -> web.Response:
        ready = self._plane.ready()
        return json_reply({"ready": ready}, 200 if ready else 503)

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        ready = self._plane.model_ready(name, version)
        return json_reply({"name": name, "ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_reply(message_dict(self._plane.server_metadata()))

    async def model_metadata(self, request: web.Request) -> web.Response:
        return json_reply(message_dict(self._plane.model_metadata(*_model(request))))

    async def model_config(self, request: web.Request) -> web.Response:
        return json_reply(message_dict(self._plane.model_config(*_model(request)).config))

    async def stats(self, request: web.Request) -> web.Response:
        name, version = request.match_info.get("model", ""), request.match_info.get("version", "")
        return json_reply(message_dict(self._plane.model_statistics(name, version)))

    # -- repository -------------------------------------------------------------------------------------------

    async def repository_index(self, request: web.Request) -> web.Response:
        with self._plane.reservation() as held:
            body = await self._read(request, held)
        options = rest_codec.loads(body, "request body") if body.strip() else {}
        ready_only = isinstance(options, dict) and options.get("ready") is True
        index = await self._plane.repository_index(ready_only=ready_only)
        return json_reply([
            {"name": e.name, **({"version": e.version} if e.version else {}), "state": e.state, "reason": e.reason}
            for e in index.models
        ])  # fmt: skip

    async def load(self, request: web.Request) -> web.Response:
        """Body (optional): {"parameters": {"config": "<config.json document>"}}, as tritonclient.http sends it."""
        with self._plane.reservation() as held:
            body = await self._read(request, held)
        self._check_json_size(len(body))
        document = rest_codec.loads(body, "request body") if body.strip() else {}
        parameters = document.get("parameters", {}) if isinstance(document, dict) else None
        if not isinstance(parameters, dict):
            raise InvalidInput('request body must be a JSON object, with "parameters" an object when present')
        await self._plane.load(request.match_info["model"], parameters)
        return json_reply({})

    async def unload(self, request: web.Request) -> web.Response:
        await self._plane.unload(request.match_info["model"])
        return json_reply({})

    async def _settings_body(self, request: web.Request, what: str) -> dict[str, object]:
        """A settings POST's body: a JSON object (empty body: no change), read and sized as every body is."""
        with self._plane.reservation() as held:
            body = await self._read(request, held)
        self._check_json_size(len(body))
        document = rest_codec.loads(body, "request body") if body.strip() else {}
        if not isinstance(document, dict):
            raise InvalidInput(f"request body must be a JSON object of {what} settings")
        return document

    # -- logging ----------------------------------------------------------------------------------------------

    async def log_settings(self, request: web.Request) -> web.Response:
        """GET: the settings; POST: {setting: value, ...} changed (null leaves one as it is), then the settings.
        Triton's JSON: each setting's value itself, not the protobuf's oneof."""
        changes: dict[str, object] = await self._settings_body(request, "log") if request.method == "POST" else {}
        settings = self._plane.log_settings(changes).settings
        return json_reply({name: _setting_value(value) for name, value in settings.items()})

    # -- traces -------------------------------------------------------------------------------------------------

    async def trace_setting(self, request: web.Request) -> web.Response:
        """GET: the trace settings (global, or the model's); POST: {setting: value, ...} changed, then the settings.
        Triton's JSON: a value is a string or a list of strings, null or [] clears it; trace_level answers a list."""
        changes: dict[str, list[str]] = {}
        if request.method == "POST":
            document = await self._settings_body(request, "trace")
            changes = {name: _strings(name, value) for name, value in document.items()}
        settings = self._plane.trace_setting(request.match_info.get("model"), changes)
        return json_reply({name: values if name == "trace_level" else values[0] for name, values in settings.items()})

    # -- shared memory: Triton's system shared memory extension (the CUDA one is refused) ----------------------------

    async def shm_status(self, request: web.Request) -> web.Response:
        """A JSON list of regions, as Triton's: [{"name", "key", "offset", "byte_size"}], by name."""
        status = self._plane.system_shared_memory_status(request.match_info.get("region", ""))
        return json_reply([message_dict(region) for _, region in sorted(status.regions.items())])

    async def shm_register(self, request: web.Request) -> web.Response:
        """Body {"key": "/name", "offset": bytes, "byte_size": bytes}."""
        self._plane.require_client_shm()  # "disabled" before anything about the body, as Triton answers
        self._check_json_size(request.content_length or 0)
        with self._plane.reservation() as held:
            body = await self._read(request, held)
        key, offset, byte_size = rest_codec.parse_register(rest_codec.loads(body, "request body") if body else {})
        self._plane.register_system_shared_memory(request.match_info["region"], key, offset, byte_size)
        return json_reply({})

    async def shm_unregister(self, request: web.Request) -> web.Response:
        self._plane.unregister_system_shared_memory(request.match_info.get("region", ""))
        return json_reply({})

    async def cuda_shm_status(self, request: web.Request) -> web.Response:
        return json_reply(message_dict(self._plane.cuda_shared_memory_status(request.match_info.get("region", ""))))

    async def cuda_shm_register(self, request: web.Request) -> web.Response:
        self._plane.register_cuda_shared_memory(request.match_info["region"])
        return json_reply({})

    async def cuda_shm_unregister(self, request: web.Request) -> web.Response:
        self._plane.unregister_cuda_shared_memory(request.match_info.get("region", ""))
        return json_reply({})

    # -- inference --------------------------------------------------------------------------------------------

    async def infer(self, request: web.Request, span: Span | None = None, decided: bool = False) -> web.Response:
        """POST .../infer, or .../{operation} for an operation the model's kind adds (an infer with the parameters
        it implies). A JSON or binary tensor body is a KServe v2 request; a PNG/JPEG body is one request of one file,
        answered as the kind says (kinds/base.py). With Accept: image/png, the request's PNG file as the body.
        `span`: the request's trace span (_traced_infer opens it when tracing is on and the request is sampled)."""
        if not decided and tracing.tracer is not None:
            return await self._traced_infer(request)
        name, version = _model(request)
        operation = request.match_info.get("operation", INFER)
        if operation in GET_ONLY:  # a model's own GET path, posted to: 405 as before kinds had operations
            raise web.HTTPMethodNotAllowed("POST", ["GET", "HEAD"])
        spec, kind = self._plane.model_kind(name, version)
        implied = kind.implied_parameters(operation)
        if request.content_type not in IMAGE_TYPES and rest_codec.HEADER_LENGTH not in request.headers:
            self._check_json_size(request.content_length or 0)  # all JSON: refused before a byte of it is read
        with self._plane.reservation() as held:
            body = await self._read(request, held)
            wants_png = "image/png" in request.headers.get("Accept", "")
            if request.content_type in IMAGE_TYPES:
                return await self._infer_file(request, spec, kind, operation, body, wants_png, held, span)
            return await self._infer_tensors(request, name, version, implied, body, wants_png, held, span)

    async def _traced_infer(self, request: web.Request) -> web.Response:
        """An infer inside its request span, a child of the caller's when its headers carry a `traceparent`."""
        if not self._plane.traces.sample(request.match_info["model"]):
            return await self.infer(request, None, decided=True)
        resource = request.match_info.route.resource
        route = request.path if resource is None else resource.canonical  # the template: one name for every model
        carrier = {key: request.headers[key] for key in tracing.CARRIER_KEYS if key in request.headers}
        attributes = {"http.request.method": "POST", "http.route": route}
        with tracing.request(f"POST {route}", carrier, attributes) as span:
            return await self.infer(request, span, decided=True)

    async def _infer_tensors(self, request: web.Request, name: str, version: str,
                             implied: Mapping[str, ParameterValue], body: bytes, wants_png: bool, held: Reservation,
                             span: Span | None) -> web.Response:  # fmt: skip
        """A KServe v2 JSON or binary-extension body."""
        header_length = request.headers.get(rest_codec.HEADER_LENGTH)
        self._check_json_size(len(body) if header_length is None else _int_or(header_length, len(body)))
        parsed = rest_codec.parse_infer(body, header_length, name, version, self._plane.limits)
        parameters = parsed.request.parameters
        implied = {**implied, **(PNG_PARAMETERS if wants_png else {})}
        absent = {key: value for key, value in implied.items() if key not in parameters}  # the request's own win
        rest_codec.set_parameters(parameters, absent, "request")
        result = await self._plane.infer(parsed.request, _deadline(parsed.parameters), parsed.raw_inputs, held, span)
        if wants_png:
            png = first_png(result.tensors, result.png)
            if png is not None:
                return web.Response(body=png, content_type="image/png")
        if span is not None:
            span.add_event("answered")  # the outputs are ready; from here to the span's end, the reply's encoding
        body_out, header_size = rest_codec.encode_infer(parsed, result.model_name, result.model_version, result.tensors)
        if header_size is None:
            return web.Response(body=body_out, content_type=JSON)
        reply = web.Response(body=body_out, content_type="application/octet-stream")
        reply.headers[rest_codec.HEADER_LENGTH] = str(header_size)
        return reply

    def _check_json_size(self, json_part: int) -> None:
        """413 past max_rest_json_bytes. Parsing runs on the event loop (orjson holds the GIL, so a thread would not
        free it), about 5 ms a MiB here: the bound is also how long one request may hold every other caller."""
        if json_part > self.max_json_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.max_json_bytes, actual_size=json_part,
                text=f"the request's JSON is {json_part} bytes, more than max_rest_json_bytes {self.max_json_bytes}; "
                     "send tensors in binary (the binary tensor extension, as tritonclient.http does) or as files",
            )  # fmt: skip

    async def _infer_file(self, request: web.Request, spec: ModelSpec, kind: Kind, operation: str, body: bytes,
                          wants_png: bool, held: Reservation, span: Span | None) -> web.Response:  # fmt: skip
        """One PNG/JPEG file for the model's image input; the kind names the outputs and parameters, and its answer."""
        if spec.image_input is None:
            raise InvalidInput(f"model {spec.name!r} takes no image input; send a JSON or binary tensor request")
        query = request.query
        asked = kind.file_request(operation, query, wants_png)
        message = pb.ModelInferRequest(model_name=spec.name, model_version=request.match_info.get("version", ""))
        message.inputs.add(name=spec.image_input.name, datatype="BYTES", shape=[1])  # one file
        for output in asked.outputs:
            message.outputs.add(name=output)
        rest_codec.set_parameters(message.parameters, asked.parameters, "request")
        result = await self._plane.infer(message, None, [pack_bytes((body,))], held, span)
        answer = kind.file_answer(operation, result.tensors, query, wants_png)
        if isinstance(answer, bytes):
            return web.Response(body=answer, content_type="image/png")
        if answer is None:
            reply, _ = rest_codec.encode_infer(rest_codec.RestRequest(message, []), result.model_name,
                                               result.model_version, result.tensors)  # fmt: skip
            return web.Response(body=reply, content_type=JSON)
        return json_reply({"model_name": result.model_name, "model_version": result.model_version, **answer})

    async def model_file(self, request: web.Request) -> web.Response:
        """GET .../{operation}/{file}: a file the model's kind serves beside it, read in a thread."""
        name, version = _model(request)
        body, content_type = await self._plane.model_file(
            name, version, request.match_info["operation"], request.match_info["file"]
        )
        return web.Response(body=body, content_type=content_type)


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")


def _setting_value(value: pb.LogSettingsResponse.SettingValue) -> object:
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _int_or(text: str, fallback: int) -> int:
    try:
        return int(text)
    except ValueError:
        return fallback


def _strings(name: str, value: object) -> list[str]:
    """A trace setting's JSON value as the protocol's list of strings (null: [], which clears it)."""
    if value is None:
        return []
    if isinstance(value, str | int) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise InvalidInput(f"trace setting {name!r}: expected a string or a list of strings, got {value!r}")


def _deadline(parameters: dict[str, Any]) -> float | None:
    """Triton's `timeout` request parameter, in microseconds (tritonclient.http's infer(timeout=...))."""
    timeout_us = parameters.get("timeout")
    if isinstance(timeout_us, int) and not isinstance(timeout_us, bool) and timeout_us > 0:
        return time.monotonic() + timeout_us / 1e6
    return None
